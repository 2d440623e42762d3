"""Issue 7's scheduled jobs against the live lab (root only): the hospital site's
``hospital-inventory`` and ``hospital-integrity`` (declared in ``lab/sites/hospital.yaml``)
run from the engineering workstation's namespace against the real pymodbus PLCs.

One lab bring-up (hospital, no sensor) for all of it, in order: a scheduled inventory (the
scheduler service with its SQLite store) finds both PLCs with their FC 43/14 and FC 17
identity; one PLC is updated to a new firmware revision and the other switched off, and the
next inventory reports exactly that; an attacker's writes from the attacker namespace (an
oxygen alarm threshold outside its limits, the theatre's oxygen zone valve closed) are
caught by the integrity job against the site file's golden values; a scan of an address
outside the job's scope is refused.

The workstation's own maintenance actor is stopped first: it legitimately retunes the
oxygen alarm thresholds now and then, which the integrity job would (rightly) report as a
difference from their golden values. The HMI keeps polling and moving the ventilation
setpoints, inside their limits, throughout.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.lab import live
from sentinel.lab.config import load_site, sites_dir
from sentinel.lab.plcmodel import PlcModel

from .conftest import sentinel_config

SITE = "hospital"
INVENTORY, INTEGRITY = "hospital-inventory", "hospital-integrity"
AHU, GAS = "198.51.100.20", "198.51.100.21"
NEW_REVISION = "V5.2.1"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


def test_site_golden_values_are_what_the_lab_plcs_start_with() -> None:
    """The integrity job's golden values and the inventory's targets match the lab PLCs."""
    site = load_site(SITE)
    jobs = site.config.jobs
    assert {t.address for t in jobs[INVENTORY].targets} == {p.asset for p in site.lab.plcs}
    golden = 0
    for target in jobs[INTEGRITY].targets:
        plc = site.plc(target.address)
        image = PlcModel(site, plc, random.Random(0), 0.0).image
        for point in target.points:
            assert point.golden is not None
            assert image.table(point.table)[point.address] == int(point.golden), point
            golden += 1
    assert golden == 6


# -- helpers for the live test
def _in_ns(ns: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, *args], capture_output=True, text=True, env=env
    )


def _job(name: str, config: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    proc = _in_ns(
        "sl-hosp-eng",
        "-c",
        "from sentinel.cli import main; main()",
        "jobs",
        "run",
        name,
        "--config",
        str(config),
        "--json",
        *extra,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


SCHEDULED = """
import json, sys
from sentinel.config import load_config
from sentinel.schedule.service import SchedulerService, wait_for
found = []
service = SchedulerService(load_config(sys.argv[1]), emit=found.append).start()
try:
    ran = wait_for(lambda: service.last_result(sys.argv[2]) is not None, 120)
    rows = service.list_jobs()
finally:
    service.shutdown()
print(json.dumps({"ran": ran, "last": service.last_result(sys.argv[2]), "findings": found,
                  "rows": rows}))
