"""The playbook engine: findings in, runs out, every outcome recorded.

``PlaybookRunner`` is a ``Sink``: the pipeline hands it each ECS finding document
(``finding(doc)``) as it hands them to the JSONL and Elasticsearch sinks. For each enabled
playbook whose trigger matches, and that throttling and de-duplication admit, a *run* is
queued (bounded queue, so a burst of findings never stalls packet capture) and carried out by
worker threads:

- each step is planned (templates rendered, wire values validated) and then carried out with
  its ``timeout`` and ``retries`` (exponential back-off from ``retry_delay``); a value
  refused at planning time is not retried;
- a step that changes the network, or has ``approval: true``, is stored as pending in the
  approval store instead (``sentinel playbook approve RUN_ID``); the service calls
  ``process_approvals`` (a housekeeping thread does it every second) to carry out approved
  plans and expire stale ones;
- in dry-run mode (the playbook's ``dry_run``, ``playbooks.dry_run`` or ``sentinel playbook
  test``) steps are planned and recorded, nothing is carried out;
- every run, and every approved action, leaves an audit record (``AuditLog``);
- a step that fails, times out or is refused raises a finding of its own (rule 9000401,
  ``emit``), which goes to the sinks and through the playbooks again, but a failure while
  answering such a finding raises no further one (no loops).

Throttling uses the finding's own time (packet time), like the rest of Sentinel. The runner
never raises into the pipeline: a bug in a step is a failed step.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sentinel.events import ConnId
from sentinel.findings import Finding
from sentinel.respond import template
from sentinel.respond.actions import (
    ActionError,
    Refused,
    Services,
    Skip,
    StepContext,
    dig,
    registry,
)
from sentinel.respond.approvals import Approval, ApprovalStore
from sentinel.respond.audit import AuditLog
from sentinel.respond.metrics import ServiceMetrics
from sentinel.respond.model import Loaded, Throttle, why_not
from sentinel.respond.settings import PlaybookSettings
from sentinel.rules.attack import technique
from sentinel.sinks.base import Sink

log = logging.getLogger(__name__)

# Sentinel's own rule ids for the response side (9000400-9000499, see detectors/common.py).
ACTION_FAILED_RULE = "9000401"
# ATT&CK for ICS has no technique for "our response failed"; a failed notification or block is
# closest to Block Reporting Message (T0804): the report did not reach its recipient.
ACTION_FAILED_TECHNIQUE = technique("T0804")
FAILED = ("failed", "timeout", "refused")
MAX_KEYS = 100_000


def new_run_id() -> str:
    """Sortable by time, unguessable, safe in file names: ``20240102T030405Z-1a2b3c4d5e``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(5)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finding_time(doc: dict[str, Any]) -> float | None:
    for key in ("event.end", "@timestamp"):
        value = dig(doc, key)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


@dataclass
class StepOutcome:
    step: str
    action: str
    status: str  # ok | failed | timeout | refused | skipped | dry_run | pending_approval | proposed
    attempts: int = 0
    duration: float = 0.0
    summary: str | None = None
    plan: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunRecord:
    run_id: str
    playbook: str
    dry_run: bool
    finding: dict[str, Any]
    started: float
    ended: float = 0.0
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def status(self) -> str:
        states = {s.status for s in self.steps}
        if states & set(FAILED):
            return "failed"
        if "pending_approval" in states:
            return "pending_approval"
        if self.dry_run:
            return "dry_run"
        return "ok"


