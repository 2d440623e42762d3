"""``sentinel run`` with a scheduled job: the findings of a ``modbus.integrity`` run (a
setpoint an attacker changed on a real Modbus server, tests/schedule/plc_server.py) reach
findings.jsonl while the service runs, through ``Pipeline.emit_finding``, and are counted in
stats.json after SIGTERM. Needs root (live capture on a veth pair; the job itself talks to
127.0.0.2 over loopback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.schedule.conftest import Plcs, free_port
from tests.service.support import Veth, jsonl, metrics, sample, service, wait

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture and netns need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]


@pytest.fixture
def plc(tmp_path: Path) -> Iterator[Plcs]:
    started = Plcs(free_port(), tmp_path)
    started.start("127.0.0.2")
    yield started
    for p in list(started.values()):
        p.stop()


def test_job_findings_reach_the_sinks_while_running(tmp_path: Path, plc: Plcs) -> None:
    plc["127.0.0.2"].attacker_write(0, 300)  # golden 215, max 260
    out = tmp_path / "out"
    port = free_port()
    config = tmp_path / "sentinel.yaml"
    config.write_text(
        f"""
playbooks: {{state_dir: {tmp_path / "state"}}}
service:
  metrics: {{host: 127.0.0.1, port: {port}}}
ot: {{enabled: false}}
jobs:
  integrity:
    type: modbus.integrity
    every: 10
    scopes: [127.0.0.2/32]
    targets:
      - address: 127.0.0.2
        port: {plc.port}
        points: [{{name: temp_setpoint, address: 0, golden: 215, min: 180, max: 260}}]
"""
    )
    env = {"SENTINEL_STATE": str(tmp_path / "state")}
    with Veth() as veth, service(config, veth.host, out, env) as proc:
        assert wait(lambda: metrics(port) is not None or proc.poll() is not None, 30)
        assert proc.poll() is None, proc.communicate()[1].decode()

        def scan_findings() -> list[dict]:
            return [
                f
                for f in jsonl(out / "findings.jsonl")
                if f["event"].get("dataset") == "sentinel.scan"
            ]

        # The first run is ``every`` seconds after the start; a generous deadline.
        assert wait(lambda: len(scan_findings()) >= 2, 60), proc.poll()
        found = scan_findings()
        assert all(f["destination"]["ip"] == "127.0.0.2" for f in found)
        text = metrics(port) or ""
        counted = sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("sentinel_findings_total{")
        )
        assert counted >= len(found)  # the metrics sink got them too
        # Job results as the endpoint exposes them: the integrity run that found the change.
        assert (sample(text, "sentinel_job_runs_total", 'job="integrity",status="ok"') or 0) >= 1
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode()
    stats = json.loads((out / "stats.json").read_text())
    final = jsonl(out / "findings.jsonl")
    assert {f["event"]["id"] for f in found} <= {f["event"]["id"] for f in final}
    assert stats["findings"] == len(final)
    assert stats["service"]["external_findings"] >= 2
    assert stats["ot"] == {"status": "off"}
