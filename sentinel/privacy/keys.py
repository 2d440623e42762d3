"""Pseudonymization keys: where they come from, how they rotate, and what is derived from them.

A key is 32 random bytes. It comes from one of:

- a **key file** written by ``sentinel privacy keygen FILE``: one JSON object
  ``{"sentinel_privacy_key": 1, "id", "created", "valid_from", "secret"}`` (``secret`` in
  base64). A file holding only a base64 or hex secret (``openssl rand -base64 32``) works too;
- a **key ring**, a directory of such files (``sentinel privacy keygen DIR --ring``). The key
  in force at time T is the one with the latest ``valid_from`` not after T (``at``: the first
  key also covers the time before it); rotation adds a key (``sentinel privacy rotate DIR``,
  at the start of an analysis when the config's ``rotation`` period has passed, or ahead of
  the boundary by a running sensor, ``ensure_next``), never back-dated, and old keys stay so
  that their pseudonyms can still be revealed, until the data-protection officer moves them
  offline or destroys them (crypto-shredding). Times are kept in whole seconds (UTC);
- an **environment variable** (``env:NAME`` on the command line, ``key_env`` in the config)
  holding a base64 or hex secret: no rotation.

Key files must not be readable by other users (like ssh keys): a file with any permission
bit for "others" is refused. The secret never leaves this module except into HMAC and
AES-GCM: ``repr`` hides it, and no output, log line or error message carries it. Each use
gets its own derived key (HMAC-SHA256 of the secret with a fixed label), so that the address
pseudonyms, identifier pseudonyms and the re-identification table never share key material.
A key's ``id`` (``k`` + 10 hex digits) is derived the same way: it names a key in outputs
and the audit log without revealing anything about it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from sentinel.errors import SentinelError

KEY_BYTES = 32
MIN_KEY_BYTES = 16
FORMAT = 1
ENV_PREFIX = "env:"


class PrivacyKeyError(SentinelError):
    """A key that cannot be used (missing, unreadable, too short, readable by others)."""


def _derive(secret: bytes, label: str) -> bytes:
    return hmac.digest(secret, b"sentinel/v1/" + label.encode(), "sha256")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """An ISO-8601 time (``2026-01-31``, ``2026-01-31T12:00:00Z``) as epoch seconds (UTC)."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SentinelError(f"not an ISO-8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class Key:
    """One pseudonymization key. ``repr`` never shows the secret."""

    secret: bytes = field(repr=False)
    valid_from: float = 0.0
    created: float = 0.0
    path: str | None = None

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise PrivacyKeyError(f"key too short: {len(self.secret)} bytes, at least 16 needed")

    @cached_property
    def id(self) -> str:
        return "k" + _derive(self.secret, "key-id")[:5].hex()

    @cached_property
    def address_key(self) -> bytes:
        return _derive(self.secret, "address")

    @cached_property
    def identifier_key(self) -> bytes:
        return _derive(self.secret, "identifier")

    @cached_property
    def table_key(self) -> bytes:
        return _derive(self.secret, "reveal-table")

    @cached_property
    def ipv6_global_id(self) -> bytes:
        """The 40-bit Global ID of this key's ULA prefix (RFC 4193 section 3.2)."""
        return _derive(self.secret, "ipv6-prefix")[:5]

    @classmethod
    def generate(cls, valid_from: float | None = None) -> Key:
        now = time.time()
        return cls(secrets.token_bytes(KEY_BYTES), now if valid_from is None else valid_from, now)

    def to_json(self) -> bytes:
        doc = {
            "sentinel_privacy_key": FORMAT,
            "id": self.id,
            "created": iso(self.created),
            "valid_from": iso(self.valid_from),
            "secret": base64.b64encode(self.secret).decode(),
        }
        return json.dumps(doc, indent=1).encode() + b"\n"


def decode_secret(text: str) -> bytes:
    """A secret given as hex or base64 (standard or URL-safe) text."""
    text = text.strip()
    if len(text) >= 2 * MIN_KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    std = text.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise PrivacyKeyError("the key is neither hex nor base64 text") from None
    if len(raw) < MIN_KEY_BYTES:
        raise PrivacyKeyError(f"key too short: {len(raw)} bytes, at least 16 needed")
    return raw


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & stat.S_IRWXO:
        raise PrivacyKeyError(
            f"key file {path} is accessible by other users (mode {stat.S_IMODE(mode):o}): "
            f"chmod 600 {path}"
        )


def read_key_file(path: str | os.PathLike[str]) -> Key:
    p = Path(path)
    try:
        _check_private(p)
        data = p.read_bytes()
    except FileNotFoundError:
        raise PrivacyKeyError(f"key file not found: {p}") from None
    except OSError as exc:
        raise PrivacyKeyError(f"cannot read key file {p}: {exc.strerror}") from None
    text = data.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            if doc.get("sentinel_privacy_key") != FORMAT:
                raise PrivacyKeyError(f"{p}: not a Sentinel privacy key (format {FORMAT})")
            key = Key(
                base64.b64decode(doc["secret"], validate=True),
                parse_time(doc["valid_from"]),
                parse_time(doc.get("created") or doc["valid_from"]),
                str(p),
            )
        except (ValueError, KeyError, TypeError, binascii.Error, SentinelError) as exc:
            if isinstance(exc, PrivacyKeyError):
                raise
            raise PrivacyKeyError(f"{p}: not a valid key file") from None
        if doc.get("id") not in (None, key.id):
            raise PrivacyKeyError(f"{p}: the key does not match its id (damaged or edited file)")
        return key
    try:
        return Key(decode_secret(text), 0.0, 0.0, str(p))
    except PrivacyKeyError as exc:
        raise PrivacyKeyError(f"{p}: {exc.message}") from None