def trigger_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What the audit keeps of the triggering finding (cleaned, bounded)."""
    out: dict[str, Any] = {}
    for key in (
        "event.id",
        "rule.id",
        "rule.name",
        "event.severity",
        "sentinel.severity_label",
        "source.ip",
        "source.port",
        "destination.ip",
        "destination.port",
        "labels.site",
        "labels.sector",
        "@timestamp",
    ):
        value = dig(doc, key)
        if value is None:
            continue
        out[key] = value if isinstance(value, int | float) else template.clean(value, 256)
    tech = dig(doc, "threat.technique.id")
    if isinstance(tech, list):
        out["threat.technique.id"] = [template.clean(t, 16) for t in tech[:8]]
    return out


class Throttler:
    """Per-playbook de-duplication (same finding) and throttling (same key values)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._runs: OrderedDict[tuple, deque[float]] = OrderedDict()
        self._seen: OrderedDict[tuple, float] = OrderedDict()
        self._lock = threading.Lock()

    def admit(
        self, playbook: str, throttle: Throttle | None, doc: dict[str, Any], ts: float
    ) -> str | None:
        """``None`` to run, else why not."""
        event_id = dig(doc, "event.id")
        window = throttle.window if throttle else 86400.0
        with self._lock:
            if isinstance(event_id, str):
                seen_key = (playbook, event_id)
                last = self._seen.get(seen_key)
                if last is not None and abs(ts - last) <= window:
                    return f"finding {event_id} was answered already"
                self._seen[seen_key] = ts
                self._seen.move_to_end(seen_key)
                while len(self._seen) > self.max_keys:
                    self._seen.popitem(last=False)
            if throttle is None:
                return None
            key = (playbook, *(repr(dig(doc, k)) for k in throttle.key))
            times = self._runs.get(key)
            if times is None:
                times = self._runs[key] = deque()
            while times and ts - times[0] >= throttle.window:
                times.popleft()
            if len(times) >= throttle.max_runs:
                return (
                    f"throttled: {len(times)} run(s) for {', '.join(throttle.key)} in the last "
                    f"{throttle.window:g} s"
                )
            times.append(ts)
            self._runs.move_to_end(key)
            while len(self._runs) > self.max_keys:
                self._runs.popitem(last=False)
        return None


