"""Helpers of the ``sentinel run`` tests: a network namespace with a veth pair, the service as
a subprocess, its process tree (to prove nothing outlives it), and the metrics endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# ``python -m sentinel.cli`` would load the CLI twice (as __main__ and as sentinel.cli).
SENTINEL = [sys.executable, "-c", "from sentinel.cli import main; main()"]
# Sends a pcap's frames on an interface (in the namespace).
SENDER = (
    "import sys; from scapy.all import rdpcap, sendp; "
    "sendp(rdpcap(sys.argv[1]), iface=sys.argv[2], verbose=False)"
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Veth:
    """A fresh namespace ``ns`` with ``peer`` inside and ``host`` outside, both up, carrying
    only what the test sends: IPv6 is off on both ends before they come up (no router
    solicitations or MLD reports, which a capture with a tiny buffer would count as drops)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, self.host, self.peer = f"snt-{tag}", f"snth{tag}", f"sntp{tag}"

    def __enter__(self) -> Veth:
        ip("netns", "add", self.ns)
        try:
            veth = ["type", "veth", "peer", "name", self.peer, "netns", self.ns]
            ip("link", "add", self.host, *veth)
            for where, name in (([], self.host), (["ip", "netns", "exec", self.ns], self.peer)):
                quiet = f"net.ipv6.conf.{name}.disable_ipv6=1"  # absent without IPv6: ignored
                subprocess.run([*where, "sysctl", "-qw", quiet], capture_output=True)
            ip("link", "set", self.host, "up")
            ip("-n", self.ns, "link", "set", self.peer, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def send(self, pcap: Path) -> None:
        """Send every frame of ``pcap`` from the namespace end (scapy ``sendp``)."""
        subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", SENDER, str(pcap), self.peer],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def wait(predicate: Any, timeout: float) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed (a deadline for an
    event, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line being written right now
            out.append(json.loads(line))
    return out


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (pid -> command line), through /proc's children lists."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    c = int(child)
                    if c not in found:
                        found[c] = cmdline(c)
                        todo.append(c)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of ``name{labels}`` in a Prometheus text exposition, or None."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


@contextlib.contextmanager
def service(
    config: Path, interface: str, out: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``sentinel run`` as a subprocess; killed (with what it started) if the test fails."""
    proc = subprocess.Popen(
        [*SENTINEL, "run", "--config", str(config), "--interface", interface, "--out", str(out)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            children = descendants(proc.pid)
            proc.kill()
            proc.communicate(timeout=10)
            for pid in children:
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)


class Hooks:
    """A webhook receiver: every POST body with the monotonic and wall time it arrived."""

    def __init__(self) -> None:
        self.received: list[tuple[float, float, dict[str, Any]]] = []
        self.event = threading.Event()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hooks.received.append((time.monotonic(), time.time(), json.loads(body or b"{}")))
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
