"""The APScheduler service with its SQLite job store, one-off scans, and ``sentinel jobs``."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from sentinel.config import load_config
from sentinel.errors import SentinelError
from sentinel.schedule.service import SchedulerService, wait_for

from .conftest import run_sentinel

CONFIG = """
observer: {{name: sensor-1}}
sites:
  - {{name: loop-site, sector: energy, networks: [127.0.0.0/29]}}
playbooks: {{state_dir: {state}}}
schedule: {{misfire_grace_time: 60}}
jobs:
  inventory:
    type: modbus.inventory
    every: 3600
    scopes: [127.0.0.2/31]
    targets:
      - {{address: 127.0.0.2, port: {port}}}
      - {{address: 127.0.0.3, port: {port}}}
    rate: 50
  integrity:
    type: modbus.integrity
    cron: "*/5 * * * *"
    scopes: [127.0.0.2/32]
    targets:
      - address: 127.0.0.2
        port: {port}
        points: [{{name: temp_setpoint, address: 0, golden: 215, min: 180, max: 260}}]
  adhoc:
    type: modbus.integrity
    scopes: [127.0.0.3/32]
    targets: [{{address: 127.0.0.3, port: {port}, points: [{{name: x, address: 0, max: 1}}]}}]
"""


@pytest.fixture
def config_file(tmp_path: Path, plcs) -> Path:
    path = tmp_path / "sentinel.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", port=plcs.port))
    return path


def test_jobs_are_persisted_and_follow_the_config(config_file: Path, tmp_path: Path) -> None:
    config = load_config(config_file)
    service = SchedulerService(config).start()
    try:
        jobs = {j.id: j for j in service.scheduler.get_jobs(jobstore="default")}
        assert sorted(jobs) == ["integrity", "inventory"]  # adhoc runs on demand only
        assert jobs["inventory"].max_instances == 1
        assert jobs["inventory"].coalesce is True
        assert jobs["inventory"].misfire_grace_time == 60
        assert jobs["inventory"].func_ref == "sentinel.schedule.service:_run_scheduled"
    finally:
        service.shutdown()
    store = tmp_path / "state" / "jobs.sqlite"
    with sqlite3.connect(store) as db:
        ids = sorted(r[0] for r in db.execute("SELECT id FROM apscheduler_jobs"))
    assert ids == ["integrity", "inventory"]
    # The config drops a job: the store follows at the next start.
    config_file.write_text(config_file.read_text().replace('    cron: "*/5 * * * *"\n', ""))
    service = SchedulerService(load_config(config_file)).start()
    try:
        assert [j.id for j in service.scheduler.get_jobs(jobstore="default")] == ["inventory"]
        rows = {r["name"]: r for r in service.list_jobs()}
        assert rows["inventory"]["schedule"] == "every 3600 s" and rows["inventory"]["next_run"]
        assert (
            rows["integrity"]["schedule"] == "on demand" and rows["integrity"]["next_run"] is None
        )
    finally:
        service.shutdown()


def test_run_now_hands_findings_on_and_keeps_the_result(config_file: Path, plcs) -> None:
    found: list[dict] = []
    service = SchedulerService(load_config(config_file), emit=found.append)
    plcs["127.0.0.2"].attacker_write(0, 300)
    result = service.run_now("integrity")
    assert result.status == "ok"
    assert [f["rule"]["id"] for f in found] == ["9000312", "9000311"]
    assert found[0]["labels"] == {"site": "loop-site", "sector": "energy"}
    assert service.last_result("integrity")["findings"] == 2
    with pytest.raises(SentinelError, match="no job 'nope'"):
        service.run_now("nope")


def test_queue_scan_runs_one_device_and_refuses_outside_the_scope(config_file: Path) -> None:
    service = SchedulerService(load_config(config_file)).start()
    try:
        with pytest.raises(SentinelError, match="outside the job's scopes"):
            service.queue_scan("inventory", "127.0.0.5")
        with pytest.raises(SentinelError, match=r"no modbus\.inventory job .integrity."):
            service.queue_scan("integrity", "127.0.0.2")
        assert service.queue_scan("inventory", "127.0.0.3") == "inventory for 127.0.0.3"
        assert wait_for(lambda: service.last_result("inventory") is not None, 20)
        last = service.last_result("inventory")
        assert [d["address"] for d in last["devices"]] == ["127.0.0.3"]
    finally:
        service.shutdown()


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp_path)}


def test_jobs_cli(config_file: Path, tmp_path: Path, plcs) -> None:
    out = run_sentinel("jobs", "run", "inventory", "--config", str(config_file), env=_env(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "job inventory (modbus.inventory): ok, 6 requests"
    assert lines[1] == (f"  127.0.0.2:{plcs.port} unit 1: Acme Controls AHU-3000 2.1.0")
    assert lines[2] == f"  127.0.0.3:{plcs.port} unit 1: Volta GasMon 1.0"
    out = run_sentinel("jobs", "list", "--config", str(config_file), env=_env(tmp_path))
    assert out.returncode == 0, out.stderr
    inv = next(line for line in out.stdout.splitlines() if line.startswith("inventory "))
    assert "every 3600 s" in inv and " ok (0 findings)" in inv
    # a device outside the job's scopes: refused, nothing sent
    plcs["127.0.0.2"].clear()
    out = run_sentinel(
        "jobs",
        "run",
        "inventory",
        "--address",
        "127.0.0.4",
        "--config",
        str(config_file),
        env=_env(tmp_path),
    )
    assert out.returncode == 2
    assert "note: 127.0.0.4 is outside the job's scopes (127.0.0.2/31)" in out.stderr
    out = run_sentinel(
        "jobs",
        "run",
        "integrity",
        "--dry-run",
        "--json",
        "--config",
        str(config_file),
        env=_env(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "dry_run"
    assert data["planned"] == [f"127.0.0.2:{plcs.port} unit 1: holding 0 (temp_setpoint)"]
    assert plcs["127.0.0.2"].requests == []


def test_config_with_a_target_outside_its_scope_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "jobs:\n  inv:\n    type: modbus.inventory\n    scopes: [10.0.0.0/24]\n"
        "    targets: [{address: 10.0.1.5}]\n"
    )
    out = run_sentinel("jobs", "list", "--config", str(path), env=_env(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"sentinel: config: {path}:3:5: jobs.inv.modbus.inventory: targets.0: 10.0.1.5 is "
        "outside the job's scopes (10.0.0.0/24)"
    )
