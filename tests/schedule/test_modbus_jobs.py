"""``modbus.inventory`` and ``modbus.integrity`` against real pymodbus servers on loopback,
and the scan safety rules: read-only, scopes, rate limit, one request in flight per device,
latency abort, dry-run."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from pydantic import ValidationError

from sentinel.config import Asset, Config, RegisterRange
from sentinel.schedule import safety
from sentinel.schedule.jobs import JobContext, run_job
from sentinel.schedule.safety import ScanSafetyError, device_lock, read_only_client
from sentinel.schedule.settings import (
    IntegrityJob,
    IntegrityPoint,
    InventoryJob,
    ModbusTarget,
    RetentionJob,
    RetrainJob,
)


def _inventory(port: int, **kw) -> InventoryJob:
    base = dict(
        type="modbus.inventory",
        scopes=["127.0.0.0/29"],
        discover={"port": port, "unit": 1},
        targets=[
            {
                "address": "127.0.0.2",
                "port": port,
                "name": "ahu",
                "identity_registers": [{"name": "firmware", "address": 2, "count": 2}],
            },
        ],
        rate=50,
        timeout=1.0,
        connect_timeout=0.5,
    )
    base.update(kw)
    return InventoryJob.model_validate(base)


def _ctx(tmp_path: Path, config: Config | None = None, **kw) -> JobContext:
    return JobContext(config or Config(), tmp_path / "state", observer="sensor-1", **kw)


def test_inventory_finds_devices_then_reports_differences(plcs, tmp_path: Path) -> None:
    port = plcs.port
    job = _inventory(port)
    first = run_job("inv", job, _ctx(tmp_path))
    assert first.status == "ok", first.messages
    assert first.findings == []  # the first inventory is the baseline
    devices = {d["address"]: d for d in first.devices}
    assert sorted(devices) == ["127.0.0.2", "127.0.0.3"]
    assert devices["127.0.0.2"]["identity"] == {
        "VendorName": "Acme Controls",
        "ProductCode": "AHU-3000",
        "MajorMinorRevision": "2.1.0",
    }
    assert devices["127.0.0.2"]["server_id"] == "Acme Controls-AHU-3000-2.1.0"
    assert devices["127.0.0.2"]["run_indicator"] is True
    # holding 2-3 (150, 80) as ASCII: control characters dropped, "P" (80) kept
    assert devices["127.0.0.2"]["registers"] == {"firmware": "P"}
    assert devices["127.0.0.3"]["identity"]["VendorName"] == "Volta"
    # Only read-only function codes reached the devices.
    assert set(plcs["127.0.0.2"].requests) <= {3, 17, 43}
    assert set(plcs["127.0.0.3"].requests) <= {17, 43}

    # Now: .3 gets new firmware, a rogue device appears on .4, .2 goes away.
    plcs.start("127.0.0.3", vendor="Volta", product="GasMon", revision="6.6")
    plcs.start("127.0.0.4", vendor="Rogue", product="Pi", revision="0")
    plcs.stop("127.0.0.2")
    second = run_job("inv", job, _ctx(tmp_path))
    got = sorted((f["rule"]["id"], f["destination"]["ip"], f["message"]) for f in second.findings)
    assert got == [
        ("9000301", "127.0.0.4", f"new Modbus device 127.0.0.4:{port} unit 1: Rogue Pi 0"),
        (
            "9000303",
            "127.0.0.3",
            f"Modbus device 127.0.0.3:{port} unit 1: MajorMinorRevision changed from '1.0' to "
            "'6.6'; server_id changed from 'Volta-GasMon-1.0' to 'Volta-GasMon-6.6'",
        ),
        (
            "9000304",
            "127.0.0.2",
            f"Modbus device 127.0.0.2:{port} unit 1 (Acme Controls AHU-3000 2.1.0) no longer "
            "answers",
        ),
    ]
    assert second.status == "partial"  # a listed target did not answer
    fw = next(f for f in second.findings if f["rule"]["id"] == "9000303")
    assert fw["event"]["dataset"] == "sentinel.scan"
    assert fw["sentinel"]["evidence"]["changes"] == {
        "MajorMinorRevision": {"before": "1.0", "after": "6.6"},
        "server_id": {"before": "Volta-GasMon-1.0", "after": "Volta-GasMon-6.6"},
    }
    assert fw["threat"]["technique"]["id"] == ["T0857"]
    # A third run with nothing changed is quiet (the gone device is not reported twice).
    third = run_job("inv", job, _ctx(tmp_path))
    assert third.findings == []


def test_inventory_can_report_the_first_run(plcs, tmp_path: Path) -> None:
    job = _inventory(plcs.port, report_first_run=True)
    result = run_job("inv", job, _ctx(tmp_path))
    assert sorted(f["destination"]["ip"] for f in result.findings) == ["127.0.0.2", "127.0.0.3"]
    assert {f["rule"]["id"] for f in result.findings} == {"9000301"}


def test_integrity_catches_a_tampered_setpoint(plcs, tmp_path: Path) -> None:
    port = plcs.port
    config = Config(
        assets=[
            Asset(
                address="127.0.0.2",
                registers=[
                    RegisterRange(
                        table="holding",
                        start=1,
                        end=1,
                        name="humidity_setpoint",
                        writable=True,
                        min=400,
                        max=600,
                    ),
                ],
            )
        ]
    )
    job = IntegrityJob(
        type="modbus.integrity",
        scopes=["127.0.0.2/32"],
        targets=[
            ModbusTarget(
                address="127.0.0.2",
                port=port,
                points=[
                    IntegrityPoint(name="temp_setpoint", address=0, golden=215, min=180, max=260),
                    IntegrityPoint(name="supply_fan_run", table="coils", address=0, golden=True),
                ],
            )
        ],
        rate=50,
    )
    clean = run_job("integ", job, _ctx(tmp_path, config))
    assert clean.status == "ok" and clean.findings == []
    assert clean.detail == {"points_checked": 3}
    assert clean.devices[0]["points"] == {
        "humidity_setpoint": {"value": 500},
        "supply_fan_run": {"value": True},
        "temp_setpoint": {"value": 215},
    }
    plc = plcs["127.0.0.2"]
    plc.attacker_write(0, 999)  # the attacker's write to the setpoint
    plc.attacker_write(1, 700)
    tampered = run_job("integ", job, _ctx(tmp_path, config))
    got = sorted(
        (f["rule"]["id"], f["sentinel"]["severity_label"], f["message"]) for f in tampered.findings
    )
    assert got == [
        (
            "9000311",
            "high",
            "temp_setpoint (holding 0) on 127.0.0.2 unit 1 is 999, its golden value is 215",
        ),
        (
            "9000312",
            "critical",
            "humidity_setpoint (holding 1) on 127.0.0.2 unit 1 is 700, outside its safe limits "
            "[400, 600]",
        ),
        (
            "9000312",
            "critical",
            "temp_setpoint (holding 0) on 127.0.0.2 unit 1 is 999, outside its safe limits "
            "[180, 260]",
        ),
    ]
    assert all(f["destination"] == {"ip": "127.0.0.2", "port": port} for f in tampered.findings)
    # The job itself never wrote: the only writes the PLC saw are the attacker's two.
    assert plc.requests.count(6) == 2


def test_a_golden_point_keeps_its_asset_limits(plcs, tmp_path: Path) -> None:
    """A point with only a golden value takes the safe limits of its asset register."""
    config = Config(
        assets=[
            Asset(
                address="127.0.0.2",
                registers=[
                    RegisterRange(
                        table="holding", start=1, end=1, name="humidity_setpoint", min=400, max=600
                    )
                ],
            )
        ]
    )
    point = IntegrityPoint(name="humidity", address=1, golden=500)
    target = ModbusTarget(address="127.0.0.2", port=plcs.port, points=[point])
    job = IntegrityJob(type="modbus.integrity", scopes=["127.0.0.2/32"], targets=[target], rate=50)
    plcs["127.0.0.2"].attacker_write(1, 700)
    result = run_job("integ", job, _ctx(tmp_path, config))
    assert result.detail == {"points_checked": 1}
    assert sorted((f["rule"]["id"], f["message"]) for f in result.findings) == [
        ("9000311", "humidity (holding 1) on 127.0.0.2 unit 1 is 700, its golden value is 500"),
        (
            "9000312",
            "humidity (holding 1) on 127.0.0.2 unit 1 is 700, outside its safe limits [400, 600]",
        ),
    ]
    alone = job.model_copy(update={"use_asset_limits": False})
    result = run_job("integ", alone, _ctx(tmp_path, config))
    assert [f["rule"]["id"] for f in result.findings] == ["9000311"]


def test_integrity_reports_an_unreadable_device(tmp_path: Path) -> None:
    from .conftest import free_port

    job = IntegrityJob(
        type="modbus.integrity",
        scopes=["127.0.0.5/32"],
        targets=[
            {
                "address": "127.0.0.5",
                "port": free_port(("127.0.0.5",)),
                "points": [{"name": "sp", "address": 0, "golden": 1}],
            }
        ],
        connect_timeout=0.5,
    )
    result = run_job("integ", job, _ctx(tmp_path))
    assert result.status == "partial"
    assert [f["rule"]["id"] for f in result.findings] == ["9000314"]
    assert "cannot connect" in result.findings[0]["message"]


# -- safety
def test_read_only_client_refuses_writes_before_sending(plcs) -> None:
    plc = plcs["127.0.0.2"]
    client = read_only_client("127.0.0.2", plcs.port, 1.0)
    assert client.connect()
    try:
        for call in (
            lambda: client.write_register(0, 1, device_id=1),
            lambda: client.write_coil(0, False, device_id=1),
            lambda: client.write_registers(0, [1, 2], device_id=1),
            lambda: client.diag_restart_communication(False, device_id=1),
            lambda: client.diag_force_listen_only(device_id=1),
            lambda: client.mask_write_register(address=0, and_mask=0, or_mask=1, device_id=1),
            lambda: client.readwrite_registers(
                read_address=0, read_count=1, write_address=0, values=[1], device_id=1
            ),
        ):
            with pytest.raises(ScanSafetyError, match="not read-only"):
                call()
        assert not client.read_holding_registers(0, count=1, device_id=1).isError()
    finally:
        client.close()
    assert plc.requests == [3]  # the read; nothing else left the client


def test_mei_other_than_14_is_refused() -> None:
    from pymodbus.pdu.mei_message import ReadDeviceInformationRequest

    pdu = ReadDeviceInformationRequest(1, 0)
    pdu.sub_function_code = 13  # CANopen general reference: not a read-only identification
    with pytest.raises(ScanSafetyError, match="MEI type 14 only"):
        safety.check_read_only(pdu)


def test_target_outside_the_scope_is_refused(plcs, tmp_path: Path) -> None:
    port = plcs.port
    with pytest.raises(ValidationError, match="outside the job's scopes"):
        InventoryJob(
            type="modbus.inventory",
            scopes=["127.0.0.3/32"],
            targets=[{"address": "127.0.0.2", "port": port}],
        )
    # Built around validation (as code could), the job still refuses before sending anything.
    sneaky = InventoryJob.model_construct(
        type="modbus.inventory",
        scopes=["127.0.0.3/32"],
        discover=None,
        dry_run=False,
        targets=[ModbusTarget(address="127.0.0.2", port=port)],
        rate=5.0,
        timeout=1.0,
        connect_timeout=1.0,
        max_latency=1.0,
        latency_factor=5.0,
        report_first_run=False,
    )
    result = run_job("sneaky", sneaky, _ctx(tmp_path))
    assert result.status == "refused"
    assert result.messages == ["127.0.0.2 is outside the job's scopes (127.0.0.3/32)"]
    assert plcs["127.0.0.2"].requests == [] and plcs["127.0.0.3"].requests == []
    # A one-off scan of an address outside the scope (scan.device) is refused the same way.
    job = _inventory(port)
    result = run_job("inv", job, _ctx(tmp_path, only_address="10.1.2.3"))
    assert result.status == "refused"
    assert result.messages == ["10.1.2.3 is outside the job's scopes (127.0.0.0/29)"]


def test_discover_is_bounded() -> None:
    with pytest.raises(ValidationError, match="more than max_hosts"):
        InventoryJob(type="modbus.inventory", scopes=["127.0.0.0/8"], discover={"port": 502})


def test_dry_run_sends_nothing(plcs, tmp_path: Path) -> None:
    result = run_job("inv", _inventory(plcs.port), _ctx(tmp_path, dry_run=True))
    assert result.status == "dry_run"
    assert result.requests == 0 and result.findings == []
    assert f"127.0.0.2:{plcs.port} unit 1: FC 43/14 read code 1" in result.planned
    assert f"127.0.0.6:{plcs.port} unit 1: FC 17" in result.planned
    assert plcs["127.0.0.2"].requests == [] and plcs["127.0.0.3"].requests == []
    assert not (tmp_path / "state" / "inventory").exists()


def test_latency_rise_aborts_the_device(plcs, tmp_path: Path) -> None:
    port = plcs.port
    ok = run_job("inv", _inventory(port), _ctx(tmp_path))
    assert ok.status == "ok"
    slow = plcs.start("127.0.0.2", delay=0.4, slow_after=3)  # answers 4 and later: 400 ms
    job = _inventory(port, max_latency=0.25)
    result = run_job("inv", job, _ctx(tmp_path))
    plcs.start("127.0.0.2")
    assert result.status == "partial"
    assert any("aborted" in m and "127.0.0.2" in m for m in result.messages)
    assert len(slow.requests) == 4  # nothing sent after the slow answer
    # The aborted device is not "gone": no finding, its last record is kept.
    assert result.findings == []
    again = run_job("inv", _inventory(port), _ctx(tmp_path))
    assert again.findings == []


def test_rate_limiter_spaces_requests(monkeypatch) -> None:
    clock = [100.0]
    sleeps: list[float] = []
    monkeypatch.setattr(safety.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(safety.time, "sleep", lambda s: sleeps.append(round(s, 6)))
    limiter = safety.RateLimiter(rate=5)
    for _ in range(4):
        limiter.wait()
    assert sleeps == [0.2, 0.4, 0.6]


def test_one_request_in_flight_per_device(plcs, tmp_path: Path) -> None:
    port = plcs.port
    plc = plcs["127.0.0.2"]
    job = IntegrityJob(
        type="modbus.integrity",
        scopes=["127.0.0.2/32"],
        targets=[
            {
                "address": "127.0.0.2",
                "port": port,
                "points": [{"name": "sp", "address": 0, "golden": 215}],
            }
        ],
    )
    lock = device_lock("127.0.0.2", port)
    assert lock is device_lock("127.0.0.2", port)  # one lock per device, process-wide
    results = []
    with lock:  # another job's request is in flight
        t = threading.Thread(target=lambda: results.append(run_job("i", job, _ctx(tmp_path))))
        t.start()
        time.sleep(0.3)
        assert plc.requests == []  # the job waits for the device
    t.join(10)
    assert results[0].status == "ok" and plc.requests == [3]


# -- retention and retraining belong to sentinel.privacy and sentinel.ml
def test_retrain_only_from_declared_windows() -> None:
    with pytest.raises(ValidationError):
        RetrainJob(type="model.retrain", windows=[])  # only from approved windows


def test_retention_delegates_to_privacy(tmp_path, monkeypatch) -> None:
    calls = []

    report = SimpleNamespace(
        actions=[SimpleNamespace(data_class="captures", store="captures", target="x.pcap")],
        notes=["spool in use: left alone"],
        counts=lambda: {"captures": 1},
    )
    fake = ModuleType("sentinel.privacy.retention")
    fake.run_retention = lambda config, dry_run: calls.append(dry_run) or report
    monkeypatch.setitem(sys.modules, "sentinel.privacy.retention", fake)
    r = run_job("ret", RetentionJob(type="retention"), _ctx(tmp_path, dry_run=True))
    assert r.status == "dry_run" and calls == [True]
    assert r.detail["counts"] == {"captures": 1}
    assert r.detail["actions"][0]["target"] == "x.pcap"
    assert r.messages == ["spool in use: left alone"]


def test_retention_with_the_real_privacy_package(tmp_path) -> None:
    pytest.importorskip("sentinel.privacy.retention")
    config = Config()  # no privacy section: its defaults keep everything in place
    r = run_job("ret", RetentionJob(type="retention"), _ctx(tmp_path, config, dry_run=True))
    assert r.status == "dry_run", r.messages
    assert isinstance(r.detail["counts"], dict)


def test_jobs_run_prints_what_retention_would_delete(tmp_path) -> None:
    import os
    import subprocess

    old = tmp_path / "snaps" / "r1-snap.pcap"
    old.parent.mkdir()
    old.write_bytes(b"")
    t = time.time() - 30 * 86400
    os.utime(old, (t, t))
    config = tmp_path / "sentinel.yaml"
    config.write_text(
        f"""
actions: {{snapshot: {{dir: {tmp_path / "snaps"}}}}}
privacy:
  audit_log: {tmp_path / "audit.jsonl"}
  retention: {{spool: false, elasticsearch: false, output_dirs: [], capture_dirs: []}}
jobs:
  cleanup: {{type: retention, cron: "0 3 * * *"}}
"""
    )
    proc = subprocess.run(
        ["sentinel", "jobs", "run", "cleanup", "--dry-run", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "job cleanup (retention): dry_run" in proc.stdout
    assert 'counts: {"captures": 1}' in proc.stdout and str(old) in proc.stdout
    assert old.exists()
