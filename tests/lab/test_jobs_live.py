"""Issue 7's scheduled jobs against the live lab (root only): each site file's
``<site>-inventory`` and ``<site>-integrity`` jobs run from the site's engineering
workstation namespace against the real pymodbus PLCs.

One lab bring-up (the three sites, no sensor) for all of it, in order: the inventories find
every lab PLC with its FC 43/14 and FC 17 identity (the hospital's through the scheduler
service and its SQLite store, the others' through ``sentinel jobs run``) and the integrity
jobs find the PLCs as their golden values say; one hospital PLC is updated to a new firmware
revision and the other switched off, and the next inventory reports exactly that; an
attacker's writes from the attacker namespace (an oxygen alarm threshold outside its limits,
the theatre's oxygen zone valve closed) are caught by the integrity job against the site
file's golden values; a scan of an address outside the job's scope is refused.

The workstations' own maintenance actors are stopped first: they legitimately retune
protection settings and alarm thresholds now and then, which the integrity jobs would
(rightly) report as differences from their golden values. The HMIs keep polling and moving
their setpoints, inside their limits, throughout.
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

SITES = ("hospital", "energy", "transport")
INVENTORY, INTEGRITY = "hospital-inventory", "hospital-integrity"
AHU, GAS = "198.51.100.20", "198.51.100.21"
NEW_REVISION = "V5.2.1"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


@pytest.mark.parametrize("name", SITES)
def test_site_jobs_match_the_lab_plcs(name: str) -> None:
    """Every site file declares an inventory of all its PLCs and an integrity job whose
    golden values are what the lab PLCs start with."""
    site = load_site(name)
    jobs = site.config.jobs
    inventory, integrity = jobs[f"{name}-inventory"], jobs[f"{name}-integrity"]
    plcs = {p.asset for p in site.lab.plcs}
    assert {(t.address, t.name) for t in inventory.targets} == {
        (a, site.asset(a).name) for a in plcs
    }
    assert {t.address for t in integrity.targets} == plcs
    for target in integrity.targets:
        image = PlcModel(site, site.plc(target.address), random.Random(0), 0.0).image
        assert target.points
        for point in target.points:
            assert point.golden is not None
            assert image.table(point.table)[point.address] == int(point.golden), point


def _points(name: str) -> int:
    """How many points the site's integrity job checks: its golden points and the holding
    registers with safe limits of its targets (``use_asset_limits``)."""
    site = load_site(name)
    job = site.config.jobs[f"{name}-integrity"]
    points = set()
    for t in job.targets:
        points |= {(t.address, p.table, p.address) for p in t.points}
        for r in site.asset(t.address).registers:
            if r.table == "holding" and (r.min is not None or r.max is not None):
                points |= {(t.address, "holding", a) for a in range(r.start, r.end + 1)}
    return len(points)


# -- helpers for the live test
def _eng(name: str) -> str:
    return f"{load_site(name).lab.bridge}-eng"


def _start(ns: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _cli(*args: str) -> list[str]:
    return ["-c", "from sentinel.cli import main; main()", *args]


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def _job(name: str, config: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    args = _cli("jobs", "run", name, "--config", str(config), "--json", *extra)
    return _result(_start(_eng("hospital"), args, env))


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


def _identity(plc: Any) -> dict[str, str]:
    i = plc.identity
    return {"VendorName": i.vendor, "ProductCode": i.product, "MajorMinorRevision": i.revision}


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
    sites = {name: load_site(name) for name in SITES}
    site = sites["hospital"]
    env = {**os.environ, "SENTINEL_STATE": str(tmp_path / "jobs-state")}
    configs = {name: sentinel_config(s, tmp_path) for name, s in sites.items()}
    config = configs["hospital"]
    scheduled = tmp_path / "scheduled.yaml"
    data = yaml.safe_load(config.read_text())
    data["jobs"][INVENTORY]["every"] = 10  # the shortest interval: first run 10 s after start
    scheduled.write_text(yaml.safe_dump(data, sort_keys=False))

    state = live.up(list(SITES), str(tmp_path / "out"), sensor=False)
    live._stop_pids([state["processes"][_eng(name)] for name in SITES])

    # 1. Every lab PLC found with its identity: the hospital's by the scheduler service (its
    # first interval), the others' by `sentinel jobs run`; each site's integrity job agrees
    # with the live PLCs' golden values (the hospital's is checked below).
    running = {
        "hospital": _start(_eng("hospital"), ["-c", SCHEDULED, str(scheduled), INVENTORY], env)
    }
    for name in ("energy", "transport"):
        for kind in ("inventory", "integrity"):
            args = _cli("jobs", "run", f"{name}-{kind}", "--config", str(configs[name]), "--json")
            running[f"{name}-{kind}"] = _start(_eng(name), args, env)
    results = {key: _result(proc) for key, proc in running.items()}
    run = results.pop("hospital")
    assert run["ran"] and run["last"]["status"] == "ok", run
    assert [r["schedule"] for r in run["rows"] if r["name"] == INVENTORY] == ["every 10 s"]
    assert (tmp_path / "jobs-state" / "jobs.sqlite").exists()
    inventories = {"hospital": (run["last"], run["findings"])}
    for name in ("energy", "transport"):
        result = results[f"{name}-inventory"]
        assert result["status"] == "ok", result
        inventories[name] = (result, result["findings"])
        integrity = results[f"{name}-integrity"]
        assert integrity["status"] == "ok" and integrity["findings"] == [], integrity
        assert integrity["detail"] == {"points_checked": _points(name)}
    identity = {}
    for name, (result, found) in inventories.items():
        s = sites[name]
        expected = {p.asset: _identity(p) for p in s.lab.plcs}
        identity.update(expected)
        devices = {d["address"]: d for d in result["devices"]}
        assert sorted(devices) == sorted(expected)  # discover probed the rest of the /28
        for address, dev in devices.items():
            ident = expected[address]
            assert dev["identity"] == ident
            assert dev["server_id"] == "-".join(ident.values()) and dev["run_indicator"] is True
            assert dev["name"] == s.asset(address).name and (dev["port"], dev["unit"]) == (502, 1)
        # report_first_run: one "new device" finding per PLC, with its identity and site
        assert sorted((f["rule"]["id"], f["destination"]["ip"]) for f in found) == [
            ("9000301", a) for a in sorted(expected)
        ]
        for f in found:
            assert f["sentinel"]["evidence"]["identity"] == expected[f["destination"]["ip"]]
            assert f["event"]["dataset"] == "sentinel.scan"
            assert f["labels"]["site"] == s.config.sites[0].name

    # 2. A firmware update of the ventilation PLC, and the gas monitor switched off.
    processes = live.read_state()["processes"]
    live._stop_pids([processes["sl-hosp-p20"], processes["sl-hosp-p21"]])
    updated = tmp_path / "updated" / "hospital.yaml"
    updated.parent.mkdir()
    text = (sites_dir() / "hospital.yaml").read_text()
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
    assert clean["detail"] == {"points_checked": _points("hospital")}

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
    proc = _start(live.ATTACKER, ["-c", attack], env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
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
    hmi = site.lab.hmi.address
    args = _cli("jobs", "run", INTEGRITY, "--config", str(config), "--address", hmi)
    proc = _start(_eng("hospital"), args, env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"{hmi} is outside the job's scopes (198.51.100.20/31)" in err
