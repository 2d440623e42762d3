"""Real pymodbus servers on loopback (127.0.0.x, one shared random port) for the scheduler
tests, each in its own process (``plc_server.py``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).with_name("plc_server.py")
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")


def free_port(hosts: tuple[str, ...] = HOSTS) -> int:
    """A port free on every host of ``hosts``."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            for h in hosts[1:]:
                with socket.socket() as s2:
                    s2.bind((h, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


_LOGS = iter(range(10_000))


@dataclass
class Plc:
    host: str
    port: int
    vendor: str = "Acme Controls"
    product: str = "AHU-3000"
    revision: str = "2.1.0"
    delay: float = 0.0
    slow_after: int = 0
    holding: str = "215,500,150,80,0,0,0,0"
    proc: Any = None
    log: Path = field(default_factory=lambda: Path("/dev/null"))

    def start(self, logdir: Path) -> Plc:
        self.log = logdir / f"plc-{self.host}-{next(_LOGS)}.log"
        self.log.write_text("")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVER),
                self.host,
                str(self.port),
                str(self.log),
                "--vendor",
                self.vendor,
                "--product",
                self.product,
                "--revision",
                self.revision,
                "--delay",
                str(self.delay),
                "--slow-after",
                str(self.slow_after),
                "--holding",
                self.holding,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"PLC server on {self.host} did not start"
        for _ in range(200):
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        self.clear()
        return self

    @property
    def requests(self) -> list[int]:
        """Function codes of the requests received since the last ``clear``."""
        text = self.log.read_text()
        return [int(x) for x in text.split()]

    def clear(self) -> None:
        time.sleep(0.05)
        self.log.write_text("")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def attacker_write(self, address: int, value: int) -> None:
        """What an attacker does: a real FC 6 write from an ordinary pymodbus client."""
        from pymodbus.client import ModbusTcpClient

        client = ModbusTcpClient(self.host, port=self.port, timeout=2)
        assert client.connect()
        try:
            resp = client.write_register(address, value, device_id=1)
            assert not resp.isError()
        finally:
            client.close()


class Plcs(dict):
    def __init__(self, port: int, logdir: Path) -> None:
        super().__init__()
        self.port = port
        self.logdir = logdir

    def start(self, host: str, **kw: Any) -> Plc:
        old = self.get(host)
        if old is not None:
            old.stop()
        self[host] = Plc(host, self.port, **kw).start(self.logdir)
        return self[host]

    def stop(self, host: str) -> None:
        self.pop(host).stop()


@pytest.fixture
def plcs(tmp_path: Path) -> Iterator[Plcs]:
    started = Plcs(free_port(), tmp_path)
    started.start("127.0.0.2")
    started.start("127.0.0.3", vendor="Volta", product="GasMon", revision="1.0")
    yield started
    for plc in list(started.values()):
        plc.stop()


def run_sentinel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed ``sentinel`` command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
