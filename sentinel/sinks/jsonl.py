"""JSON Lines files, the embedded default sink: one record per line, written in batches.

``sentinel analyze`` writes fresh files for each run. ``sentinel run`` (``live=True``)
appends, so that a restart (``Restart=on-failure``) keeps what the earlier process wrote, and
rotates its log files daily as Zeek and logrotate do: the current file keeps its name
(``findings.jsonl``); at the first flush after midnight UTC (wall clock; the pipeline flushes
every second) it is renamed ``findings.YYYY-MM-DD.jsonl`` after the UTC day it holds and a new
``findings.jsonl`` is started. A file left by a run that stopped on an earlier day is rotated
when the next run opens it (its day is that of its last write). Names keep the base name as a
prefix (``findings*.jsonl*`` finds them all, as retention does).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import orjson

from sentinel.sinks.base import Sink

log = logging.getLogger(__name__)


def utc_day(ts: float) -> str:
    """The UTC day of a Unix time, ``YYYY-MM-DD``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def rotated_name(path: str, day: str) -> str:
    """``dir/findings.jsonl`` of ``day`` -> ``dir/findings.DAY.jsonl``, or ``findings.DAY.N.jsonl``
    when that name is taken (a clock set back, or a restart that found an older file)."""
    stem, ext = os.path.splitext(path)
    target = f"{stem}.{day}{ext}"
    n = 1
    while os.path.exists(target):
        target = f"{stem}.{day}.{n}{ext}"
        n += 1
    return target


class JsonlWriter:
    """Write records to ``path``; ``close`` (or the context manager) flushes what is left.

    ``append=False`` truncates the file (a fresh file per run); ``append=True`` adds to it.
    """

    def __init__(
        self, path: str | os.PathLike[str], batch: int = 2048, append: bool = False
    ) -> None:
        self.path = os.fspath(path)
        self._mode = "ab" if append else "wb"
        self._file = open(self.path, self._mode)  # noqa: SIM115 - closed in close()
        self._pending: list[bytes] = []
        self._batch = batch
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        pending = self._pending
        pending.append(orjson.dumps(record))
        if len(pending) >= self._batch:
            self.flush()

    def flush(self) -> None:
        """Write what is batched (to the OS: visible to readers of the file at once)."""
        if self._pending:
            self.count += len(self._pending)
            self._pending.append(b"")
            self._file.write(b"\n".join(self._pending))
            self._file.flush()
            self._pending.clear()

    def rotate(self, day: str) -> str | None:
        """Flush, rename the file to its ``day`` name and start a new one at ``path``; the
        new name, or None when the file is empty (it is kept as it is)."""
        self.flush()
        if os.path.getsize(self.path) == 0:
            return None
        self._file.close()
        target = rotated_name(self.path, day)
        os.rename(self.path, target)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        return target

    def close(self) -> None:
        self.flush()
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonlSink(Sink):
    """modbus.jsonl, flows.jsonl, findings.jsonl and assets.jsonl in one directory; ot.jsonl
    and dnp3.jsonl when the run decodes OT protocols (created with their first record).

    ``live=True`` (``sentinel run``): the log files are appended to and rotated daily (module
    docstring); ``clock`` is the wall clock that decides the day (tests pass their own).
    assets.jsonl is a snapshot of the inventory, rewritten at the end of each run.
    """

    id = "jsonl"

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        live: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.out_dir = os.fspath(out_dir)
        self.live = live
        self.clock = clock
        os.makedirs(self.out_dir, exist_ok=True)
        self.day = utc_day(clock()) if live else ""
        self.rotated: list[str] = []  # the files this sink renamed (newest last)
        self._modbus = self._open("modbus")
        self._flows = self._open("flows")
        self._findings = self._open("findings")
        self.modbus = self._modbus.write  # type: ignore[method-assign]  # hot path: no wrapper
        self.flow = self._flows.write  # type: ignore[method-assign]
        self.finding = self._findings.write  # type: ignore[method-assign]
        self._lazy: dict[str, JsonlWriter] = {}

    def _open(self, name: str) -> JsonlWriter:
        path = os.path.join(self.out_dir, f"{name}.jsonl")
        if self.live:
            # A file a previous run left on an earlier day belongs to that day.
            try:
                st = os.stat(path)
            except FileNotFoundError:
                pass
            else:
                day = utc_day(st.st_mtime)
                if st.st_size and day < self.day:
                    target = rotated_name(path, day)
                    os.rename(path, target)
                    self.rotated.append(target)
                    log.info("rotated %s (left by an earlier run) to %s", path, target)
        return JsonlWriter(path, append=self.live)

    def _writer(self, name: str) -> JsonlWriter:
        writer = self._lazy.get(name)
        if writer is None:
            writer = self._lazy[name] = self._open(name)
        return writer

    def ot(self, record: dict[str, Any]) -> None:
        self._writer("ot").write(record)

    def dnp3(self, record: dict[str, Any]) -> None:
        self._writer("dnp3").write(record)

    def assets(self, records: list[dict[str, Any]]) -> None:
        with JsonlWriter(os.path.join(self.out_dir, "assets.jsonl")) as out:
            for rec in records:
                out.write(rec)

    def _writers(self) -> tuple[JsonlWriter, ...]:
        return (self._modbus, self._flows, self._findings, *self._lazy.values())

    def flush(self) -> None:
        for writer in self._writers():
            writer.flush()
        if self.live:
            self.rotate_if_due()

    def rotate_if_due(self) -> bool:
        """At a new UTC day (wall clock), rename each log file after the day it holds."""
        today = utc_day(self.clock())
        if today <= self.day:  # a clock set back does not rotate
            return False
        day, self.day = self.day, today
        for writer in self._writers():
            target = writer.rotate(day)
            if target is not None:
                self.rotated.append(target)
                log.info("rotated %s to %s", writer.path, target)
        return True

    def close(self) -> None:
        for writer in self._writers():
            writer.close()
