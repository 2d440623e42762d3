"""The packet ring of ``sentinel run``: the last minutes of frames, for ``capture.snapshot``.

``PacketRing.tap(source)`` passes a live source's ``(ts, linktype, frame)`` tuples through
unchanged and keeps a copy, bounded both in bytes and in seconds of packet time (the oldest
frames go first). ``snapshot`` picks the frames of one flow (or between two hosts) in a time
span and writes them as a classic pcap file (LINKTYPE of the frames, microsecond stamps).

Frames are payload: they can carry personal data. The ring lives in memory only; a snapshot is
written only when a playbook asks for it, with mode 0600, and the snapshot folder is bounded
(``actions.snapshot.max_files`` / ``max_total_bytes``, oldest removed first). With
pseudonymization on, ``capture.snapshot`` is refused unless ``privacy.snapshots`` allows it,
and then ``write_pcap`` caps the file (``max_bytes``) and each frame (``snaplen``).
"""

from __future__ import annotations

import ipaddress
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from sentinel.decode.packet import PacketDecoder

PCAP_MAGIC = 0xA1B2C3D4
SNAPLEN = 262144
PCAP_HEADER, RECORD_HEADER = 24, 16  # bytes (classic pcap global and record headers)
Frame = tuple[float, int, bytes]


class PacketRing:
    def __init__(self, max_bytes: int = 64 << 20, max_seconds: float = 300.0) -> None:
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self.latest = 0.0
        self.evicted = 0

    def add(self, ts: float, linktype: int, frame: bytes) -> None:
        with self._cond:
            self._frames.append((ts, linktype, frame))
            self._bytes += len(frame)
            if ts > self.latest:
                self.latest = ts
            horizon = self.latest - self.max_seconds
            frames = self._frames
            while frames and (self._bytes > self.max_bytes or frames[0][0] < horizon):
                self._bytes -= len(frames.popleft()[2])
                self.evicted += 1
            self._cond.notify_all()

    def tap(self, source: Iterable[Frame]) -> Iterator[Frame]:
        """Yield ``source`` unchanged, keeping each frame."""
        add = self.add
        for ts, linktype, frame in source:
            add(ts, linktype, frame)
            yield ts, linktype, frame

    def wait_until(self, ts: float, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until a frame at or after ``ts`` was added."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.latest < ts:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def __len__(self) -> int:
        return len(self._frames)

    def select(
        self,
        a: str,
        b: str,
        start: float,
        end: float,
        ports: tuple[int, int] | None = None,
    ) -> list[Frame]:
        """Frames between hosts ``a`` and ``b`` (and ``ports``, either way) in [start, end]."""
        pa, pb = ipaddress.ip_address(a).packed, ipaddress.ip_address(b).packed
        with self._cond:
            frames = [f for f in self._frames if start <= f[0] <= end]
        decoder = PacketDecoder()
        out: list[Frame] = []
        for ts, linktype, frame in frames:
            d = decoder.decode(ts, linktype, frame)
            if d is None:
                continue
            src, sport, dst, dport = d[1], d[2], d[3], d[4]
            if {src, dst} != {pa, pb}:
                continue
            if ports is not None and {sport, dport} != set(ports):
                continue
            out.append((ts, linktype, frame))
        return out


def write_pcap(
    path: Path, frames: list[Frame], snaplen: int = SNAPLEN, max_bytes: int | None = None
) -> int:
    """Write ``frames`` (of the first frame's link type) as pcap, each cut to ``snaplen``
    bytes, stopping before the file would exceed ``max_bytes``; returns the frame count."""
    linktype = frames[0][1] if frames else 1
    kept = [f for f in frames if f[1] == linktype]
    snaplen = max(1, min(snaplen, SNAPLEN))
    size = PCAP_HEADER
    if max_bytes is not None:
        for n, (_ts, _lt, frame) in enumerate(kept):
            size += RECORD_HEADER + min(len(frame), snaplen)
            if size > max_bytes:
                kept = kept[:n]
                break
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, snaplen, linktype))
        for ts, _lt, frame in kept:
            sec = int(ts)
            usec = round((ts - sec) * 1e6)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            data = frame[:snaplen]
            f.write(struct.pack("<IIII", sec, usec, len(data), len(frame)))
            f.write(data)
    return len(kept)


def prune(directory: Path, max_files: int, max_bytes: int) -> int:
    """Remove the oldest ``*.pcap`` files until both bounds hold; returns how many went."""
    files = sorted(directory.glob("*.pcap"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    removed = 0
    while files and (len(files) > max_files or total > max_bytes):
        victim = files.pop(0)
        total -= victim.stat().st_size
        victim.unlink(missing_ok=True)
        removed += 1
    return removed
