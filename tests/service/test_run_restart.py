"""``sentinel run`` started twice on the same output folder keeps both runs' findings.

The unit restarts the service after a crash (``Restart=on-failure``): the first run here is
killed with SIGKILL once its finding is in findings.jsonl (a crash: no shutdown code runs),
the second is stopped with SIGTERM. Needs root (live capture on a veth pair). Rotation at the
day boundary is tested with an injected clock in tests/sinks/test_jsonl.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.craft import Conversation, adu, write
from tests.schedule.conftest import free_port
from tests.service.support import Veth, jsonl, metrics, service, wait

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture and netns need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]

LISTEN_ONLY_PDU = bytes([0x08, 0x00, 0x04, 0x00, 0x00])  # FC 8, sub-function 4, data 0
LISTEN_ONLY_RULE = "9000107"


def _attack(path: Path, sport: int) -> Path:
    conv = Conversation(client="192.0.2.10", server="192.0.2.20", sport=sport)
    conv.exchange(adu(1, 1, LISTEN_ONLY_PDU), None, dt=0.01)
    return write(path, conv.packets)


def _listen_only(out: Path) -> list[dict]:
    return [f for f in jsonl(out / "findings.jsonl") if f["rule"]["id"] == LISTEN_ONLY_RULE]


def test_a_restart_keeps_the_findings_of_the_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    port = free_port()
    config = tmp_path / "sentinel.yaml"
    config.write_text(
        f"""
playbooks: {{state_dir: {tmp_path / "state"}}}
service:
  metrics: {{host: 127.0.0.1, port: {port}}}
ot: {{enabled: false}}
"""
    )
    env = {"SENTINEL_STATE": str(tmp_path / "state")}
    with Veth() as veth:
        for run, sport in ((1, 41001), (2, 41002)):
            with service(config, veth.host, out, env) as proc:
                assert wait(lambda: metrics(port) is not None or proc.poll() is not None, 30)
                assert proc.poll() is None, proc.communicate()[1].decode()
                veth.send(_attack(tmp_path / f"attack{run}.pcap", sport))
                assert wait(lambda n=run: len(_listen_only(out)) >= n, 15), f"run {run}"
                if run == 1:
                    proc.kill()  # a crash
                    proc.communicate(timeout=10)
                    first = {f["event"]["id"] for f in jsonl(out / "findings.jsonl")}
                else:
                    proc.send_signal(signal.SIGTERM)
                    _, stderr = proc.communicate(timeout=60)
                    assert proc.returncode == 0, stderr.decode()
            assert wait(lambda: metrics(port) is None, 10)  # the port is free again
    final = jsonl(out / "findings.jsonl")
    ids = {f["event"]["id"] for f in final}
    assert first and first <= ids  # the crashed run's findings survived the restart
    ports = sorted(f["source"]["port"] for f in _listen_only(out))
    assert ports == [41001, 41002]
    stats = json.loads((out / "stats.json").read_text())  # the second run's
    assert stats["findings"] == len(final) - len(first)
    assert sorted(p.name for p in out.glob("findings*.jsonl*")) == ["findings.jsonl"]
