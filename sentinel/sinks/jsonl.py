"""JSON Lines files, the embedded default sink: one record per line, written in batches."""

from __future__ import annotations

import os
from typing import Any

import orjson

_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


class JsonlWriter:
    """Append records to ``path``; ``close`` (or the context manager) flushes what is left."""

    def __init__(self, path: str | os.PathLike[str], batch: int = 2048) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._pending: list[bytes] = []
        self._batch = batch
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._pending.append(orjson.dumps(record, option=_OPTIONS))
        self.count += 1
        if len(self._pending) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._file.write(b"".join(self._pending))
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
