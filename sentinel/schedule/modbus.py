"""``modbus.inventory`` and ``modbus.integrity``: read-only active checks of OT devices.

**Inventory.** For each target (and, with ``discover``, each address of the scopes, bounded)
the job asks, through ``ScanSession`` (read-only, rate-limited, one request in flight per
device, latency abort): Read Device Identification (FC 43 / MEI 14, basic then regular
objects, following ``more follows``), Report Server ID (FC 17) and the configured identity
registers (FC 3/4). An exception response is an answer ("not supported"), not a failure. The
inventory is kept in ``<state>/inventory/<job>.json``; differences from the last one become
findings: a new device (9000301; not on the first run unless ``report_first_run``), a changed
identity (vendor, product, model, server id: 9000302), a changed firmware or version string
(``MajorMinorRevision`` or an identity register: 9000303), a device that no longer answers
(9000304). A device whose scan was aborted (latency) keeps its last record and raises nothing.

**Integrity.** For each target point (plus, with ``use_asset_limits``, the config's asset
registers that have ``min``/``max``; a point with a golden value and no limits of its own
takes its asset register's) the job reads the value and compares: a value other than
its golden value (9000311, coils and discrete inputs 9000313), outside the safe limits
(9000312, critical), or unreadable (9000314).

Nothing is written to any device, ever: ``safety.ReadOnlyModbusClient`` refuses it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

from sentinel.schedule.jobs import JobContext, JobResult, job_finding
from sentinel.schedule.safety import DeviceError, LatencyAbort, ScanGuard, ScanSession
from sentinel.schedule.settings import IntegrityJob, IntegrityPoint, InventoryJob, ModbusTarget

# Read Device Identification object ids (spec V1.1b3 section 6.21, table of objects).
DEVICE_ID_OBJECTS = {
    0: "VendorName",
    1: "ProductCode",
    2: "MajorMinorRevision",
    3: "VendorUrl",
    4: "ProductName",
    5: "ModelName",
    6: "UserApplicationName",
}
FIRMWARE_OBJECTS = {"MajorMinorRevision"}
MAX_MORE_FOLLOWS = 8
MAX_TEXT = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _text(raw: Any) -> str:
    if isinstance(raw, list):
        raw = b"".join(x for x in raw if isinstance(x, bytes))
    if not isinstance(raw, bytes):
        return ""
    return _CONTROL.sub("", raw.decode("latin-1"))[:MAX_TEXT].strip()


def _session(job: InventoryJob | IntegrityJob, ctx: JobContext) -> ScanSession:
    return ScanSession(
        ScanGuard(job.scopes),
        rate=job.rate,
        timeout=job.timeout,
        connect_timeout=job.connect_timeout,
        max_latency=job.max_latency,
        latency_factor=job.latency_factor,
        dry_run=ctx.dry_run or job.dry_run,
    )


def _targets(
    job: InventoryJob | IntegrityJob, guard: ScanGuard, ctx: JobContext
) -> list[ModbusTarget]:
    """The job's targets (and discovered addresses), every one checked against the scopes
    before anything is sent; one outside refuses the whole run (``ScanSafetyError``)."""
    targets = list(job.targets)
    if isinstance(job, InventoryJob) and job.discover is not None:
        known = {(t.address, t.port) for t in targets}
        d = job.discover
        for scope in job.scopes:
            net = ipaddress.ip_network(scope)
            hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
            for addr in hosts[: d.max_hosts]:
                if (str(addr), d.port) not in known:
                    targets.append(ModbusTarget(address=str(addr), port=d.port, unit=d.unit))
    for t in targets:
        guard.check(t.address)
    if ctx.only_address is not None:
        only = guard.check(ctx.only_address)
        chosen = [t for t in targets if t.address == only]
        if not chosen:
            port = job.discover.port if isinstance(job, InventoryJob) and job.discover else 502
            unit = job.discover.unit if isinstance(job, InventoryJob) and job.discover else 1
            chosen = [ModbusTarget(address=only, port=port, unit=unit)]
        targets = chosen
    return targets


def _key(t: ModbusTarget | dict[str, Any]) -> str:
    if isinstance(t, dict):
        return f"{t['address']}:{t['port']}/{t['unit']}"
    return f"{t.address}:{t.port}/{t.unit}"


# -- inventory
def _identify(session: ScanSession, t: ModbusTarget) -> dict[str, Any]:
    """One device's identity record (raises DeviceError when it does not answer at all)."""
    from pymodbus.pdu.mei_message import ReadDeviceInformationRequest
    from pymodbus.pdu.other_message import ReportDeviceIdRequest
    from pymodbus.pdu.register_message import (
        ReadHoldingRegistersRequest,
        ReadInputRegistersRequest,
    )

    record: dict[str, Any] = {"address": t.address, "port": t.port, "unit": t.unit}
    if t.name:
        record["name"] = t.name
    identity: dict[str, str] = {}
    answered = False
    for read_code in (1, 2):  # basic, then regular objects
        object_id = 0 if read_code == 1 else 3
        for _ in range(MAX_MORE_FOLLOWS):
            pdu = ReadDeviceInformationRequest(read_code, object_id, dev_id=t.unit)
            resp = session.request(t.address, t.port, pdu, f"FC 43/14 read code {read_code}")
            if resp is None:
                break
            answered = True
            if resp.isError():
                break
            for oid, raw in (getattr(resp, "information", None) or {}).items():
                name = DEVICE_ID_OBJECTS.get(oid, f"object_{oid}")
                identity[name] = _text(raw)
            if not getattr(resp, "more_follows", 0):
                break
            object_id = int(getattr(resp, "next_object_id", 0))
        if read_code == 1 and not identity:
            break  # no basic identification: do not ask for more
    record["identity"] = identity
    resp = session.request(t.address, t.port, ReportDeviceIdRequest(dev_id=t.unit), "FC 17")
    if resp is not None:
        answered = True
        if not resp.isError():
            raw = getattr(resp, "identifier", b"") or b""
            record["server_id"] = _text(raw) if _printable(raw) else raw.hex()
            record["run_indicator"] = bool(getattr(resp, "status", False))
    registers: dict[str, str] = {}
    for reg in t.identity_registers:
        cls = ReadHoldingRegistersRequest if reg.table == "holding" else ReadInputRegistersRequest
        pdu = cls(address=reg.address, count=reg.count, dev_id=t.unit)
        resp = session.request(t.address, t.port, pdu, f"{reg.table} {reg.address}+{reg.count}")
        if resp is None:
            continue
        answered = True
        if resp.isError():
            registers[reg.name] = f"exception {getattr(resp, 'exception_code', '?')}"
            continue
        values = list(resp.registers)[: reg.count]
        if reg.encoding == "ascii":
            raw = b"".join(v.to_bytes(2, "big") for v in values)
            registers[reg.name] = _text(raw.rstrip(b"\x00"))
        else:
            registers[reg.name] = " ".join(str(v) for v in values)
    if registers:
        record["registers"] = registers
    if not answered and not session.dry_run:
        raise DeviceError(f"{t.address}:{t.port}: no answer")
    return record


