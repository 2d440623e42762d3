"""Pending actions waiting for a person: a small SQLite store shared by the service and CLI.

A step that changes the network (``firewall.block``), or any step with ``approval: true``, is
not carried out by the run: its plan is stored here as *pending*, with an expiry
(``playbooks.approval_ttl``). ``sentinel playbook pending`` lists what waits;
``sentinel playbook approve RUN_ID`` marks it *approved* with who approved it; the running
service picks approved entries up (``take_approved``), carries out exactly the stored plan and
records the outcome (*done*, *failed*, or *proposed* when network changes are not allowed).
What is not approved in time becomes *expired* and is never carried out.

SQLite in WAL mode with a busy timeout: the CLI and the service are different processes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError

SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    playbook TEXT NOT NULL,
    action TEXT NOT NULL,
    summary TEXT NOT NULL,
    plan TEXT NOT NULL,
    finding_id TEXT,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    status TEXT NOT NULL,
    approved_by TEXT,
    approved_at REAL,
    outcome TEXT,
    PRIMARY KEY (run_id, step_id)
)
"""


@dataclass(frozen=True)
class Approval:
    run_id: str
    step_id: str
    playbook: str
    action: str
    summary: str
    plan: dict[str, Any]
    finding_id: str | None
    created: float
    expires: float
    status: str  # pending | approved | executing | done | failed | proposed | expired
    approved_by: str | None
    approved_at: float | None
    outcome: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _row(row: sqlite3.Row) -> Approval:
    return Approval(
        run_id=row["run_id"],
        step_id=row["step_id"],
        playbook=row["playbook"],
        action=row["action"],
        summary=row["summary"],
        plan=json.loads(row["plan"]),
        finding_id=row["finding_id"],
        created=row["created"],
        expires=row["expires"],
        status=row["status"],
        approved_by=row["approved_by"],
        approved_at=row["approved_at"],
        outcome=json.loads(row["outcome"]) if row["outcome"] else None,
    )


class ApprovalStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(
        self,
        run_id: str,
        step_id: str,
        playbook: str,
        action: str,
        summary: str,
        plan: dict[str, Any],
        finding_id: str | None,
        ttl: float,
        now: float | None = None,
    ) -> Approval:
        now = time.time() if now is None else now
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO approvals (run_id, step_id, playbook, action, summary, plan,"
                " finding_id, created, expires, status) VALUES (?,?,?,?,?,?,?,?,?, 'pending')",
                (
                    run_id,
                    step_id,
                    playbook,
                    action,
                    summary,
                    json.dumps(plan),
                    finding_id,
                    now,
                    now + ttl,
                ),
            )
        return self.get(run_id, step_id)  # type: ignore[return-value]

    def get(self, run_id: str, step_id: str) -> Approval | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM approvals WHERE run_id=? AND step_id=?", (run_id, step_id)
            ).fetchone()
        return _row(row) if row else None

    def for_run(self, run_id: str) -> list[Approval]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM approvals WHERE run_id=? ORDER BY created, step_id", (run_id,)
            ).fetchall()
        return [_row(r) for r in rows]

    def list(self, status: str | None = "pending", now: float | None = None) -> list[Approval]:
        now = time.time() if now is None else now
        with self._lock:
            if status == "pending":
                rows = self._db.execute(
                    "SELECT * FROM approvals WHERE status='pending' AND expires>? ORDER BY created",
                    (now,),
                ).fetchall()
            elif status is None:
                rows = self._db.execute("SELECT * FROM approvals ORDER BY created").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM approvals WHERE status=? ORDER BY created", (status,)
                ).fetchall()
        return [_row(r) for r in rows]

    def approve(
        self, run_id: str, by: str, step_id: str | None = None, now: float | None = None
    ) -> list[Approval]:
        """Approve the run's pending steps (or one); an unknown or stale run is an error."""
        now = time.time() if now is None else now
        if not by or not by.strip():
            raise SentinelError("an approval needs the approver's name")
        entries = [a for a in self.for_run(run_id) if step_id is None or a.step_id == step_id]
        if not entries:
            what = f"step {step_id!r} of run {run_id!r}" if step_id else f"run {run_id!r}"
            raise SentinelError(f"nothing to approve: no pending action for {what}")
        pending = [a for a in entries if a.status == "pending" and a.expires > now]
        if not pending:
            states = ", ".join(f"{a.step_id}: {_state(a, now)}" for a in entries)
            raise SentinelError(f"nothing to approve for run {run_id!r} ({states})")
        with self._lock, self._db:
            for a in pending:
                self._db.execute(
                    "UPDATE approvals SET status='approved', approved_by=?, approved_at=? "
                    "WHERE run_id=? AND step_id=? AND status='pending'",
                    (by.strip()[:100], now, a.run_id, a.step_id),
                )
        return [self.get(a.run_id, a.step_id) for a in pending]  # type: ignore[misc]

    def expire(self, now: float | None = None) -> list[Approval]:
        now = time.time() if now is None else now
        with self._lock, self._db:
            rows = self._db.execute(
                "SELECT * FROM approvals WHERE status='pending' AND expires<=?", (now,)
            ).fetchall()
            self._db.execute(
                "UPDATE approvals SET status='expired' WHERE status='pending' AND expires<=?",
                (now,),
            )
        return [_row(r) for r in rows]

    def take_approved(self) -> list[Approval]:
        """Approved entries, marked *executing* so that no other process takes them too."""
        taken: list[Approval] = []
        with self._lock, self._db:
            rows = self._db.execute("SELECT * FROM approvals WHERE status='approved'").fetchall()
            for row in rows:
                cur = self._db.execute(
                    "UPDATE approvals SET status='executing' WHERE run_id=? AND step_id=? "
                    "AND status='approved'",
                    (row["run_id"], row["step_id"]),
                )
                if cur.rowcount == 1:
                    taken.append(_row(row))
        return taken

    def finish(self, run_id: str, step_id: str, status: str, outcome: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE approvals SET status=?, outcome=? WHERE run_id=? AND step_id=?",
                (status, json.dumps(outcome, default=str), run_id, step_id),
            )


def _state(a: Approval, now: float) -> str:
    if a.status == "pending" and a.expires <= now:
        return "expired"
    if a.approved_by:
        return f"{a.status} (approved by {a.approved_by})"
    return a.status
