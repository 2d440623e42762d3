"""Playbook notifications (the real ``sentinel.respond`` engine and its shipped ``notify-soc``
playbook) carry no clear address, identifier or payload when pseudonymization is on: the
webhook bodies and syslog messages received on loopback, and the playbook engine's own
audit and case records."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from sentinel.config import Config
from sentinel.privacy.keys import Key
from sentinel.privacy.leaks import find_leaks
from sentinel.respond.factory import runner_from_config
from tests.privacy import traffic
from tests.privacy.conftest import pseudonymizer, run
from tests.privacy.test_outputs import assert_private


class Collector(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        type(self).bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    Collector.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", Collector.bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def syslog() -> Iterator[tuple[int, socket.socket]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    try:
        yield sock.getsockname()[1], sock
    finally:
        sock.close()


def _received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except TimeoutError:
            return out


def test_notifications_and_playbook_records_hold_nothing_in_clear(
    site_capture: Path,
    key: Key,
    tmp_path: Path,
    webhook: tuple[str, list[bytes]],
    syslog: tuple[int, socket.socket],
) -> None:
    url, bodies = webhook
    port, sock = syslog
    state = tmp_path / "playbook-state"
    config = Config.model_validate(
        {
            **traffic.SITE_CONFIG,
            "playbooks": {"builtin": ["notify-soc"], "state_dir": str(state)},
            "actions": {
                "webhooks": {"soc": {"url": url, "format": "json"}},
                "syslog": {"soc": {"host": "127.0.0.1", "port": port, "format": "cef"}},
            },
        }
    )
    runner = runner_from_config(config, synchronous=True, approval_poll=None)
    private = run(site_capture, tmp_path / "out", config, pseudonymizer(config, key), [runner])
    messages = _received(sock)
    assert bodies and messages, "notify-soc sent nothing: the test would prove nothing"
    assert any(b"source" in b or b"->" in b for b in bodies)
    notifications = b"\n".join(bodies + messages)
    assert_private(notifications, traffic.OUTSIDE, key)
    assert any(b"24" in b for b in bodies)  # a pseudonym (240.0.0.0/4) names the source
    records = [p for p in state.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json")]
    assert records, "no playbook audit or case records were written"
    for path in records:
        assert_private(path.read_bytes(), traffic.OUTSIDE, key)
    assert find_leaks([state, private.out], lambda a: a in traffic.INVENTORY) == []
