"""``sentinel run`` end to end: live capture on a veth pair, findings, webhook, metrics, SIGTERM.

The test creates its own network namespace and veth pair (unique names), runs ``sentinel run``
as a subprocess capturing on the host end, and sends a crafted Modbus/TCP conversation with a
FC 8/4 "force listen only mode" request from the namespace end. A local HTTP server on
127.0.0.1 is the playbook webhook target (the shipped ``notify-soc`` playbook). Needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.craft import Conversation, adu, write

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture and netns need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]

LISTEN_ONLY_PDU = bytes([0x08, 0x00, 0x04, 0x00, 0x00])  # FC 8, sub-function 4, data 0
LISTEN_ONLY_RULE = "9000107"
# ``python -m sentinel.cli`` would load the CLI twice (as __main__ and as sentinel.cli).
SENTINEL = [sys.executable, "-c", "from sentinel.cli import main; main()"]
# Sends a pcap's frames on an interface; prints its monotonic clock right before sending.
SENDER = (
    "import sys, time; from scapy.all import rdpcap, sendp; "
    "p = rdpcap(sys.argv[1]); print(time.monotonic(), flush=True); "
    "sendp(p, iface=sys.argv[2], verbose=False)"
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hooks:
    """A webhook receiver: every POST body and the monotonic time it arrived."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.event = threading.Event()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hooks.received.append((time.monotonic(), json.loads(body or b"{}")))
                hooks.event.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def __enter__(self) -> Hooks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _findings(out: Path) -> list[dict[str, Any]]:
    path = out / "findings.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_run_live_detects_notifies_and_stops_cleanly(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    ns, host_if, peer_if = f"snt-{tag}", f"snth{tag}", f"sntp{tag}"
    out = tmp_path / "out"
    metrics_port = _free_port()
    conv = Conversation(client="192.0.2.10", server="192.0.2.20", sport=41000)
    conv.exchange(adu(1, 1, LISTEN_ONLY_PDU), None, dt=0.01)
    pcap = write(tmp_path / "attack.pcap", conv.packets)
    proc: subprocess.Popen[bytes] | None = None
    with Hooks() as hooks:
        config = tmp_path / "sentinel.yaml"
        config.write_text(
            f"""
playbooks:
  builtin: [notify-soc]
  state_dir: {tmp_path / "state"}
actions:
  webhooks:
    soc: {{url: "{hooks.url}", format: json, timeout: 5}}
service:
  metrics: {{host: 127.0.0.1, port: {metrics_port}}}
"""
        )
        try:
            _ip("netns", "add", ns)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns)
            _ip("link", "set", host_if, "up")
            _ip("-n", ns, "link", "set", peer_if, "up")
            env = {**os.environ, "SENTINEL_STATE": str(tmp_path / "state")}
            proc = subprocess.Popen(
                [
                    *SENTINEL,
                    "run",
                    "--config",
                    str(config),
                    "--interface",
                    host_if,
                    "--out",
                    str(out),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

            def metrics_up() -> bool:
                try:
                    with urllib.request.urlopen(metrics_url, timeout=1) as r:
                        return r.status == 200
                except OSError:
                    return False

            if not _wait(metrics_up, 20):
                proc.kill()
                pytest.fail(f"metrics endpoint never answered: {proc.communicate()[1].decode()}")
            assert proc.poll() is None
            # The capture socket is opened before the metrics server starts: frames sent now
            # are seen. The sender prints its monotonic clock right before sendp.
            sender = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, str(pcap), peer_if],
                check=True,
                capture_output=True,
                timeout=30,
            )
            sent_at = float(sender.stdout.split()[0])
            assert hooks.event.wait(15), "the webhook never got the notification"
            latency = hooks.received[0][0] - sent_at
            print(f"detection-to-webhook latency: {latency * 1000:.0f} ms")
            assert latency < 10
            notified = json.dumps(hooks.received[0][1])
            assert LISTEN_ONLY_RULE in notified or "listen only" in notified.lower()

            def listen_only_written() -> bool:
                return any(f["rule"]["id"] == LISTEN_ONLY_RULE for f in _findings(out))

            assert _wait(listen_only_written, 10), "finding not in findings.jsonl while running"
            with urllib.request.urlopen(metrics_url, timeout=5) as r:
                ctype = r.headers["Content-Type"]
                text = r.read().decode()
            assert ctype.startswith("text/plain; version=0.0.4")
            assert "# TYPE sentinel_packets_total counter" in text
            packets = next(
                float(line.split()[1])
                for line in text.splitlines()
                if line.startswith("sentinel_packets_total ")
            )
            assert packets >= len(conv.packets)
            assert 'sentinel_findings_total{severity="high"}' in text
            assert "sentinel_up 1" in text
            running = _findings(out)

            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=45)
            assert proc.returncode == 0, stderr.decode()
            stats = json.loads((out / "stats.json").read_text())
            final = _findings(out)
            ids = {f["event"]["id"] for f in final}
            assert {f["event"]["id"] for f in running} <= ids  # nothing written got lost
            assert stats["findings"] == len(final)
            assert stats["packets"] >= len(conv.packets)
            assert (
                stats["modbus_by_function"].get("DIAGNOSTICS", 0) >= 1
                or stats["modbus_messages"] >= 1
            )
            assert stats["service"]["stop"] == "signal"
            assert stats["live"]["interfaces"] == [host_if]
            assert not metrics_up()  # the metrics server was stopped
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