class PlaybookRunner(Sink):
    id = "playbooks"

    def __init__(
        self,
        playbooks: list[Loaded],
        services: Services,
        audit: AuditLog,
        approvals: ApprovalStore | None = None,
        settings: PlaybookSettings | None = None,
        emit: Callable[[dict[str, Any]], None] | None = None,
        metrics: ServiceMetrics | None = None,
        synchronous: bool = False,
        approval_poll: float | None = 1.0,
    ) -> None:
        self.playbooks = playbooks
        self.services = services
        self.audit = audit
        self.approvals = approvals
        self.settings = settings or PlaybookSettings()
        self.emit = emit
        self.metrics = metrics
        self.synchronous = synchronous
        self.throttler = Throttler()
        self.skipped: dict[str, int] = {}
        self.dropped = 0
        self.records: deque[RunRecord] = deque(maxlen=1000)  # the latest, for tests and status
        self._queue: queue.Queue[tuple[Loaded, dict[str, Any]] | None] = queue.Queue(
            self.settings.queue_size
        )
        self._steps = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.settings.workers * 2, thread_name_prefix="sentinel-step"
        )
        self._idle = threading.Condition()
        self._active = 0
        self._closed = False
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        if not synchronous:
            for i in range(self.settings.workers):
                t = threading.Thread(target=self._work, name=f"sentinel-playbook-{i}", daemon=True)
                t.start()
                self._workers.append(t)
        self._housekeeper: threading.Thread | None = None
        if approvals is not None and approval_poll:
            self._housekeeper = threading.Thread(
                target=self._housekeeping,
                args=(approval_poll,),
                name="sentinel-approvals",
                daemon=True,
            )
            self._housekeeper.start()

    # -- the Sink interface
    def finding(self, document: dict[str, Any]) -> None:
        try:
            self._dispatch(document)
        except Exception:  # never into the pipeline
            log.exception("playbooks: could not dispatch a finding")

    def close(self) -> None:
        """Finish queued runs (at most ``close_timeout`` seconds), then stop the workers."""
        if self._closed:
            return
        self._closed = True
        self.wait_idle(self.settings.close_timeout)
        self._stop.set()
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        for t in self._workers:
            t.join(5)
        if self._housekeeper is not None:
            self._housekeeper.join(5)
        self._steps.shutdown(wait=False, cancel_futures=True)

    # -- matching
    def matches(self, document: dict[str, Any]) -> list[tuple[Loaded, str | None]]:
        """Each enabled playbook and why it does not match (None: it does)."""
        return [
            (lp, why_not(lp.playbook.trigger, document))
            for lp in self.playbooks
            if lp.playbook.enabled
        ]

    def _dispatch(self, document: dict[str, Any]) -> None:
        ts = finding_time(document) or time.time()
        for loaded, reason in self.matches(document):
            if reason is not None:
                continue
            pb = loaded.playbook
            refused = self.throttler.admit(pb.id, pb.throttle, document, ts)
            if refused is not None:
                self.skipped[pb.id] = self.skipped.get(pb.id, 0) + 1
                log.debug("playbook %s: %s", pb.id, refused)
                continue
            if self.synchronous:
                self.run(loaded, document)
                continue
            with self._idle:
                self._active += 1
            try:
                self._queue.put_nowait((loaded, document))
            except queue.Full:
                with self._idle:
                    self._active -= 1
                    self._idle.notify_all()
                self.dropped += 1
                if self.metrics:
                    self.metrics.playbook_dropped.inc()
                log.error(
                    "playbook %s: queue full, run dropped for finding %s",
                    pb.id,
                    dig(document, "event.id"),
                )
                self.audit.write(self._dropped_record(loaded, document))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loaded, document = item
            try:
                self.run(loaded, document)
            except Exception:
                log.exception("playbook %s: run failed unexpectedly", loaded.playbook.id)
            finally:
                with self._idle:
                    self._active -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued run is done; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # -- one run
    def run(
        self, loaded: Loaded, document: dict[str, Any], dry_run: bool | None = None
    ) -> RunRecord:
        """Carry out ``loaded`` for ``document`` now (in this thread); returns the record."""
        pb = loaded.playbook
        if dry_run is None:
            dry_run = pb.dry_run or self.settings.dry_run
        record = RunRecord(new_run_id(), pb.id, dry_run, document, time.time())
        stop = False
        for index, (step, action) in enumerate(zip(pb.steps, loaded.actions, strict=True)):
            if stop:
                record.steps.append(
                    StepOutcome(
                        step.id,
                        step.action,
                        "skipped",
                        error="an earlier step failed (on_failure: stop)",
                    )
                )
                continue
            outcome = self._step(loaded, index, action, document, record, dry_run)
            record.steps.append(outcome)
            if outcome.status in FAILED and step.on_failure == "stop":
                stop = True
        record.ended = time.time()
        self.records.append(record)
        self.audit.write(self._run_record(record))
        if self.metrics:
            self.metrics.playbook_runs.inc(playbook=pb.id, status=record.status)
            for s in record.steps:
                self.metrics.playbook_steps.inc(playbook=pb.id, action=s.action, status=s.status)
        if not dry_run:
            for s in record.steps:
                if s.status in FAILED:
                    self._raise_failure(record, s, document)
        return record

    def _step(
        self,
        loaded: Loaded,
        index: int,
        action: Any,
        document: dict[str, Any],
        record: RunRecord,
        dry_run: bool,
    ) -> StepOutcome:
        step = loaded.playbook.steps[index]
        outcome = StepOutcome(step.id, step.action, "ok")
        started = time.monotonic()
        ctx = StepContext(document, record.run_id, loaded.playbook, step, self.services)
        if step.if_configured and action.targets:
            target = getattr(action.options, "target", None)
            if target not in getattr(self.services.settings, action.targets):
                outcome.status = "skipped"
                outcome.error = f"no {action.targets} target {target!r} configured"
                return outcome
        try:
            plan = action.plan(ctx)
        except Skip as exc:
            outcome.status, outcome.error = "skipped", str(exc)
            return outcome
        except Refused as exc:
            outcome.status, outcome.error = "refused", str(exc)
            outcome.duration = round(time.monotonic() - started, 6)
            return outcome
        except ActionError as exc:
            outcome.status, outcome.error = "failed", str(exc)
            outcome.duration = round(time.monotonic() - started, 6)
            return outcome
        except Exception as exc:  # a bug in an action: a failed step, not a crash
            log.exception("playbook %s step %s: planning failed", loaded.playbook.id, step.id)
            outcome.status, outcome.error = "failed", f"internal error: {type(exc).__name__}"
            return outcome
        outcome.summary = plan.summary
        outcome.plan = plan.params
        if dry_run:
            outcome.status = "dry_run"
            if loaded.needs_approval(index):
                outcome.detail["needs_approval"] = True
            return outcome
        if loaded.needs_approval(index):
            if self.approvals is None:
                outcome.status, outcome.error = "failed", "needs approval but no approval store"
                return outcome
            stored = {
                "params": plan.params,
                "timeout": step.timeout,
                "retries": step.retries,
                "retry_delay": step.retry_delay,
            }
            entry = self.approvals.add(
                record.run_id,
                step.id,
                loaded.playbook.id,
                step.action,
                plan.summary,
                stored,
                dig(document, "event.id"),
                self.settings.approval_ttl,
            )
            outcome.status = "pending_approval"
            outcome.detail = {"expires": _iso(entry.expires)}
            log.warning(
                "playbook %s: %s waits for approval: sentinel playbook approve %s",
                loaded.playbook.id,
                plan.summary,
                record.run_id,
            )
            if self.metrics:
                self.metrics.pending_approvals.set(len(self.approvals.list()))
            return outcome
        status, detail, error, attempts = self._execute(
            step.action, plan.params, step.timeout, step.retries, step.retry_delay
        )
        outcome.status, outcome.detail, outcome.error, outcome.attempts = (
            status,
            detail,
            error,
            attempts,
        )
        outcome.duration = round(time.monotonic() - started, 6)
        return outcome

    def _execute(
        self, action_id: str, params: dict[str, Any], timeout: float, retries: int, delay: float
    ) -> tuple[str, dict[str, Any], str | None, int]:
        cls = registry()[action_id]
        status, error, detail = "failed", None, {}
        attempts = 0
        for attempt in range(retries + 1):
            attempts += 1
            future = self._steps.submit(cls.execute, params, self.services)
            try:
                detail = future.result(timeout=timeout) or {}
                status = str(detail.pop("outcome", "ok"))
                return status, detail, None, attempts
            except concurrent.futures.TimeoutError:
                future.cancel()
                status, error = "timeout", f"no result within {timeout:g} s"
            except Refused as exc:
                return "refused", {}, str(exc), attempts
            except Skip as exc:
                return "skipped", {}, str(exc), attempts
            except ActionError as exc:
                status, error = "failed", str(exc)
            except Exception as exc:
                log.exception("action %s failed unexpectedly", action_id)
                status, error = "failed", f"internal error: {type(exc).__name__}"
            if attempt < retries and not self._stop.is_set():
                self._stop.wait(min(delay * (2**attempt), 60.0))
        return status, detail, error, attempts

    # -- approvals
    def _housekeeping(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.process_approvals()
            except Exception:
                log.exception("playbooks: approval housekeeping failed")

    def process_approvals(self) -> list[tuple[Approval, StepOutcome]]:
        """Expire stale approvals and carry out approved ones; returns what was carried out."""
        if self.approvals is None:
            return []
        for entry in self.approvals.expire():
            outcome = StepOutcome(
                entry.step_id,
                entry.action,
                "expired",
                summary=entry.summary,
                error="not approved in time",
            )
            self.audit.write(self._approval_record(entry, outcome))
        done: list[tuple[Approval, StepOutcome]] = []
        for entry in self.approvals.take_approved():
            stored = entry.plan
            started = time.monotonic()
            status, detail, error, attempts = self._execute(
                entry.action,
                stored["params"],
                float(stored.get("timeout", 10.0)),
                int(stored.get("retries", 0)),
                float(stored.get("retry_delay", 1.0)),
            )
            outcome = StepOutcome(
                entry.step_id,
                entry.action,
                status,
                attempts,
                round(time.monotonic() - started, 6),
                entry.summary,
                stored["params"],
                detail,
                error,
            )
            final = {"ok": "done"}.get(status, status)
            self.approvals.finish(entry.run_id, entry.step_id, final, asdict(outcome))
            self.audit.write(self._approval_record(entry, outcome))
            if self.metrics:
                self.metrics.playbook_steps.inc(
                    playbook=entry.playbook, action=entry.action, status=status
                )
            if status in FAILED:
                trigger = {"event": {"id": entry.finding_id}} if entry.finding_id else {}
                record = RunRecord(entry.run_id, entry.playbook, False, trigger, time.time())
                self._raise_failure(record, outcome, trigger)
            done.append((entry, outcome))
        if self.metrics:
            self.metrics.pending_approvals.set(len(self.approvals.list()))
        return done

    # -- records and findings
    def _run_record(self, record: RunRecord) -> dict[str, Any]:
        return {
            "@timestamp": _iso(record.started),
            "audit": {"id": record.run_id, "kind": "run"},
            "event": {
                "kind": "event",
                "category": ["process"],
                "type": ["info"],
                "outcome": "failure" if record.status == "failed" else "success",
                "dataset": "sentinel.playbook",
            },
            "playbook": {
                "id": record.playbook,
                "run_id": record.run_id,
                "dry_run": record.dry_run,
                "status": record.status,
            },
            "trigger": trigger_summary(record.finding),
            "steps": [asdict(s) for s in record.steps],
            "duration": round(record.ended - record.started, 6),
            "observer": {"name": self.services.observer},
        }

    def _approval_record(self, entry: Approval, outcome: StepOutcome) -> dict[str, Any]:
        return {
            "@timestamp": _iso(time.time()),
            "audit": {"id": f"{entry.run_id}.{entry.step_id}.{outcome.status}", "kind": "approval"},
            "event": {
                "kind": "event",
                "category": ["process"],
                "type": ["change"],
                "outcome": "failure" if outcome.status in FAILED else "success",
                "dataset": "sentinel.playbook",
            },
            "playbook": {
                "id": entry.playbook,
                "run_id": entry.run_id,
                "dry_run": False,
                "status": outcome.status,
            },
            "approval": {
                "approved_by": entry.approved_by,
                "approved_at": _iso(entry.approved_at) if entry.approved_at else None,
                "created": _iso(entry.created),
                "expires": _iso(entry.expires),
            },
            "trigger": {"event.id": entry.finding_id},
            "steps": [asdict(outcome)],
            "observer": {"name": self.services.observer},
        }

    def _dropped_record(self, loaded: Loaded, document: dict[str, Any]) -> dict[str, Any]:
        run_id = new_run_id()
        return {
            "@timestamp": _iso(time.time()),
            "audit": {"id": run_id, "kind": "dropped"},
            "event": {
                "kind": "event",
                "category": ["process"],
                "type": ["info"],
                "outcome": "failure",
                "dataset": "sentinel.playbook",
            },
            "playbook": {"id": loaded.playbook.id, "run_id": run_id, "status": "dropped"},
            "trigger": trigger_summary(document),
            "steps": [],
            "observer": {"name": self.services.observer},
        }

    def failure_finding(
        self, record: RunRecord, outcome: StepOutcome, trigger: dict[str, Any]
    ) -> dict[str, Any]:
        conn = None
        src, dst = dig(trigger, "source.ip"), dig(trigger, "destination.ip")
        sport, dport = dig(trigger, "source.port"), dig(trigger, "destination.port")
        if all(isinstance(v, str) for v in (src, dst)) and all(
            isinstance(v, int) for v in (sport, dport)
        ):
            try:
                import ipaddress

                conn = ConnId(
                    str(ipaddress.ip_address(src)), sport, str(ipaddress.ip_address(dst)), dport
                )
            except ValueError:
                conn = None
        finding = Finding(
            ts=time.time(),
            rule_id=ACTION_FAILED_RULE,
            rule_name="Playbook action failed",
            ruleset="sentinel-respond",
            severity="high" if registry()[outcome.action].changes_network else "medium",
            technique=ACTION_FAILED_TECHNIQUE,
            message=(
                f"playbook {record.playbook} step {outcome.step} ({outcome.action}) "
                f"{outcome.status}: {template.clean(outcome.error, 300)}"
            ),
            detector="playbooks",
            conn=conn,
            uid=f"{record.run_id}.{outcome.step}",
            protocol=str(dig(trigger, "network.protocol") or "modbus"),
            dataset="sentinel.respond",
            evidence={
                "playbook": record.playbook,
                "run_id": record.run_id,
                "step": outcome.step,
                "action": outcome.action,
                "status": outcome.status,
                "error": template.clean(outcome.error, 500),
                "attempts": outcome.attempts,
                "trigger_finding": template.clean(dig(trigger, "event.id"), 64),
            },
        )
        labels = trigger.get("labels") if isinstance(trigger.get("labels"), dict) else None
        doc = finding.to_ecs(self.services.observer, labels)
        doc["sentinel"]["respond"] = {"origin": "action_failed", "run_id": record.run_id}
        return doc

    def _raise_failure(
        self, record: RunRecord, outcome: StepOutcome, trigger: dict[str, Any]
    ) -> None:
        if isinstance(dig(trigger, "sentinel.respond"), dict):
            log.error(
                "playbook %s: %s while answering a failure finding: %s",
                record.playbook,
                outcome.status,
                outcome.error,
            )
            return
        doc = self.failure_finding(record, outcome, trigger)
        log.error("%s", doc["message"])
        if self.emit is not None:
            try:
                self.emit(doc)
            except Exception:
                log.exception("playbooks: could not hand a failure finding to the sinks")
        if not self._closed:
            self._dispatch(doc)
