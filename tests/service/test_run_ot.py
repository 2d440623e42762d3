"""``sentinel run`` with the tshark OT source, live: DNP3 on a veth pair becomes OT events, a
dnp3.jsonl record and an OT policy finding while the service runs; SIGTERM (and SIGKILL) stop
tshark and its worker; without tshark the run says so and keeps decoding Modbus.

Each test makes its own namespace and veth pair and runs ``sentinel run`` as a subprocess on
the host end; frames are crafted (tests/ot/craft.py, tests/craft.py) and sent with scapy from
the namespace. Needs root and tshark (the tshark-missing test points ``ot.tshark`` at a path
that does not exist).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sentinel.detectors.ot_policy import RESTART
from sentinel.respond import runner
from tests.craft import Conversation, adu, write
from tests.ot.craft import dnp3_reused_tuple
from tests.service.support import Veth, alive, descendants, jsonl, metrics, sample, service, wait

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture and netns need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]

RESTART_RULE = str(RESTART.sid)  # OT device restarted (DNP3 COLD_RESTART), not allowed
ACTION_FAILED_RULE = runner.ACTION_FAILED_RULE  # a playbook step that failed
LISTEN_ONLY_RULE = "9000107"  # Modbus FC 8/4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, metrics_port: int, extra: str = "") -> Path:
    """The outstation 192.0.2.80 accepts only 192.0.2.99 as master; the SOC webhook points at
    a closed local port, so the notify-soc playbook's step fails (a finding of its own)."""
    dead = _free_port()  # nothing listens there: connection refused
    config = tmp_path / "sentinel.yaml"
    config.write_text(
        f"""
assets:
  - {{address: 192.0.2.80, allowed_masters: [192.0.2.99]}}
playbooks:
  builtin: [notify-soc]
  state_dir: {tmp_path / "state"}
actions:
  webhooks:
    soc: {{url: "http://127.0.0.1:{dead}/hook", format: json, timeout: 2}}
service:
  metrics: {{host: 127.0.0.1, port: {metrics_port}}}
{extra}
"""
    )
    return config


def _started(proc: subprocess.Popen[bytes], port: int) -> None:
    """Wait for the metrics endpoint (the capture sockets are open by then)."""
    if not wait(lambda: metrics(port) is not None or proc.poll() is not None, 30):
        proc.kill()
    if metrics(port) is None:
        proc.kill()
        pytest.fail(f"sentinel run did not start: {proc.communicate()[1].decode()}")


def _ot_processes(pid: int) -> dict[int, str]:
    return {p: c for p, c in descendants(pid).items() if "tshark" in c}


def _fed_tshark(pid: int) -> list[int]:
    """The tshark that reads the feed (the worker also runs ``tshark -v`` briefly)."""
    return [p for p, c in _ot_processes(pid).items() if " -r - " in c]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_run_decodes_dnp3_live_and_stops_tshark(tmp_path: Path) -> None:
    out = tmp_path / "out"
    port = _free_port()
    pcap = dnp3_reused_tuple(tmp_path / "dnp3.pcap")  # a READ, then a COLD_RESTART
    env = {"SENTINEL_STATE": str(tmp_path / "state")}
    with Veth() as veth, service(_config(tmp_path, port), veth.host, out, env) as proc:
        _started(proc, port)
        # The worker and tshark run below the service from the start (no lazy start live).
        assert wait(lambda: _fed_tshark(proc.pid), 30), descendants(proc.pid)
        ot_procs = _ot_processes(proc.pid)
        assert any(c.startswith(("tshark", "/usr/bin/tshark")) for c in ot_procs.values())
        veth.send(pcap)

        def restart_found() -> bool:
            return any(f["rule"]["id"] == RESTART_RULE for f in jsonl(out / "findings.jsonl"))

        # While running: OT events, the dnp3.log record, the policy finding.
        assert wait(restart_found, 30), (out / "ot.jsonl").exists()
        events = jsonl(out / "ot.jsonl")
        assert {(e["protocol"], e["function"]) for e in events} >= {
            ("dnp3", "READ"),
            ("dnp3", "COLD_RESTART"),
        }
        restart = next(e for e in events if e["function"] == "COLD_RESTART")
        assert restart["orig_h"] == "192.0.2.70" and restart["resp_p"] == 20000
        assert restart["uid"]  # joined to the native flow
        flows = {f["uid"] for f in jsonl(out / "flows.jsonl")}
        assert wait(lambda: len(jsonl(out / "dnp3.jsonl")) >= 2, 10)
        assert [r["fc_request"] for r in jsonl(out / "dnp3.jsonl")] == ["READ", "COLD_RESTART"]
        finding = next(f for f in jsonl(out / "findings.jsonl") if f["rule"]["id"] == RESTART_RULE)
        assert finding["source"]["ip"] == "192.0.2.70"
        # The playbook step failed (closed port): its finding reaches findings.jsonl while
        # the service runs, through Pipeline.emit_finding, and the metrics count it.
        assert wait(
            lambda: any(
                f["rule"]["id"] == ACTION_FAILED_RULE for f in jsonl(out / "findings.jsonl")
            ),
            60,
        ), "the failed playbook step raised no finding"
        text = metrics(port)
        assert text is not None
        assert sample(text, "sentinel_findings_total", 'severity="high"') is not None
        drops = sample(text, "sentinel_kernel_drops_total", f'interface="{veth.host}"')
        kernel = sample(text, "sentinel_kernel_packets_total", f'interface="{veth.host}"')
        assert drops is not None and drops >= 0
        assert kernel is not None and kernel >= 1
        running = {f["event"]["id"] for f in jsonl(out / "findings.jsonl")}

        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode()
        assert wait(lambda: not any(alive(p) for p in ot_procs), 10), ot_procs
    stats = json.loads((out / "stats.json").read_text())
    assert stats["ot"]["status"] == "ok", stats["ot"]
    assert stats["ot"]["events_by_protocol"]["dnp3"] >= 4
    assert stats["ot"]["feed"]["frames_dropped"] == 0
    assert stats["ot"]["feed"]["frames_to_tshark"] >= 10  # the DNP3 frames, handshakes too
    final = jsonl(out / "findings.jsonl")
    assert running <= {f["event"]["id"] for f in final}
    assert stats["findings"] == len(final)  # emitted findings counted in the run's stats
    assert flows <= {f["uid"] for f in jsonl(out / "flows.jsonl")}
    assert stats["service"]["external_findings"] >= 1
    assert stats["live"]["kernel_by_interface"][veth.host]["packets"] >= kernel


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_killed_service_leaves_no_tshark(tmp_path: Path) -> None:
    """SIGKILL gives the service no chance to stop anything: the worker and tshark end by
    themselves (tshark reads EOF on the feed's pipe)."""
    out = tmp_path / "out"
    port = _free_port()
    env = {"SENTINEL_STATE": str(tmp_path / "state")}
    with Veth() as veth, service(_config(tmp_path, port), veth.host, out, env) as proc:
        assert wait(lambda: _fed_tshark(proc.pid), 30), descendants(proc.pid)
        ot_procs = _ot_processes(proc.pid)
        proc.kill()
        proc.communicate(timeout=30)
        assert wait(lambda: not any(alive(p) for p in ot_procs), 20), {
            p: c for p, c in ot_procs.items() if alive(p)
        }


