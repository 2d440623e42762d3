"""Real local endpoints for the response tests: an HTTP server, an SMTP server with STARTTLS
(aiosmtpd, a self-signed certificate made here), and syslog listeners on UDP and TCP, all on
127.0.0.1 with random ports; a finding builder and a runner factory."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sentinel.events import ConnId
from sentinel.findings import Finding, Technique
from sentinel.respond import yamlpos
from sentinel.respond.actions import Services
from sentinel.respond.approvals import ApprovalStore
from sentinel.respond.audit import AuditLog
from sentinel.respond.model import load_file, parse_playbook
from sentinel.respond.records import JsonlDocumentStore
from sentinel.respond.runner import PlaybookRunner
from sentinel.respond.settings import ActionSettings, PlaybookSettings


def make_finding(
    rule_id: str = "9000106",
    name: str = "Modbus write of a value outside the safe limits",
    severity: str = "high",
    technique: tuple[str, str, str] = ("T0836", "Modify Parameter", "Impair Process Control"),
    src: str = "198.51.100.66",
    dst: str = "198.51.100.20",
    sport: int = 40000,
    dport: int = 502,
    message: str = "write of 999 to temp_setpoint (holding 0), safe limits 180-260",
    ts: float = 1_700_000_000.0,
    site: dict[str, str] | None = None,
    evidence: dict[str, Any] | None = None,
    uid: str = "Cabc123",
) -> dict[str, Any]:
    f = Finding(
        ts=ts,
        rule_id=rule_id,
        rule_name=name,
        ruleset="sentinel-policy",
        severity=severity,
        technique=Technique(*technique),
        message=message,
        detector="modbus_policy",
        conn=ConnId(src, sport, dst, dport),
        uid=uid,
        frame=7,
        evidence=evidence or {"fc": 6, "address": 0, "value": 999},
    )
    labels = {"site": "st-mary-hospital", "sector": "hospital"} if site is None else site
    return f.to_ecs("sensor-1", labels or None)


def playbook_from_text(text: str, name: str = "test.yaml") -> Any:
    loaded, problems = parse_playbook(yamlpos.parse(text, name))
    assert not problems, [str(p) for p in problems]
    return loaded


# -- HTTP
@dataclass
class HttpServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    event: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    holder: dict[str, HttpServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            srv = holder["s"]
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            srv.requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "body": body}
            )
            if srv.delay:
                time.sleep(srv.delay)
            self.send_response(srv.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            srv.event.set()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    holder["s"] = HttpServer(f"http://127.0.0.1:{httpd.server_address[1]}/hooks/secret-token")
    yield holder["s"]
    httpd.shutdown()
    httpd.server_close()


# -- SMTP (aiosmtpd) with STARTTLS
def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "smtp.crt", tmp / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class SmtpServer:
    host: str
    port: int
    ca: Path
    messages: list[dict[str, Any]]
    logins: list[str]
    event: threading.Event


SMTP_USER, SMTP_PASSWORD = "sentinel", "s3cret-pass"


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    messages: list[dict[str, Any]] = []
    logins: list[str] = []
    event = threading.Event()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            messages.append(
                {
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "data": envelope.content,
                    "tls": session.ssl is not None,
                    "received": time.monotonic(),  # for latency figures (tests/service)
                }
            )
            event.set()
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    port = _free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    yield SmtpServer("127.0.0.1", port, cert, messages, logins, event)
    controller.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- syslog
@dataclass
class SyslogListener:
    port: int
    messages: list[bytes]
    event: threading.Event


@pytest.fixture
def syslog_udp() -> Iterator[SyslogListener]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    listener = SyslogListener(sock.getsockname()[1], [], threading.Event())
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                continue
            listener.messages.append(data)
            listener.event.set()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield listener
    stop.set()
    t.join(2)
    sock.close()


@pytest.fixture
def syslog_tcp() -> Iterator[SyslogListener]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    listener = SyslogListener(server.getsockname()[1], [], threading.Event())
    stop = threading.Event()

    def read_frames(conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(2)
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b" " in buf:  # RFC 6587 octet counting: LEN SP MSG
                length, _, rest = buf.partition(b" ")
                n = int(length)
                if len(rest) < n:
                    break
                listener.messages.append(rest[:n])
                listener.event.set()
                buf = rest[n:]
        conn.close()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            read_frames(conn)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield listener
    stop.set()
    t.join(3)
    server.close()


# -- the runner
@dataclass
class Harness:
    runner: PlaybookRunner
    services: Services
    audit: AuditLog
    approvals: ApprovalStore
    emitted: list[dict[str, Any]]
    state: Path

    def audit_records(self) -> list[dict[str, Any]]:
        return self.audit.read()


@pytest.fixture
def harness(tmp_path: Path):
    made: list[Harness] = []

    def make(
        playbooks: list[Any],
        actions: ActionSettings | None = None,
        protected: tuple[Any, ...] = (),
        synchronous: bool = True,
        **settings: Any,
    ) -> Harness:
        state = tmp_path / f"state{len(made)}"
        state.mkdir()
        services = Services(
            settings=actions or ActionSettings(),
            observer="sensor-1",
            state=state,
            documents=JsonlDocumentStore(state / "documents"),
            protected=protected,
        )
        audit = AuditLog(state / "audit.jsonl")
        approvals = ApprovalStore(state / "approvals.sqlite")
        emitted: list[dict[str, Any]] = []
        runner = PlaybookRunner(
            playbooks,
            services,
            audit,
            approvals,
            PlaybookSettings(state_dir=str(state), **settings),
            emit=emitted.append,
            synchronous=synchronous,
            approval_poll=None,
        )
        h = Harness(runner, services, audit, approvals, emitted, state)
        made.append(h)
        return h

    yield make
    for h in made:
        h.runner.close()
        h.approvals.close()


def shipped(name: str) -> Any:
    from sentinel.respond.model import builtin_files

    loaded, problems = load_file(builtin_files()[name], builtin=True)
    assert loaded is not None, problems
    return loaded


def run_sentinel(*args: str, env: dict[str, str] | None = None, stdin: str | None = None):
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
    )


def body_json(request: dict[str, Any]) -> Any:
    return json.loads(request["body"])
