"""The privacy audit log: who re-identified what, when and why; key rotations; retention.

One JSON object per line (``privacy.audit_log``, mode 600)::

    {"ts": "2026-11-25T21:04:05Z", "event": "reveal", "user": "alice", "uid": 1000,
     "host": "soc-1", "pseudonym": "241.18.7.201", "reason": "incident 2026-117",
     "outcome": "found", "method": "search", "key_id": "k3f9a0c1d2e", "prev": "<sha256>"}

Events: ``reveal`` (every use of ``sentinel privacy reveal``, found or not; the clear value
is never written here, so the log is not itself a re-identification table), ``keygen``,
``rotate``, ``retention`` (what a retention run deleted, counts only).

Tamper evidence: ``prev`` is the SHA-256 of the previous line, so editing or deleting a
line in the middle breaks the chain (``verify``). Retention removes the oldest lines and
appends a ``retention`` event whose ``anchor`` is the ``prev`` of the new first line, so
that a shortened log still verifies and says how it was shortened. Like any hash chain kept
in one place, it cannot show that lines were cut off the end; ship the log to a separate
system (syslog, Elasticsearch) where that matters.

Appends hold an exclusive ``flock`` on the file; a reveal whose audit entry cannot be
written is refused (fail closed).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError
from sentinel.privacy.keys import iso, parse_time

GENESIS = "0" * 64


class AuditError(SentinelError):
    """The audit log cannot be written or read."""


def _digest(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def actor() -> dict[str, Any]:
    """Who is acting: login name (and the sudo caller), uid, host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    who: dict[str, Any] = {"user": user, "uid": os.getuid(), "host": socket.gethostname()}
    if os.environ.get("SUDO_USER"):
        who["sudo_user"] = os.environ["SUDO_USER"]
    return who


class AuditLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self, mode: str = "a+b"):  # type: ignore[no-untyped-def]
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as exc:
                raise AuditError(f"cannot open the audit log {self.path}: {exc.strerror}") from None
            f = os.fdopen(fd, mode)
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()  # retention replaced the file while we waited: open the new one
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def append(self, event: str, now: float | None = None, **fields: Any) -> dict[str, Any]:
        """Write one entry (``ts``, ``event``, the actor, ``fields``, ``prev``); fsync'd."""
        entry: dict[str, Any] = {"ts": iso(time.time() if now is None else now), "event": event}
        entry.update(actor())
        entry.update(fields)
        try:
            with self._locked() as f:
                entry["prev"] = _last_digest(f)
                f.seek(0, os.SEEK_END)
                f.write(json.dumps(entry, sort_keys=False).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise AuditError(f"cannot write the audit log {self.path}: {exc.strerror}") from None
        return entry

    def entries(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise AuditError(f"cannot read the audit log {self.path}: {exc.strerror}") from None
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def verify(self) -> list[str]:
        """Problems with the chain (empty when it is intact)."""
        try:
            lines = [ln for ln in self.path.read_bytes().splitlines() if ln.strip()]
        except FileNotFoundError:
            return []
        problems: list[str] = []
        entries = []
        for n, line in enumerate(lines, 1):
            try:
                entries.append(json.loads(line))
            except ValueError:
                problems.append(f"line {n}: not JSON")
                entries.append({})
        anchors = [e.get("anchor") for e in entries if e.get("event") == "retention"]
        first_prev = entries[0].get("prev") if entries else None
        if entries and first_prev != GENESIS and first_prev not in anchors:
            problems.append("line 1: the log does not start where it began or was last expired")
        for n in range(1, len(lines)):
            if entries[n].get("prev") != _digest(lines[n - 1]):
                problems.append(f"line {n + 1}: chain broken (line {n} was changed or removed)")
        return problems

    def expire(self, before: float, dry_run: bool = False, now: float | None = None) -> int:
        """Remove the entries older than ``before`` (the oldest run of them: the chain stays
        contiguous) and record it; how many were (or would be) removed."""
        with self._locked("r+b") as f:
            f.seek(0)
            lines = [ln for ln in f.read().splitlines(keepends=True) if ln.strip()]
            n = 0
            for line in lines:
                try:
                    ts = parse_time(json.loads(line)["ts"])
                except (ValueError, KeyError, TypeError, SentinelError):
                    break  # an unreadable line is never deleted
                if ts >= before:
                    break
                n += 1
            if n == 0 or dry_run:
                return n
            kept = lines[n:]
            anchor = json.loads(kept[0]).get("prev") if kept else _digest(lines[-1])
            entry: dict[str, Any] = {
                "ts": iso(time.time() if now is None else now),
                "event": "retention",
                **actor(),
                "data_class": "audit",
                "removed": n,
                "removed_before": iso(before),
                "anchor": anchor,
                "prev": _digest(kept[-1]) if kept else anchor,
            }
            data = b"".join(kept) + json.dumps(entry).encode() + b"\n"
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
            return n


def _last_digest(f: Any) -> str:
    """SHA-256 of the last line of an open file, or the genesis value when it is empty."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return GENESIS
    block = 4096
    pos = end
    data = b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
        body = data.rstrip(b"\n")
        cut = body.rfind(b"\n")
        if cut >= 0:
            return _digest(body[cut + 1 :])
    return _digest(data)