def _printable(raw: bytes) -> bool:
    return bool(raw) and all(32 <= b < 127 for b in raw)


def _state_file(ctx: JobContext, job: str) -> Path:
    return ctx.state / "inventory" / f"{job}.json"


def _load_state(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _save_state(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_inventory(name: str, job: InventoryJob, ctx: JobContext) -> JobResult:
    result = JobResult(name, job.type)
    session = _session(job, ctx)
    targets = _targets(job, session.guard, ctx)  # raises before any I/O when out of scope
    listed = {(t.address, t.port) for t in job.targets}
    current: dict[str, dict[str, Any]] = {}
    aborted: set[str] = set()
    unreachable: set[str] = set()
    try:
        for t in targets:
            try:
                record = _identify(session, t)
            except LatencyAbort as exc:
                aborted.add(_key(t))
                result.messages.append(str(exc))
                continue
            except DeviceError as exc:
                unreachable.add(_key(t))
                if (t.address, t.port) in listed or ctx.only_address is not None:
                    result.messages.append(str(exc))
                continue
            if not session.dry_run:
                record["scanned_at"] = result.started
                current[_key(t)] = record
    finally:
        session.close()
    result.requests = session.requests
    result.planned = session.planned
    if session.dry_run:
        result.status = "dry_run"
        return result
    result.devices = sorted(current.values(), key=lambda r: (r["address"], r["port"], r["unit"]))
    path = _state_file(ctx, name)
    previous = _load_state(path)
    before: dict[str, dict[str, Any]] = (previous or {}).get("devices", {})
    first = previous is None
    scanned = {_key(t) for t in targets}
    for key, rec in current.items():
        old = before.get(key)
        if old is None:
            if not first or job.report_first_run:
                result.findings.append(_found(ctx, name, "new_device", rec, None))
            continue
        result.findings += _changes(ctx, name, old, rec)
    for key, old in before.items():
        # Gone: scanned in this run, neither answering nor left alone after a latency abort.
        if key in scanned and key not in current and key not in aborted:
            result.findings.append(_found(ctx, name, "device_gone", old, None))
    kept = {k: v for k, v in before.items() if k in aborted or k not in scanned}
    _save_state(path, {"job": name, "updated": result.started, "devices": {**kept, **current}})
    if aborted or (unreachable & {_key(t) for t in job.targets}):
        result.status = "partial"
    return result


def _found(
    ctx: JobContext, job: str, kind: str, rec: dict[str, Any], detail: dict[str, Any] | None
) -> dict[str, Any]:
    addr, port, unit = rec["address"], rec["port"], rec["unit"]
    ident = rec.get("identity") or {}
    what = (
        " ".join(
            v
            for v in (
                ident.get("VendorName"),
                ident.get("ProductCode"),
                ident.get("MajorMinorRevision"),
            )
            if v
        )
        or rec.get("server_id")
        or "unidentified device"
    )
    messages = {
        "new_device": f"new Modbus device {addr}:{port} unit {unit}: {what}",
        "device_gone": f"Modbus device {addr}:{port} unit {unit} ({what}) no longer answers",
    }
    if kind in messages:
        message = messages[kind]
    else:
        changes = detail or {}
        message = f"Modbus device {addr}:{port} unit {unit}: " + "; ".join(
            f"{k} changed from {v['before']!r} to {v['after']!r}" for k, v in changes.items()
        )
    evidence: dict[str, Any] = {"unit": unit, "identity": ident}
    if rec.get("server_id"):
        evidence["server_id"] = rec["server_id"]
    if detail:
        evidence["changes"] = detail
    return job_finding(ctx, job, kind, addr, port, message, evidence)


def _changes(
    ctx: JobContext, job: str, old: dict[str, Any], new: dict[str, Any]
) -> list[dict[str, Any]]:
    identity: dict[str, Any] = {}
    firmware: dict[str, Any] = {}
    old_id, new_id = old.get("identity") or {}, new.get("identity") or {}
    for k in sorted(set(old_id) | set(new_id)):
        if old_id.get(k) != new_id.get(k):
            target = firmware if k in FIRMWARE_OBJECTS else identity
            target[k] = {"before": old_id.get(k), "after": new_id.get(k)}
    old_sid, new_sid = old.get("server_id"), new.get("server_id")
    if old_sid != new_sid:
        change = {"before": old_sid, "after": new_sid}
        rev = firmware.get("MajorMinorRevision")
        # Many devices put the version into their server id: then it is a firmware change.
        if (
            rev
            and isinstance(old_sid, str)
            and isinstance(rev["before"], str)
            and isinstance(rev["after"], str)
            and rev["before"]
            and old_sid.replace(rev["before"], rev["after"]) == new_sid
        ):
            firmware["server_id"] = change
        else:
            identity["server_id"] = change
    old_reg, new_reg = old.get("registers") or {}, new.get("registers") or {}
    for k in sorted(set(old_reg) | set(new_reg)):
        if old_reg.get(k) != new_reg.get(k):
            firmware[k] = {"before": old_reg.get(k), "after": new_reg.get(k)}
    out = []
    if identity:
        out.append(_found(ctx, job, "identity_changed", new, identity))
    if firmware:
        out.append(_found(ctx, job, "firmware_changed", new, firmware))
    return out


# -- integrity
def _points(job: IntegrityJob, t: ModbusTarget, config: Any) -> list[IntegrityPoint]:
    points = {(p.table, p.address): p for p in t.points}
    if job.use_asset_limits:
        for asset in getattr(config, "assets", []) or []:
            if asset.address != t.address:
                continue
            for r in asset.registers:
                if r.table != "holding" or (r.min is None and r.max is None):
                    continue
                for addr in range(r.start, min(r.end, r.start + 124) + 1):
                    given = points.get(("holding", addr))
                    if given is not None:
                        if given.min is None and given.max is None:  # golden only: add limits
                            points[("holding", addr)] = given.model_copy(
                                update={"min": r.min, "max": r.max}
                            )
                        continue
                    name = (
                        r.name if r.start == r.end and r.name else f"{r.name or 'holding'}[{addr}]"
                    )
                    points[("holding", addr)] = IntegrityPoint(
                        name=name, table="holding", address=addr, min=r.min, max=r.max
                    )
    return sorted(points.values(), key=lambda p: (p.table, p.address))


def _read_point(session: ScanSession, t: ModbusTarget, p: IntegrityPoint) -> int | bool | None:
    from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
    from pymodbus.pdu.register_message import (
        ReadHoldingRegistersRequest,
        ReadInputRegistersRequest,
    )

    cls = {
        "coils": ReadCoilsRequest,
        "discretes": ReadDiscreteInputsRequest,
        "holding": ReadHoldingRegistersRequest,
        "input": ReadInputRegistersRequest,
    }[p.table]
    resp = session.request(
        t.address,
        t.port,
        cls(address=p.address, count=1, dev_id=t.unit),
        f"{p.table} {p.address} ({p.name})",
    )
    if resp is None:
        return None
    if resp.isError():
        raise DeviceError(f"exception {getattr(resp, 'exception_code', '?')}")
    if p.table in ("coils", "discretes"):
        bits = list(resp.bits)
        if not bits:
            raise DeviceError("empty answer")
        return bool(bits[0])
    regs = list(resp.registers)
    if not regs:
        raise DeviceError("empty answer")
    return int(regs[0])


def run_integrity(name: str, job: IntegrityJob, ctx: JobContext) -> JobResult:
    result = JobResult(name, job.type)
    session = _session(job, ctx)
    targets = _targets(job, session.guard, ctx)
    checked = 0
    problems = False
    try:
        for t in targets:
            device: dict[str, Any] = {
                "address": t.address,
                "port": t.port,
                "unit": t.unit,
                "points": {},
            }
            for p in _points(job, t, ctx.config):
                try:
                    value = _read_point(session, t, p)
                except LatencyAbort as exc:
                    result.messages.append(str(exc))
                    problems = True
                    break
                except DeviceError as exc:
                    problems = True
                    device["points"][p.name] = {"error": str(exc)}
                    result.findings.append(
                        job_finding(
                            ctx,
                            name,
                            "unreadable",
                            t.address,
                            t.port,
                            f"integrity check of {p.name} ({p.table} {p.address}) on "
                            f"{t.address} unit {t.unit} failed: {exc}",
                            {
                                "unit": t.unit,
                                "point": p.name,
                                "table": p.table,
                                "address": p.address,
                                "error": str(exc),
                            },
                        )
                    )
                    if "cannot connect" in str(exc):
                        break
                    continue
                if value is None:
                    continue
                checked += 1
                device["points"][p.name] = {"value": value}
                result.findings += _compare(ctx, name, t, p, value)
            if not session.dry_run:
                result.devices.append(device)
    finally:
        session.close()
    result.requests = session.requests
    result.planned = session.planned
    result.detail = {"points_checked": checked}
    if session.dry_run:
        result.status = "dry_run"
    elif problems:
        result.status = "partial"
    return result


def _compare(
    ctx: JobContext, job: str, t: ModbusTarget, p: IntegrityPoint, value: int | bool
) -> list[dict[str, Any]]:
    out = []
    evidence = {
        "unit": t.unit,
        "point": p.name,
        "table": p.table,
        "address": p.address,
        "value": value,
    }
    where = f"{p.name} ({p.table} {p.address}) on {t.address} unit {t.unit}"
    if p.table in ("coils", "discretes"):
        if p.golden is not None and bool(value) != bool(p.golden):
            out.append(
                job_finding(
                    ctx,
                    job,
                    "coil_mismatch",
                    t.address,
                    t.port,
                    f"{where} is {_onoff(value)}, expected {_onoff(p.golden)}",
                    {**evidence, "golden": bool(p.golden)},
                )
            )
        return out
    low = p.min is not None and value < p.min
    high = p.max is not None and value > p.max
    if low or high:
        out.append(
            job_finding(
                ctx,
                job,
                "unsafe_value",
                t.address,
                t.port,
                f"{where} is {value}, outside its safe limits [{p.min}, {p.max}]",
                {**evidence, "min": p.min, "max": p.max},
            )
        )
    if p.golden is not None and value != int(p.golden):
        out.append(
            job_finding(
                ctx,
                job,
                "golden_mismatch",
                t.address,
                t.port,
                f"{where} is {value}, its golden value is {int(p.golden)}",
                {**evidence, "golden": int(p.golden)},
            )
        )
    return out


def _onoff(value: Any) -> str:
    return "on" if value else "off"
