"""The audit trail: one record per playbook run and per approved action, JSONL and Elasticsearch.

Each record says what triggered the run (the finding's id, rule, severity, addresses), every
step with its plan summary, outcome, attempts, duration and error, whether it was a dry run,
and for approved actions who approved them and when. The JSONL file
(``playbooks.audit``, default ``<state>/playbook-audit.jsonl``) is written first, flushed
and fsync'd, and is the record of truth. When Elasticsearch is configured, the same record is
indexed in ``sentinel-playbook-runs-YYYY.MM.DD`` with its ``audit.id`` as ``_id``; records
Elasticsearch could not take are retried with the next one (bounded), and counted.

Records never hold secrets: plans name targets, not their URLs or passwords.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel.respond.records import DocumentStore

log = logging.getLogger(__name__)
MAX_UNSENT = 1000


class AuditLog:
    def __init__(
        self,
        path: str | os.PathLike[str],
        store: DocumentStore | None = None,
        index: str = "sentinel-playbook-runs",
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        self.store = store
        self.index_prefix = index
        self.fsync = fsync
        self._lock = threading.Lock()
        self._unsent: deque[dict[str, Any]] = deque(maxlen=MAX_UNSENT)
        self.es_failures = 0
        self.records = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str, sort_keys=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            self.records += 1
            if self.store is not None:
                self._unsent.append(record)
                self._send()

    def _send(self) -> None:
        while self._unsent:
            record = self._unsent[0]
            day = str(record.get("@timestamp", ""))[:10].replace("-", ".")
            index = f"{self.index_prefix}-{day or datetime.now(UTC).strftime('%Y.%m.%d')}"
            try:
                self.store.index(index, record["audit"]["id"], record)  # type: ignore[union-attr]
            except Exception as exc:
                self.es_failures += 1
                log.warning(
                    "audit: Elasticsearch did not take a record (kept in %s): %s", self.path, exc
                )
                return
            self._unsent.popleft()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