def test_run_without_tshark_says_so_and_decodes_modbus(tmp_path: Path) -> None:
    out = tmp_path / "out"
    port = _free_port()
    config = _config(tmp_path, port, "ot:\n  tshark: /nonexistent/tshark\n")
    conv = Conversation(client="192.0.2.10", server="192.0.2.20", sport=41000)
    conv.exchange(adu(1, 1, bytes([0x08, 0x00, 0x04, 0x00, 0x00])), None, dt=0.01)
    pcap = write(tmp_path / "listen-only.pcap", conv.packets)
    env = {"SENTINEL_STATE": str(tmp_path / "state")}
    with Veth() as veth, service(config, veth.host, out, env) as proc:
        _started(proc, port)
        veth.send(pcap)

        def listen_only() -> bool:
            return any(f["rule"]["id"] == LISTEN_ONLY_RULE for f in jsonl(out / "findings.jsonl"))

        assert wait(listen_only, 30)
        assert not _ot_processes(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0
    text = stderr.decode()
    assert "tshark not found" in text and "Modbus/TCP is" in text
    stats = json.loads((out / "stats.json").read_text())
    assert stats["ot"]["status"] == "tshark-missing"
    assert "apt-get install tshark" in stats["ot"]["hint"]


def _healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_healthz_reports_a_dead_tshark_and_modbus_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    port = _free_port()
    dnp3 = dnp3_reused_tuple(tmp_path / "dnp3.pcap")
    conv = Conversation(client="192.0.2.10", server="192.0.2.20", sport=41000)
    conv.exchange(adu(1, 1, bytes([0x08, 0x00, 0x04, 0x00, 0x00])), None, dt=0.01)
    modbus = write(tmp_path / "listen-only.pcap", conv.packets)
    env = {"SENTINEL_STATE": str(tmp_path / "state")}
    with Veth() as veth, service(_config(tmp_path, port), veth.host, out, env) as proc:
        _started(proc, port)
        assert wait(lambda: _fed_tshark(proc.pid), 30), descendants(proc.pid)
        assert _healthz(port) == (200, "ok\n")
        tshark = _fed_tshark(proc.pid)
        assert len(tshark) == 1
        os.kill(tshark[0], signal.SIGKILL)
        veth.send(dnp3)  # the feed's next write finds the worker gone

        def unhealthy() -> bool:
            status, body = _healthz(port)
            return status == 503 and "tshark worker went away" in body

        assert wait(unhealthy, 30), _healthz(port)
        veth.send(modbus)
        assert wait(
            lambda: any(f["rule"]["id"] == LISTEN_ONLY_RULE for f in jsonl(out / "findings.jsonl")),
            30,
        )
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["ot"]["status"] in ("failed", "partial"), stats["ot"]
    assert "error" in stats["ot"]["feed"]
