"""Scheduled jobs: what one run returns, the registry by ``type``, and job findings.

A job is a function ``run(name, settings, context) -> JobResult``. ``JobContext`` carries the
config (for site labels and declared assets), the state folder (where jobs keep what they
need between runs, e.g. the last inventory), dry-run and, for one-off runs, a restriction to
one address (``scan.device``).

Findings of jobs are ECS documents like the pipeline's, with Sentinel's rule ids
9000300-9000399 (see ``RULES``), ``event.dataset: sentinel.scan`` and the device in
``destination.ip/port``; the service hands them to the same sinks and playbooks.

``retention`` and ``model.retrain`` belong to ``sentinel.privacy`` and ``sentinel.ml``: the
job calls ``sentinel.privacy.retention.run_retention(config, dry_run=...)`` (what to delete
and when is the config's ``privacy.retention``; its report becomes the job's ``detail`` and
messages) and ``sentinel.ml.retrain.run_retrain(config, windows, options, dry_run=...,
now=...)`` (returning a dict of what it did; it refuses, and the job with it, a window that
is not approved or has not ended). A job's own ``dry_run: true`` counts as ``--dry-run``.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel.findings import Finding, Technique
from sentinel.rules.attack import technique

DETECTOR = "scheduler"
RULESET = "sentinel-scan"


@dataclass(frozen=True)
class JobRule:
    sid: int
    name: str
    severity: str
    technique: Technique


RULES = {
    "new_device": JobRule(
        9000301,
        "Active inventory: new Modbus device",
        "medium",
        technique("T0864"),
    ),
    "identity_changed": JobRule(
        9000302,
        "Active inventory: device identity changed",
        "high",
        technique("T0839"),
    ),
    "firmware_changed": JobRule(
        9000303,
        "Active inventory: firmware or version string changed",
        "high",
        technique("T0857"),
    ),
    "device_gone": JobRule(
        9000304,
        "Active inventory: device no longer answers",
        "medium",
        technique("T0826"),
    ),
    "golden_mismatch": JobRule(
        9000311,
        "Integrity: register differs from its golden value",
        "high",
        technique("T0836"),
    ),
    "unsafe_value": JobRule(
        9000312,
        "Integrity: value outside its safe limits",
        "critical",
        technique("T0836"),
    ),
    "coil_mismatch": JobRule(
        9000313,
        "Integrity: coil or input differs from its golden state",
        "high",
        technique("T0831"),
    ),
    "unreadable": JobRule(
        9000314,
        "Integrity: configured point could not be read",
        "medium",
        technique("T0815"),
    ),
}


@dataclass
class JobResult:
    job: str
    type: str
    status: str = "ok"  # ok | partial | dry_run | refused | failed | skipped
    started: float = field(default_factory=time.time)
    ended: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    requests: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "type": self.type,
            "status": self.status,
            "started": _iso(self.started),
            "ended": _iso(self.ended or time.time()),
            "requests": self.requests,
            "findings": len(self.findings),
            "devices": self.devices,
            "messages": self.messages,
            "planned": self.planned,
            "detail": self.detail,
        }


@dataclass
class JobContext:
    config: Any
    state: Path
    dry_run: bool = False
    only_address: str | None = None  # a one-off scan of one device (scan.device)
    observer: str = "sentinel"
    site_of: Callable[[str], dict[str, str] | None] | None = None
    now: Callable[[], float] = time.time
    # Privacy (``sentinel.privacy.Pseudonymizer``, one per job run: it is not shared with the
    # pipeline's thread): devices outside the inventory leave the job under their pseudonyms.
    privacy: Any = None
    shown: dict[str, str] = field(default_factory=dict)  # clear -> pseudonym, this run

    def show(self, address: str) -> str:
        """``address`` as outputs carry it (its pseudonym when privacy applies to it)."""
        if self.privacy is None or not valid_address(address):
            return address
        out = self.privacy.address(address)
        if out != address:
            self.shown[address] = out
        return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_finding(
    ctx: JobContext,
    job: str,
    kind: str,
    address: str,
    port: int,
    message: str,
    evidence: dict[str, Any],
) -> dict[str, Any]:
    """The ECS document of a job finding about the device at ``address:port``."""
    rule = RULES[kind]
    ts = ctx.now()
    shown = ctx.show(address)  # before the id is derived from it
    finding = Finding(
        ts=ts,
        rule_id=str(rule.sid),
        rule_name=rule.name,
        ruleset=RULESET,
        severity=rule.severity,
        technique=rule.technique,
        message=message,
        detector=DETECTOR,
        uid=f"{job}:{shown}:{port}:{kind}:{evidence.get('point') or evidence.get('unit')}",
        dataset="sentinel.scan",
        evidence={"job": job, **evidence},
    )
    labels = ctx.site_of(address) if ctx.site_of else None
    doc = finding.to_ecs(ctx.observer, labels)
    doc["destination"] = {"ip": shown, "port": port}
    doc["related"] = {"ip": [shown]}
    return doc


# -- the registry
JobFunction = Callable[[str, Any, JobContext], JobResult]


def _modbus_inventory(name: str, settings: Any, ctx: JobContext) -> JobResult:
    from sentinel.schedule.modbus import run_inventory

    return run_inventory(name, settings, ctx)


def _modbus_integrity(name: str, settings: Any, ctx: JobContext) -> JobResult:
    from sentinel.schedule.modbus import run_integrity

    return run_integrity(name, settings, ctx)


def _retention(name: str, settings: Any, ctx: JobContext) -> JobResult:
    from sentinel.privacy.retention import run_retention

    result = JobResult(name, settings.type)
    dry_run = ctx.dry_run or settings.dry_run
    report = run_retention(ctx.config, dry_run=dry_run)
    result.detail = {
        "counts": report.counts(),
        "actions": [vars(a) for a in report.actions],
        "notes": list(report.notes),
    }
    result.messages += report.notes
    result.status = "dry_run" if dry_run else "ok"
    return result


def _retrain(name: str, settings: Any, ctx: JobContext) -> JobResult:
    from sentinel.ml.retrain import run_retrain  # scikit-learn: imported only when it runs

    result = JobResult(name, settings.type)
    dry_run = ctx.dry_run or settings.dry_run
    windows = [w.model_dump() for w in settings.windows]
    result.detail = dict(
        run_retrain(ctx.config, windows, dict(settings.options), dry_run=dry_run, now=ctx.now())
    )
    result.status = "dry_run" if dry_run else "ok"
    return result


JOB_TYPES: dict[str, JobFunction] = {
    "modbus.inventory": _modbus_inventory,
    "modbus.integrity": _modbus_integrity,
    "retention": _retention,
    "model.retrain": _retrain,
}


def run_job(name: str, settings: Any, ctx: JobContext) -> JobResult:
    """Run one job now; a job never raises (its result says what went wrong)."""
    from sentinel.errors import SentinelError

    func = JOB_TYPES[settings.type]
    try:
        result = func(name, settings, ctx)
    except SentinelError as exc:
        result = JobResult(name, settings.type, status="refused", messages=[str(exc)])
    except Exception as exc:  # a bug must not take the scheduler down
        import logging

        logging.getLogger(__name__).exception("job %s failed", name)
        result = JobResult(
            name, settings.type, status="failed", messages=[f"{type(exc).__name__}: {exc}"]
        )
    result.ended = time.time()
    if ctx.privacy is not None:
        _pseudonymize(result, ctx)
    return result


_ADDRESS_TOKEN = re.compile(  # IPv4 (a port may follow), or IPv6
    r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\w|\.\d)"
    r"|(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:.])"
)


def _pseudonymize(result: JobResult, ctx: JobContext) -> None:
    """What a job returns, as the pipeline writes it with privacy on: devices outside the
    inventory by their pseudonyms (``job_finding`` already used them), their identity strings
    (serials, names) as the ``identifiers`` setting says, in findings, device records,
    messages and plans."""
    p = ctx.privacy
    shown = ctx.shown  # clear text -> what replaces it, for the free-text fields

    def identity(ident: dict[str, Any]) -> dict[str, Any]:
        out = p.scrub_mapping(ident)
        for k, v in ident.items():
            if isinstance(v, str) and v and out.get(k) != v:
                shown[v] = out.get(k) or "(dropped)"
        return out

    def scrub_ids(fields: dict[str, Any]) -> None:
        if fields.get("identity"):
            fields["identity"] = identity(fields["identity"])
        if fields.get("server_id") is not None:
            sid = identity({"server_id": fields.pop("server_id")})
            fields.update(sid)
        for name, change in (fields.get("changes") or {}).items():
            for side in ("before", "after"):
                if isinstance(change.get(side), str):
                    change[side] = identity({name: change[side]}).get(name)

    devices = []
    for rec in result.devices:
        rec = dict(rec, address=ctx.show(str(rec.get("address"))))
        if p.is_pseudonym(rec["address"]):  # outside the inventory
            scrub_ids(rec)
        devices.append(rec)
    result.devices = devices
    for doc in result.findings:
        if p.is_pseudonym(str((doc.get("destination") or {}).get("ip", ""))):
            scrub_ids((doc.get("sentinel") or {}).get("evidence") or {})
    longest_first = sorted(shown, key=len, reverse=True)

    def address_token(m: re.Match[str]) -> str:
        return ctx.show(m.group(0))  # not an address (a version string): unchanged

    def text(value: str) -> str:
        value = _ADDRESS_TOKEN.sub(address_token, value)  # whatever the job wrote about
        for clear in longest_first:  # identity strings
            if clear in value:
                value = re.sub(rf"(?<!\w){re.escape(clear)}(?!\w)", shown[clear], value)
        return value

    for doc in result.findings:
        doc["message"] = text(doc.get("message", ""))
    result.messages = [text(m) for m in result.messages]
    result.planned = [text(m) for m in result.planned]


def valid_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
