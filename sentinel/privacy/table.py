"""The re-identification table: pseudonym -> clear value, encrypted with the key (optional).

Pseudonyms are one-way HMACs, so without this table ``sentinel privacy reveal`` can only find
an IPv4 address by trying every address of a network (``reveal --within``, or the declared
network a pseudonym is tagged with). Identifiers from the wire (FC 43/17 strings), IPv6
addresses and addresses outside the declared networks can only be revealed through the table.

It is the "additional information kept separately" of GDPR Art. 4(5): a SQLite file (mode
600), one row per (pseudonym, key, value) with the clear value sealed by AES-256-GCM under a
key derived from the pseudonymization key (``Key.table_key``); the pseudonym, key id and kind
are the associated data, so a row cannot be moved onto another pseudonym. Nothing in the
file can be read without the key. Rows carry first and last time seen (wall clock) so that
retention (data class ``reveal_table``) drops values no longer seen. Two values that share a
pseudonym (a collision) get two rows; ``reveal`` then shows both.

Rows are committed in batches of ``COMMIT_EVERY`` and at ``flush`` (the end of each run): a
sensor that crashes loses at most the last batch, which ``reveal --within`` can still find.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sentinel.errors import SentinelError
from sentinel.privacy.keys import Key

COMMIT_EVERY = 256
NONCE_BYTES = 12
SCHEMA = """
CREATE TABLE IF NOT EXISTS pseudonyms (
    pseudonym TEXT NOT NULL,
    key_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    tag BLOB NOT NULL,
    sealed BLOB NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (pseudonym, key_id, tag)
);
CREATE INDEX IF NOT EXISTS pseudonyms_last_seen ON pseudonyms (last_seen);
"""


def _aesgcm(key: bytes):  # type: ignore[no-untyped-def]
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - a declared dependency
        raise SentinelError(
            "the re-identification table needs the 'cryptography' package"
        ) from None
    return AESGCM(key)


@dataclass(frozen=True)
class Entry:
    pseudonym: str
    key_id: str
    kind: str
    sealed: bytes
    first_seen: float
    last_seen: float


class RevealTable:
    """One table file; ``add`` from the pseudonymizer, ``lookup``/``open_entry`` for reveal."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SentinelError(
                f"cannot open the re-identification table {self.path}: {exc}"
            ) from None
        self._pending = 0
        self._ciphers: dict[str, object] = {}

    def add(
        self, key: Key, kind: str, pseudonym: str, clear: str, now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        cipher = self._ciphers.get(key.id)
        if cipher is None:
            cipher = self._ciphers[key.id] = _aesgcm(key.table_key)
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = f"{pseudonym}|{key.id}|{kind}".encode()
        sealed = nonce + cipher.encrypt(nonce, clear.encode(), aad)  # type: ignore[attr-defined]
        tag = hmac.digest(key.table_key, b"row|" + clear.encode(), "sha256")[:16]
        self._db.execute(
            "INSERT INTO pseudonyms VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (pseudonym, key_id, tag) DO UPDATE SET last_seen = excluded.last_seen",
            (pseudonym, key.id, kind, tag, sealed, now, now),
        )
        self._pending += 1
        if self._pending >= COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._db.commit()
            self._pending = 0

    def lookup(self, pseudonym: str) -> list[Entry]:
        rows = self._db.execute(
            "SELECT pseudonym, key_id, kind, sealed, first_seen, last_seen FROM pseudonyms "
            "WHERE pseudonym = ? ORDER BY first_seen",
            (pseudonym,),
        ).fetchall()
        return [Entry(*row) for row in rows]

    @staticmethod
    def open_entry(entry: Entry, key: Key) -> str:
        """The clear value of ``entry`` (``key`` must be the key with ``entry.key_id``)."""
        nonce, body = entry.sealed[:NONCE_BYTES], entry.sealed[NONCE_BYTES:]
        aad = f"{entry.pseudonym}|{entry.key_id}|{entry.kind}".encode()
        try:
            return _aesgcm(key.table_key).decrypt(nonce, body, aad).decode()
        except Exception:  # cryptography's InvalidTag: a wrong key or a tampered row
            raise SentinelError(
                f"a table row for {entry.pseudonym} does not open with key {key.id} "
                "(tampered table or wrong key)"
            ) from None

    def expired(self, before: float) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM pseudonyms WHERE last_seen < ?", (before,)
        ).fetchone()[0]

    def expire(self, before: float) -> int:
        """Delete rows last seen before ``before``; how many."""
        self.flush()
        n = self._db.execute("DELETE FROM pseudonyms WHERE last_seen < ?", (before,)).rowcount
        self._db.commit()
        return n

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM pseudonyms").fetchone()[0]

    def close(self) -> None:
        self.flush()
        self._db.close()