"""


def _plc(address: str, site_path: str) -> int:
    """Start a lab PLC in its namespace from ``site_path``; wait until it accepts."""
    ns = f"sl-hosp-p{address.rsplit('.', 1)[1]}"
    pid = live._spawn(
        ns, ["-m", "sentinel.lab.plc", "--site", site_path, "--plc", address], f"{ns}-again"
    )
    probe = f"import socket; socket.create_connection(({address!r}, 502), 0.5).close()"
    for _ in range(100):
        if subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe]).returncode == 0:
            return pid
        assert live._alive(pid), f"PLC {address} did not start"
        subprocess.run(["sleep", "0.2"])
    raise AssertionError(f"PLC {address} does not accept connections")


def _rules(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted(
        (f["rule"]["id"], f["destination"]["ip"], f["message"]) for f in result["findings"]
    )


@pytest.fixture
def lab_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    if live.lab_namespaces():
        pytest.skip("a lab is already up on this machine")
    monkeypatch.setenv("SENTINEL_LAB_STATE", str(tmp_path / "state"))
    yield
    live.down()


@pytest.mark.live
@needs_root
@pytest.mark.usefixtures("lab_state")
def test_scheduled_jobs_in_the_lab(tmp_path: Path) -> None:
    site = load_site(SITE)
    env = {**os.environ, "SENTINEL_STATE": str(tmp_path / "jobs-state")}
    config = sentinel_config(site, tmp_path)
    scheduled = tmp_path / "scheduled.yaml"
    data = yaml.safe_load(config.read_text())
    data["jobs"][INVENTORY]["every"] = 10  # the shortest interval: first run 10 s after start
    scheduled.write_text(yaml.safe_dump(data, sort_keys=False))

    state = live.up([SITE], str(tmp_path / "out"), sensor=False)
    live._stop_pids([state["processes"]["sl-hosp-eng"]])
    identity = {
        p.asset: {
            "VendorName": p.identity.vendor,
            "ProductCode": p.identity.product,
            "MajorMinorRevision": p.identity.revision,
        }
        for p in site.lab.plcs
    }
    names = {a.address: a.name for a in site.config.assets}

    # 1. The scheduled inventory (report_first_run) finds both PLCs with their identity.
    proc = _in_ns("sl-hosp-eng", "-c", SCHEDULED, str(scheduled), INVENTORY, env=env)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["ran"] and run["last"]["status"] == "ok", run
    assert [r["schedule"] for r in run["rows"] if r["name"] == INVENTORY] == ["every 10 s"]
    assert (tmp_path / "jobs-state" / "jobs.sqlite").exists()
    devices = {d["address"]: d for d in run["last"]["devices"]}
    assert sorted(devices) == [AHU, GAS]  # discover probed the rest of 198.51.100.16/28
    for address, dev in devices.items():
        ident = identity[address]
        assert dev["identity"] == ident
        assert dev["server_id"] == "-".join(ident.values()) and dev["run_indicator"] is True
        assert dev["name"] == names[address] and (dev["port"], dev["unit"]) == (502, 1)
    first = run["findings"]
    assert sorted((f["rule"]["id"], f["destination"]["ip"]) for f in first) == [
        ("9000301", AHU),
        ("9000301", GAS),
    ]
    for f in first:
        assert f["sentinel"]["evidence"]["identity"] == identity[f["destination"]["ip"]]
        assert f["event"]["dataset"] == "sentinel.scan"
        assert f["labels"]["site"] == "st-mary-hospital"

    # 2. A firmware update of the ventilation PLC, and the gas monitor switched off.
    processes = live.read_state()["processes"]
    live._stop_pids([processes["sl-hosp-p20"], processes["sl-hosp-p21"]])
    updated = tmp_path / "updated" / f"{SITE}.yaml"
    updated.parent.mkdir()
    text = (sites_dir() / f"{SITE}.yaml").read_text()
    old = identity[AHU]["MajorMinorRevision"]
    updated.write_text(text.replace(f"revision: {old}", f"revision: {NEW_REVISION}", 1))
    _plc(AHU, str(updated))
    second = _job(INVENTORY, config, env)
    assert second["status"] == "partial"  # a listed target did not answer
    assert sorted(d["address"] for d in second["devices"]) == [AHU]
    gas, ahu = identity[GAS], identity[AHU]
    assert _rules(second) == [
        (
            "9000303",
            AHU,
            f"Modbus device {AHU}:502 unit 1: MajorMinorRevision changed from {old!r} to "
            f"{NEW_REVISION!r}; server_id changed from {'-'.join(ahu.values())!r} to "
            f"{'-'.join([*list(ahu.values())[:2], NEW_REVISION])!r}",
        ),
        (
            "9000304",
            GAS,
            f"Modbus device {GAS}:502 unit 1 ({' '.join(gas.values())}) no longer answers",
        ),
    ]
    changed = next(f for f in second["findings"] if f["rule"]["id"] == "9000303")
    assert changed["sentinel"]["evidence"]["changes"]["MajorMinorRevision"] == {
        "before": old,
        "after": NEW_REVISION,
    }

    # 3. Integrity: the gas monitor back (as it starts: the golden values), nothing to report.
    _plc(GAS, site.path)
    clean = _job(INTEGRITY, config, env)
    assert clean["status"] == "ok" and clean["findings"] == [], clean
    assert clean["detail"] == {"points_checked": 12}  # 6 golden points, 6 setpoint limits

    # 4. The attacker lowers the oxygen low-pressure alarm below its safe limits and closes
    # the theatre's oxygen zone valve.
    attack = (
        "from pymodbus.client import ModbusTcpClient\n"
        f"c = ModbusTcpClient({GAS!r}, port=502, timeout=2)\n"
        "assert c.connect()\n"
        "assert not c.write_register(0, 300, device_id=1).isError()\n"
        "assert not c.write_coil(0, False, device_id=1).isError()\n"
        "c.close()\n"
    )
    proc = _in_ns(live.ATTACKER, "-c", attack, env=env)
    assert proc.returncode == 0, proc.stderr
    caught = _job(INTEGRITY, config, env)
    assert caught["status"] == "ok"
    where = f"on {GAS} unit 1"
    assert _rules(caught) == [
        ("9000311", GAS, f"o2_low_alarm (holding 0) {where} is 300, its golden value is 355"),
        (
            "9000312",
            GAS,
            f"o2_low_alarm (holding 0) {where} is 300, outside its safe limits [340, 380]",
        ),
        ("9000313", GAS, f"zone_valve_theatre1 (coils 0) {where} is off, expected on"),
    ]
    evidence = {f["rule"]["id"]: f["sentinel"]["evidence"] for f in caught["findings"]}
    assert evidence["9000311"] == {
        "job": INTEGRITY,
        "unit": 1,
        "point": "o2_low_alarm",
        "table": "holding",
        "address": 0,
        "value": 300,
        "golden": 355,
    }
    assert (evidence["9000312"]["min"], evidence["9000312"]["max"]) == (340, 380)
    assert evidence["9000313"]["value"] is False and evidence["9000313"]["golden"] is True
    severities = {f["rule"]["id"]: f["sentinel"]["severity_label"] for f in caught["findings"]}
    assert severities == {"9000311": "high", "9000312": "critical", "9000313": "high"}

    # 5. Scope: the HMI is not in the integrity job's scope; the job refuses, sends nothing.
    proc = _in_ns(
        "sl-hosp-eng",
        "-c",
        "from sentinel.cli import main; main()",
        "jobs",
        "run",
        INTEGRITY,
        "--config",
        str(config),
        "--address",
        site.lab.hmi.address,
        env=env,
    )
    assert proc.returncode == 2
    assert f"{site.lab.hmi.address} is outside the job's scopes (198.51.100.20/31)" in proc.stderr