def write_key_file(path: str | os.PathLike[str], key: Key) -> Path:
    """Create ``path`` (never overwrite) with mode 600 and the key in it."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PrivacyKeyError(f"{p} exists: a key is never overwritten") from None
    except OSError as exc:
        raise PrivacyKeyError(f"cannot create key file {p}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key.to_json())
        f.flush()
        os.fsync(f.fileno())
    return p


@dataclass
class KeyRing:
    """Keys by validity; a single key file or an environment key is a ring of one."""

    keys: list[Key]
    directory: Path | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.keys.sort(key=lambda k: (k.valid_from, k.created, k.id))

    def active(self, now: float | None = None) -> Key:
        """The key in force at ``now`` (wall-clock time by default)."""
        now = time.time() if now is None else now
        valid = [k for k in self.keys if k.valid_from <= now]
        if not valid:
            if not self.keys:
                raise PrivacyKeyError(
                    f"no key in {self.source}: create one with `sentinel privacy keygen "
                    f"{self.source} --ring`"
                )
            raise PrivacyKeyError(f"no key in {self.source} is valid yet at {iso(now)}")
        return valid[-1]

    def at(self, ts: float) -> Key:
        """The key that applies to a record of time ``ts`` (packet time offline): the one in
        force then, or the ring's first key for a time before every key (so that a capture
        older than the ring can be analysed; ``reveal --at`` applies the same rule)."""
        if not self.keys:
            raise PrivacyKeyError(f"no key in {self.source}")
        valid = [k for k in self.keys if k.valid_from <= ts]
        return valid[-1] if valid else self.keys[0]

    def until(self, key: Key) -> float:
        """When ``key`` stops applying: the next key's ``valid_from`` (inf for the last)."""
        later = [k.valid_from for k in self.keys if k.valid_from > key.valid_from]
        return min(later) if later else float("inf")

    def keys_until(self, ts: float) -> list[Key]:
        """The keys a pseudonym in a record of time ``ts`` can be under, newest first: every
        key in force at or before ``ts`` (a flow keeps the key of its start), else the
        first key."""
        valid = [k for k in self.keys if k.valid_from <= ts]
        return list(reversed(valid)) if valid else self.keys[:1]

    def reload(self) -> list[Key]:
        """Read key files added to the ring directory since it was loaded (``sentinel privacy
        rotate`` from cron, another sensor); the new keys. Unreadable files are skipped
        here (they were refused when the ring was loaded)."""
        if self.directory is None:
            return []
        known = {k.path for k in self.keys}
        added = []
        for path in sorted(self.directory.glob("*.key")):
            if str(path) in known:
                continue
            try:
                key = read_key_file(path)
            except PrivacyKeyError:
                continue  # half-written or bad: the next reload tries again
            if self.by_id(key.id) is None:
                added.append(key)
        if added:
            self.keys.extend(added)
            self.__post_init__()
        return added

    def ensure_next(self, period: float, now: float, lead: float) -> Key | None:
        """Rotation on a schedule: when the newest key's period ends within ``lead`` seconds
        of ``now``, add the next key, in force from the end of that period (never from
        before ``now``: a key is never back-dated, since records already written for that
        time used the previous key). The new key, or None when none was due."""
        if not self.keys:
            return self.add(now)
        newest = self.keys[-1]
        boundary = newest.valid_from + period
        if now < boundary - lead:
            return None
        return self.add(max(boundary, now))

    def by_id(self, key_id: str) -> Key | None:
        return next((k for k in self.keys if k.id == key_id), None)

    def add(self, valid_from: float | None = None) -> Key:
        """A new key in the ring directory, in force from ``valid_from`` (default now)."""
        if self.directory is None:
            raise PrivacyKeyError(f"{self.source} is not a key ring: rotation needs a directory")
        key = Key.generate(valid_from)
        stamp = datetime.fromtimestamp(key.valid_from, UTC).strftime("%Y%m%dT%H%M%SZ")
        path = write_key_file(self.directory / f"{stamp}-{key.id}.key", key)
        key = Key(key.secret, key.valid_from, key.created, str(path))
        self.keys.append(key)
        self.__post_init__()
        return key

    def rotate_if_due(self, period: float, now: float | None = None) -> Key | None:
        """Add a key when the active one has been in force for ``period`` seconds (or there
        is none); the new key, or None when none was due."""
        now = time.time() if now is None else now
        current = [k for k in self.keys if k.valid_from <= now]
        if current and now - current[-1].valid_from < period:
            return None
        return self.add(now)


def load_ring(spec: str, env: Mapping[str, str] | None = None) -> KeyRing:
    """``env:NAME``, a key file, or a key-ring directory."""
    env = os.environ if env is None else env
    if spec.startswith(ENV_PREFIX):
        name = spec[len(ENV_PREFIX) :]
        value = env.get(name)
        if not value:
            raise PrivacyKeyError(f"environment variable {name} is not set (it holds the key)")
        try:
            return KeyRing([Key(decode_secret(value))], None, spec)
        except PrivacyKeyError as exc:
            raise PrivacyKeyError(f"environment variable {name}: {exc.message}") from None
    path = Path(spec)
    if path.is_dir():
        keys = [read_key_file(p) for p in sorted(path.glob("*.key"))]
        return KeyRing(keys, path, str(path))
    return KeyRing([read_key_file(path)], None, str(path))
