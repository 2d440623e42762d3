"""The scheduler service: APScheduler 3 with a persistent SQLite job store.

``SchedulerService(config, emit=...)`` runs the config's ``jobs:`` in a background scheduler:

- **Persistent store**: ``SQLAlchemyJobStore`` on SQLite (``schedule.store``, default
  ``<state>/jobs.sqlite``), so next run times survive a restart and a run missed while the
  service was down is caught up (within ``misfire_grace_time``, once: ``coalesce``).
- **One instance per job** (``max_instances=1``): a slow scan is never started twice.
- **Config is the truth**: at start every configured, enabled job with ``every`` or ``cron``
  is (re)written into the store and stored jobs no longer configured are removed. Jobs
  without a schedule run only on demand (``sentinel jobs run NAME``).
- **One-off scans** (``queue_scan``, used by the ``scan.device`` playbook action) go to a
  memory store: the same job, restricted to one address, scope-checked first.
- Findings of every run go to ``emit`` (the lead wires it to the pipeline's sinks and the
  playbook runner); inventory records to ``devices``; the last result of each job is kept in
  ``<state>/jobs/<name>.last.json`` (what ``sentinel jobs list`` shows).

The store holds only a reference to ``_run_scheduled`` and the job's name: what a job does is
always read from the current config, never from pickled settings.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError
from sentinel.privacy.runtime import pseudonymizer_for
from sentinel.respond.settings import section
from sentinel.schedule.jobs import JobContext, JobResult, run_job
from sentinel.schedule.safety import ScanGuard
from sentinel.schedule.settings import ScheduleSettings

log = logging.getLogger(__name__)

_CURRENT: SchedulerService | None = None
ONEOFF = "oneoff"


def _run_scheduled(name: str) -> None:
    """What the job store calls (by reference): run ``name`` in the current service."""
    service = _CURRENT
    if service is None:
        log.error("job %s fired without a running scheduler service", name)
        return
    service.run_now(name)


def _run_oneoff(name: str, address: str) -> None:
    service = _CURRENT
    if service is not None:
        service.run_now(name, only_address=address)


def trigger_for(job: Any, timezone: str = "UTC") -> Any:
    """The APScheduler trigger of a job (None: on demand only)."""
    if job.every is not None:
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=job.every, timezone=timezone)
    if job.cron is not None:
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger.from_crontab(job.cron, timezone=timezone)
    return None


def schedule_text(job: Any) -> str:
    if job.every is not None:
        return f"every {job.every:g} s"
    if job.cron is not None:
        return f"cron {job.cron}"
    return "on demand"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class SchedulerService:
    def __init__(
        self,
        config: Any,
        emit: Callable[[dict[str, Any]], None] | None = None,
        devices: Callable[[str, list[dict[str, Any]]], None] | None = None,
        metrics: Any = None,
        state: Path | None = None,
        site_of: Callable[[str], dict[str, str] | None] | None = None,
    ) -> None:
        from sentinel.respond.settings import state_dir

        self.config = config
        self.settings: ScheduleSettings = section(config, "schedule")
        self.jobs: dict[str, Any] = section(config, "jobs")
        self.emit = emit
        self.devices = devices
        self.metrics = metrics
        playbooks = section(config, "playbooks")
        self.state = (
            Path(state)
            if state
            else (Path(playbooks.state_dir) if playbooks.state_dir else state_dir())
        )
        if site_of is None:
            from sentinel.pipeline.engine import SiteLabels

            site_of = SiteLabels(config).lookup
        self.site_of = site_of
        self.scheduler: Any = None
        self._lock = threading.Lock()

    @property
    def store_path(self) -> Path:
        return Path(self.settings.store) if self.settings.store else self.state / "jobs.sqlite"

    # -- lifecycle
    def _make_scheduler(self) -> Any:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        return BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(url=f"sqlite:///{self.store_path}"),
                ONEOFF: MemoryJobStore(),
            },
            executors={"default": ThreadPoolExecutor(self.settings.max_workers)},
            job_defaults={
                "coalesce": self.settings.coalesce,
                "max_instances": 1,
                "misfire_grace_time": self.settings.misfire_grace_time,
            },
            timezone=self.settings.timezone,
        )

    def start(self) -> SchedulerService:
        global _CURRENT
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

        if _CURRENT is not None and _CURRENT is not self:
            raise SentinelError("a scheduler service is already running in this process")
        _CURRENT = self
        self.scheduler = self._make_scheduler()
        self.scheduler.add_listener(self._on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self.scheduler.start(paused=True)
        self._sync()
        self.scheduler.resume()
        return self

    def _sync(self) -> None:
        wanted = set()
        for name, job in self.jobs.items():
            trigger = trigger_for(job, self.settings.timezone)
            if not job.enabled or trigger is None:
                continue
            wanted.add(name)
            self.scheduler.add_job(
                _run_scheduled,
                trigger,
                args=[name],
                id=name,
                name=name,
                replace_existing=True,
                jobstore="default",
            )
        for stored in self.scheduler.get_jobs(jobstore="default"):
            if stored.id not in wanted:
                stored.remove()

    def shutdown(self, wait: bool = True) -> None:
        global _CURRENT
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        if _CURRENT is self:
            _CURRENT = None

    def _on_event(self, event: Any) -> None:
        from apscheduler.events import EVENT_JOB_MISSED

        status = "missed" if event.code == EVENT_JOB_MISSED else "already_running"
        log.warning("job %s: %s", event.job_id, status.replace("_", " "))
        if self.metrics is not None:
            self.metrics.jobs.inc(job=event.job_id, status=status)

    # -- running
    def run_now(
        self, name: str, dry_run: bool = False, only_address: str | None = None
    ) -> JobResult:
        """Run a configured job in this thread, hand on its findings, keep its result."""
        job = self.jobs.get(name)
        if job is None:
            raise SentinelError(
                f"no job {name!r} in the config (jobs: {', '.join(self.jobs) or 'none'})"
            )
        ctx = JobContext(
            self.config,
            self.state,
            dry_run=dry_run,
            only_address=only_address,
            observer=self.config.observer.name,
            site_of=self.site_of,
        )
        try:  # its own pseudonymizer: the pipeline's belongs to the pipeline's thread
            ctx.privacy = pseudonymizer_for(self.config, now=time.time())
        except SentinelError as exc:  # no key: nothing may leave the job in clear
            result = JobResult(name, job.type, status="refused", messages=[f"privacy: {exc}"])
        else:
            result = run_job(name, job, ctx)
        log.info("job %s: %s, %d findings", name, result.status, len(result.findings))
        for message in result.messages:
            log.warning("job %s: %s", name, message)
        if self.metrics is not None:
            self.metrics.jobs.inc(job=name, status=result.status)
        if self.emit is not None:
            for doc in result.findings:
                try:
                    self.emit(doc)
                except Exception:
                    log.exception("job %s: could not hand on a finding", name)
        if self.devices is not None and result.devices and job.type == "modbus.inventory":
            self.devices(name, result.devices)
        if not dry_run:
            self._keep(result)
        return result

    def queue_scan(self, name: str, address: str) -> str:
        """Queue a one-off run of inventory job ``name`` for ``address`` (scope-checked)."""
        job = self.jobs.get(name)
        if job is None or job.type != "modbus.inventory":
            raise SentinelError(f"no modbus.inventory job {name!r} in the config")
        address = ScanGuard(job.scopes).check(address)
        if self.scheduler is None or not self.scheduler.running:
            raise SentinelError("the scheduler is not running")
        job_id = f"scan:{name}:{address}"
        self.scheduler.add_job(
            _run_oneoff,
            "date",
            args=[name, address],
            id=job_id,
            name=job_id,
            replace_existing=True,
            jobstore=ONEOFF,
            misfire_grace_time=None,
        )
        return f"{name} for {address}"

    # -- results
    def _last_path(self, name: str) -> Path:
        return self.state / "jobs" / f"{name}.last.json"

    def _keep(self, result: JobResult) -> None:
        path = self._last_path(result.job)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=1, default=str)
        os.replace(tmp, path)

    def last_result(self, name: str) -> dict[str, Any] | None:
        try:
            with open(self._last_path(name), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every configured job: its schedule, next run (from the store) and last result."""
        next_runs: dict[str, float | None] = {}
        if self.scheduler is not None and self.scheduler.running:
            for j in self.scheduler.get_jobs(jobstore="default"):
                nrt = j.next_run_time
                next_runs[j.id] = nrt.timestamp() if nrt else None
        elif self.store_path.exists():
            sched = self._make_scheduler()
            sched.start(paused=True)
            try:
                for j in sched.get_jobs(jobstore="default"):
                    nrt = j.next_run_time
                    next_runs[j.id] = nrt.timestamp() if nrt else None
            finally:
                sched.shutdown(wait=False)
        rows = []
        now = datetime.now(UTC)
        for name, job in self.jobs.items():
            nxt = next_runs.get(name)
            trigger = trigger_for(job, self.settings.timezone)
            if nxt is None and trigger is not None and job.enabled:
                fire = trigger.get_next_fire_time(None, now)
                nxt = fire.timestamp() if fire else None
            last = self.last_result(name)
            rows.append(
                {
                    "name": name,
                    "type": job.type,
                    "enabled": job.enabled,
                    "schedule": schedule_text(job),
                    "next_run": _iso(nxt) if job.enabled else None,
                    "last_status": last["status"] if last else None,
                    "last_run": last["started"] if last else None,
                    "last_findings": last["findings"] if last else None,
                    "description": job.description,
                }
            )
        return rows


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (for tests and shutdown paths)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
