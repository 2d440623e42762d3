"""JSON Lines files, the embedded default sink: one record per line, written in batches."""

from __future__ import annotations

import os
from typing import Any

import orjson

from sentinel.sinks.base import Sink


class JsonlWriter:
    """Append records to ``path``; ``close`` (or the context manager) flushes what is left."""

    def __init__(self, path: str | os.PathLike[str], batch: int = 2048) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
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

    def close(self) -> None:
        self.flush()
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonlSink(Sink):
    """modbus.jsonl, flows.jsonl, findings.jsonl and assets.jsonl in one directory; ot.jsonl
    and dnp3.jsonl when the run decodes OT protocols (created with their first record)."""

    id = "jsonl"

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = os.fspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self._modbus = JsonlWriter(os.path.join(self.out_dir, "modbus.jsonl"))
        self._flows = JsonlWriter(os.path.join(self.out_dir, "flows.jsonl"))
        self._findings = JsonlWriter(os.path.join(self.out_dir, "findings.jsonl"))
        self.modbus = self._modbus.write  # type: ignore[method-assign]  # hot path: no wrapper
        self.flow = self._flows.write  # type: ignore[method-assign]
        self.finding = self._findings.write  # type: ignore[method-assign]
        self._lazy: dict[str, JsonlWriter] = {}

    def _writer(self, name: str) -> JsonlWriter:
        writer = self._lazy.get(name)
        if writer is None:
            writer = self._lazy[name] = JsonlWriter(os.path.join(self.out_dir, f"{name}.jsonl"))
        return writer

    def ot(self, record: dict[str, Any]) -> None:
        self._writer("ot").write(record)

    def dnp3(self, record: dict[str, Any]) -> None:
        self._writer("dnp3").write(record)

    def assets(self, records: list[dict[str, Any]]) -> None:
        with JsonlWriter(os.path.join(self.out_dir, "assets.jsonl")) as out:
            for rec in records:
                out.write(rec)

    def flush(self) -> None:
        for writer in (self._modbus, self._flows, self._findings, *self._lazy.values()):
            writer.flush()

    def close(self) -> None:
        for writer in (self._modbus, self._flows, self._findings, *self._lazy.values()):
            writer.close()
