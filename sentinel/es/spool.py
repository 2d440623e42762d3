"""The on-disk spool: what Elasticsearch has not acknowledged yet, in order, across restarts.

Two queues live in one directory:

- ``findings/``: every finding is written here before it is sent and removed only once
  Elasticsearch acknowledged it (a write-ahead log). Findings are never dropped, whatever the
  size limit says.
- ``bulk/``: Modbus messages, flows and assets that could not be sent (cluster unreachable or
  overloaded). When the spool is over ``max_bytes``, the oldest bulk segments are dropped and
  the documents in them are counted (``dropped``).

A queue is a series of append-only segment files (``000000000001.seg``...), each line one bulk
item: the action as JSON, a tab, the document as JSON (JSON never holds a raw tab or newline).
Appends are fsync'd (in batches); ``cursor`` (segment, byte offset) records what was
acknowledged and is replaced atomically, and fully acknowledged segments are deleted. A torn
line left by a crash is cut off when the spool is opened again. A sensor that restarts opens
the same directory and carries on where the cursor stands; sending a line twice is harmless
because every document has a deterministic ``_id``.

One process uses a spool at a time (``flock`` on ``lock``); ``inspect`` reads one without the
lock, for ``sentinel es status``. Within that process, ``Spool.in_process(path)`` finds the
open spool (the retention job of ``sentinel run`` expires segments through the running
sink's own spool, under its mutex, instead of opening it a second time). ``state.json``
keeps the counters and the last error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError

log = logging.getLogger(__name__)

FINDINGS = "findings"
BULK = "bulk"
QUEUES = (FINDINGS, BULK)
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_SEGMENT_BYTES = 16 << 20
_SEG = "{:012d}.seg"
_STATE_EVERY = 2.0  # seconds between state.json writes for routine counters
_OPEN: dict[str, Spool] = {}  # real path -> the spool this process holds (Spool.in_process)


class SpoolError(SentinelError):
    """The spool cannot be used (busy, unreadable)."""


def default_spool_dir() -> Path:
    """``$SENTINEL_STATE``/es-spool, else ``$XDG_STATE_HOME/sentinel/es-spool``."""
    state = os.environ.get("SENTINEL_STATE")
    if state:
        return Path(state) / "es-spool"
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "sentinel" / "es-spool"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` atomically; ``durable`` also waits for the disk."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    tmp.replace(path)
    if durable:
        _fsync_dir(path.parent)


@dataclass(frozen=True)
class Position:
    segment: int
    offset: int


@dataclass
class Batch:
    """Lines read from a queue; ``ack`` it once they are in Elasticsearch."""

    queue: str
    lines: list[bytes]
    end: Position
    counts: dict[int, int]


class _Queue:
    def __init__(self, path: Path, segment_bytes: int) -> None:
        self.path = path
        self.segment_bytes = segment_bytes
        path.mkdir(parents=True, exist_ok=True)
        self.sizes: dict[int, int] = {}
        self.items: dict[int, int] = {}
        for name in sorted(os.listdir(path)):
            if name.endswith(".seg") and name[:-4].isdigit():
                self.sizes[int(name[:-4])] = 0
        self.cursor = self._read_cursor()
        for seq in list(self.sizes):
            if seq < self.cursor.segment:
                self._unlink(seq)
        self._repair_tail()
        for seq in self.sizes:
            self._count(seq)
        self._fd: int | None = None
        self._unsynced = False

    def _file(self, seq: int) -> Path:
        return self.path / _SEG.format(seq)

    def _read_cursor(self) -> Position:
        try:
            data = json.loads((self.path / "cursor").read_bytes())
            return Position(int(data["segment"]), int(data["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            first = min(self.sizes, default=1)
            return Position(first, 0)

    def _repair_tail(self) -> None:
        """Cut a torn last line (a crash in the middle of an append)."""
        if not self.sizes:
            return
        last = max(self.sizes)
        path = self._file(last)
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())

    def _count(self, seq: int) -> None:
        data = self._file(seq).read_bytes()
        self.sizes[seq] = len(data)
        start = self.cursor.offset if seq == self.cursor.segment else 0
        self.items[seq] = data.count(b"\n", start)

    def _unlink(self, seq: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(seq).unlink()
        self.sizes.pop(seq, None)
        self.items.pop(seq, None)

    # -- writing
    def append(self, lines: list[bytes], sync: bool) -> None:
        if not lines:
            return
        if self._fd is None or self.sizes[max(self.sizes)] >= self.segment_bytes:
            self._roll()
        data = b"".join(lines)
        seq = max(self.sizes)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)  # type: ignore[arg-type]
            view = view[written:]
        self.sizes[seq] += len(data)
        self.items[seq] += len(lines)
        self._unsynced = True
        if sync:
            self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = False

    def _roll(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        last = max(self.sizes, default=0)
        if last and self.sizes[last] < self.segment_bytes and last >= self.cursor.segment:
            seq = last  # reopen the last segment after a restart
        else:
            # Never reuse the cursor's segment number once it was read into: the cursor's
            # offset would skip the new lines (a restarted sensor that drained its spool).
            seq = max(last + 1, self.cursor.segment + (1 if self.cursor.offset else 0))
            self.sizes[seq] = 0
            self.items[seq] = 0
        self._fd = os.open(self._file(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.path)

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    # -- reading
    def read(self, max_items: int, max_bytes: int) -> tuple[list[bytes], Position, dict[int, int]]:
        """Up to ``max_items`` lines from the cursor on, the position after them, and how many
        came from each segment."""
        lines: list[bytes] = []
        counts: dict[int, int] = {}
        pos = self.cursor
        budget = max_bytes
        for seq in sorted(s for s in self.sizes if s >= self.cursor.segment):
            start = self.cursor.offset if seq == self.cursor.segment else 0
            size = self.sizes[seq]
            if start >= size:
                continue
            with open(self._file(seq), "rb") as f:
                f.seek(start)
                data = f.read(min(size - start, max(budget, 1)))
                end = data.rfind(b"\n") + 1
                if end == 0:  # one line longer than the budget: take it whole
                    f.seek(start)
                    data = f.read(size - start)
                    end = data.find(b"\n") + 1
            chunk = data[:end].splitlines(keepends=True)
            room = max_items - len(lines)
            if len(chunk) > room:
                chunk = chunk[:room]
                end = sum(map(len, chunk))
            lines += chunk
            counts[seq] = len(chunk)
            budget -= end
            pos = Position(seq, start + end)
            if len(lines) >= max_items or budget <= 0 or start + end < size:
                break
        return lines, pos, counts

    def ack(self, end: Position, counts: dict[int, int]) -> None:
        if (end.segment, end.offset) <= (self.cursor.segment, self.cursor.offset):
            return  # already acknowledged, or dropped meanwhile
        for seq, n in counts.items():
            if seq in self.items and (seq, 0) >= (self.cursor.segment, 0):
                self.items[seq] = max(0, self.items[seq] - n)
        self.cursor = end
        _write_atomic(
            self.path / "cursor",
            json.dumps({"segment": end.segment, "offset": end.offset}).encode(),
        )
        active = max(self.sizes) if self._fd is not None else None
        for seq in sorted(self.sizes):
            consumed = seq < end.segment or (seq == end.segment and end.offset >= self.sizes[seq])
            if consumed and seq != active:
                self._unlink(seq)

    def drop_oldest(self) -> int | None:
        """Remove the oldest segment; the number of unsent items it held (None if empty)."""
        live = sorted(s for s in self.sizes if s >= self.cursor.segment)
        if not live:
            return None
        seq = live[0]
        if self._fd is not None and seq == max(self.sizes):
            self._roll_new()
        lost = self.items.get(seq, 0)
        self._unlink(seq)
        nxt = min((s for s in self.sizes if s > seq), default=seq + 1)
        self.cursor = Position(nxt, 0)
        _write_atomic(self.path / "cursor", json.dumps({"segment": nxt, "offset": 0}).encode())
        return lost

    def expire(self, cutoff: float, dry_run: bool) -> tuple[int, int]:
        """Remove the segments last written before ``cutoff``, oldest first, up to the first
        one still in force (an open segment that old is closed first); (segments, unsent
        items in them)."""
        segments = items = 0
        last = None
        for seq in sorted(self.sizes):
            try:
                if self._file(seq).stat().st_mtime >= cutoff:
                    break
            except FileNotFoundError:
                self._unlink(seq)
                continue
            segments += 1
            items += self.items.get(seq, 0) if seq >= self.cursor.segment else 0
            last = seq
            if dry_run:
                continue
            if self._fd is not None and seq == max(self.sizes):
                self._roll_new()
            self._unlink(seq)
        if last is not None and not dry_run and self.cursor.segment <= last:
            nxt = min(self.sizes, default=last + 1)
            self.cursor = Position(nxt, 0)
            _write_atomic(self.path / "cursor", json.dumps({"segment": nxt, "offset": 0}).encode())
        return segments, items

    def _roll_new(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        seq = max(self.sizes) + 1
        self.sizes[seq] = 0
        self.items[seq] = 0
        self._fd = os.open(self._file(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    @property
    def depth(self) -> int:
        return sum(self.items.values())

    @property
    def nbytes(self) -> int:
        total = sum(self.sizes.values())
        return max(0, total - (self.cursor.offset if self.cursor.segment in self.sizes else 0))


class Spool:
    """The two queues of one spool directory, thread-safe (see the module doc)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / "lock", "a+")  # noqa: SIM115 - held until close()
        except OSError as exc:
            raise SpoolError(f"cannot open the spool {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            raise SpoolError(
                f"the spool {self.path} is in use by pid {holder}; stop that sensor or flush "
                "with its own command"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        self._mutex = threading.Lock()
        self._queues = {q: _Queue(self.path / q, segment_bytes) for q in QUEUES}
        self.state: dict[str, Any] = _read_state(self.path)
        self._state_written = 0.0
        self._warned_full = False
        self.closed = False
        _OPEN[os.path.realpath(self.path)] = self

    def append(self, queue: str, lines: list[bytes], sync: bool = True) -> None:
        with self._mutex:
            self._queues[queue].append(lines, sync)
            self._enforce_limit()

    def sync(self) -> None:
        with self._mutex:
            for q in self._queues.values():
                q.sync()

    def read(self, queue: str, max_items: int, max_bytes: int = 64 << 20) -> Batch | None:
        with self._mutex:
            q = self._queues[queue]
            if not q.depth:
                return None
            lines, end, counts = q.read(max_items, max_bytes)
            if not lines:  # the counters drifted from the files: count again
                for seq in list(q.sizes):
                    q._count(seq)
                return None
            return Batch(queue, lines, end, counts)

    def ack(self, batch: Batch) -> None:
        with self._mutex:
            self._queues[batch.queue].ack(batch.end, batch.counts)

    def expire(self, queue: str, cutoff: float, dry_run: bool = False) -> tuple[int, int]:
        """Retention (``sentinel.privacy.retention``): the segments of ``queue`` last written
        before ``cutoff`` are removed, sent or not; (segments, unsent items in them)."""
        with self._mutex:
            return self._queues[queue].expire(cutoff, dry_run)

    @staticmethod
    def in_process(path: str | os.PathLike[str]) -> Spool | None:
        """The spool of ``path`` that this process holds open, if any."""
        return _OPEN.get(os.path.realpath(path))

    def depth(self, queue: str | None = None) -> int:
        with self._mutex:
            if queue:
                return self._queues[queue].depth
            return sum(q.depth for q in self._queues.values())

    def nbytes(self) -> int:
        return sum(q.nbytes for q in self._queues.values())

    def _enforce_limit(self) -> None:
        bulk = self._queues[BULK]
        while self.nbytes() > self.max_bytes:
            lost = bulk.drop_oldest() if bulk.depth else None
            if lost is None:
                if not self._warned_full:
                    self._warned_full = True
                    log.warning(
                        "spool %s is over its limit with findings only; findings are kept",
                        self.path,
                    )
                return
            self.state["dropped"] = self.state.get("dropped", 0) + lost
            self._save_state(force=True)

    # -- counters and errors (state.json)
    def note(self, force: bool = False, **values: Any) -> None:
        with self._mutex:
            for key, value in values.items():
                if key in ("rejected", "indexed") and isinstance(value, int):
                    self.state[key] = self.state.get(key, 0) + value
                else:
                    self.state[key] = value
            self._save_state(force)

    def _save_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._state_written >= _STATE_EVERY:
            self._state_written = now
            _write_atomic(self.path / "state.json", json.dumps(self.state, indent=1).encode())

    def reject(self, entries: list[dict[str, Any]]) -> None:
        """Keep documents Elasticsearch refused for good (findings), with the reason."""
        with self._mutex, open(self.path / "rejected.jsonl", "ab") as f:
            for entry in entries:
                f.write(json.dumps(entry, default=str).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        if self.closed:
            return
        with self._mutex:
            for q in self._queues.values():
                q.close()
            self._save_state(force=True)
            self.closed = True
        if _OPEN.get(os.path.realpath(self.path)) is self:
            del _OPEN[os.path.realpath(self.path)]
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "state.json").read_bytes())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Depth, size and counters of a spool without taking its lock (for ``es status``)."""
    base = Path(path)
    out: dict[str, Any] = {"path": str(base), "exists": base.is_dir()}
    total_bytes = 0
    for name in QUEUES:
        qdir = base / name
        items = 0
        nbytes = 0
        if qdir.is_dir():
            try:
                cur = json.loads((qdir / "cursor").read_bytes())
                cursor = (int(cur["segment"]), int(cur["offset"]))
            except (OSError, ValueError, KeyError, TypeError):
                cursor = (0, 0)
            for seg in sorted(qdir.glob("*.seg")):
                seq = int(seg.stem) if seg.stem.isdigit() else -1
                if seq < cursor[0]:
                    continue
                data = seg.read_bytes()
                start = cursor[1] if seq == cursor[0] else 0
                items += data.count(b"\n", start)
                nbytes += max(0, len(data) - start)
        out[name] = items
        total_bytes += nbytes
    out["bytes"] = total_bytes
    rejected = base / "rejected.jsonl"
    out["rejected_file"] = str(rejected) if rejected.exists() else None
    out["state"] = _read_state(base)
    return out
