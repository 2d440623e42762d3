"""Scan safety: the one place where Sentinel's active Modbus requests are checked.

Every request a scheduled job sends goes through ``ScanSession.request``, and every client is
a ``ReadOnlyModbusClient``, whose ``execute`` (the method all of pymodbus's request helpers
end in) refuses anything but the read-only function codes below. The rules:

- **Read-only function codes only**: 1 Read Coils, 2 Read Discrete Inputs, 3 Read Holding
  Registers, 4 Read Input Registers, 17 Report Server ID, and 43 only with MEI type 14 Read
  Device Identification (Modbus Application Protocol V1.1b3, sections 6.1-6.4, 6.13, 6.21).
  No diagnostics (8: sub-function 1 restarts the device, 4 silences it), no MEI 13.
- **Scopes**: a job may only address hosts inside its declared ``scopes``; the config refuses
  other targets, and ``ScanGuard.check`` refuses them again before any packet is sent (a
  playbook's ``scan.device`` or a config built in code cannot slip past).
- **Rate limit**: at most ``rate`` requests per second for the whole job.
- **One request in flight per device**: a process-wide lock per (address, port), shared by
  all jobs, so an inventory and an integrity check never overlap on one controller.
- **Timeouts** on connecting and on every request; no automatic retries.
- **Latency abort**: a device whose answer takes longer than ``max_latency`` seconds, or more
  than ``latency_factor`` times the median of its first answers, is left alone for the rest
  of the run: a controller that slows down under our reads is busy with its real work.
- **Dry run**: the session records what it would send and sends nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sentinel.errors import SentinelError

log = logging.getLogger(__name__)

# Function code -> name (spec V1.1b3 section 6); 43 is allowed with MEI type 14 only.
READ_ONLY_FUNCTION_CODES: dict[int, str] = {
    1: "Read Coils",
    2: "Read Discrete Inputs",
    3: "Read Holding Registers",
    4: "Read Input Registers",
    17: "Report Server ID",
    43: "Read Device Identification (MEI 14)",
}
READ_DEVICE_ID_MEI = 14
LATENCY_BASELINE = 3  # answers that set a device's normal latency
LATENCY_FLOOR = 0.05  # seconds: below this, a factor of the baseline is noise


class ScanSafetyError(SentinelError):
    """A request or target that scan safety forbids."""


class DeviceError(Exception):
    """A device did not answer usefully (connection refused, timeout, malformed answer)."""


class LatencyAbort(DeviceError):
    """A device became slow; the run leaves it alone."""


def check_read_only(pdu: Any) -> None:
    """Raise ``ScanSafetyError`` unless ``pdu`` is a read-only request."""
    fc = getattr(pdu, "function_code", None)
    if fc not in READ_ONLY_FUNCTION_CODES:
        raise ScanSafetyError(f"function code {fc} is not read-only: scans never send it")
    if fc == 43 and getattr(pdu, "sub_function_code", None) != READ_DEVICE_ID_MEI:
        raise ScanSafetyError("function code 43 is allowed with MEI type 14 only")


def _client_class() -> type:
    from pymodbus.client import ModbusTcpClient

    class ReadOnlyModbusClient(ModbusTcpClient):
        """pymodbus's TCP client that refuses to send anything but read-only requests."""

        def execute(self, no_response_expected: bool, request: Any) -> Any:
            check_read_only(request)
            return super().execute(no_response_expected, request)

    return ReadOnlyModbusClient


_CLIENT: type | None = None


def read_only_client(host: str, port: int, timeout: float) -> Any:
    global _CLIENT
    if _CLIENT is None:
        _CLIENT = _client_class()
    return _CLIENT(host, port=port, timeout=timeout, retries=0, reconnect_delay=0)


class ScanGuard:
    """The scopes of one job."""

    def __init__(self, scopes: Iterable[str]) -> None:
        self.scopes = [ipaddress.ip_network(s, strict=False) for s in scopes]
        if not self.scopes:
            raise ScanSafetyError("a scan needs declared scopes")

    def check(self, address: str) -> str:
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            raise ScanSafetyError(f"not an IP address: {address!r}") from None
        if not any(addr in net for net in self.scopes):
            scopes = ", ".join(map(str, self.scopes))
            raise ScanSafetyError(f"{addr} is outside the job's scopes ({scopes})")
        return str(addr)


class RateLimiter:
    """At most ``rate`` events per second (evenly spaced)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


_DEVICE_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def device_lock(address: str, port: int) -> threading.Lock:
    """The process-wide lock of one device: one request in flight per device."""
    with _LOCKS_GUARD:
        lock = _DEVICE_LOCKS.get((address, port))
        if lock is None:
            lock = _DEVICE_LOCKS[(address, port)] = threading.Lock()
        return lock


@dataclass
class DeviceState:
    address: str
    port: int
    client: Any = None
    latencies: list[float] = field(default_factory=list)
    aborted: str | None = None
    requests: int = 0


@dataclass
class ScanSession:
    """One run of one job: the guard, the limiter and the devices it talks to."""

    guard: ScanGuard
    rate: float = 5.0
    timeout: float = 2.0
    connect_timeout: float = 2.0
    max_latency: float = 1.0
    latency_factor: float = 5.0
    dry_run: bool = False
    planned: list[str] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.rate)
        self.devices: dict[tuple[str, int], DeviceState] = {}

    def device(self, address: str, port: int) -> DeviceState:
        address = self.guard.check(address)
        key = (address, port)
        if key not in self.devices:
            self.devices[key] = DeviceState(address, port)
        return self.devices[key]

    def request(self, address: str, port: int, pdu: Any, what: str) -> Any:
        """Send one read-only request and return the response (None in dry-run mode)."""
        check_read_only(pdu)
        dev = self.device(address, port)
        if dev.aborted:
            raise LatencyAbort(dev.aborted)
        if self.dry_run:
            self.planned.append(f"{dev.address}:{port} unit {pdu.dev_id}: {what}")
            return None
        from pymodbus.exceptions import ModbusException

        with device_lock(dev.address, port):
            if dev.client is None:
                client = read_only_client(dev.address, port, self.timeout)
                client.comm_params.timeout_connect = self.connect_timeout
                self.limiter.wait()
                if not client.connect():
                    client.close()
                    raise DeviceError(f"{dev.address}:{port}: cannot connect")
                dev.client = client
            self.limiter.wait()
            started = time.monotonic()
            try:
                response = dev.client.execute(False, pdu)
            except ModbusException as exc:
                self._drop(dev)
                raise DeviceError(f"{dev.address}:{port}: {what}: {_short(exc)}") from None
            except OSError as exc:
                self._drop(dev)
                raise DeviceError(f"{dev.address}:{port}: {what}: {exc.strerror or exc}") from None
            latency = time.monotonic() - started
        self.requests += 1
        dev.requests += 1
        self._check_latency(dev, latency)
        return response

    def _check_latency(self, dev: DeviceState, latency: float) -> None:
        baseline = statistics.median(dev.latencies) if dev.latencies else None
        if len(dev.latencies) < LATENCY_BASELINE:
            dev.latencies.append(latency)
        limit = self.max_latency
        if baseline is not None and len(dev.latencies) >= LATENCY_BASELINE:
            limit = min(limit, max(LATENCY_FLOOR, baseline * self.latency_factor))
        if latency > limit:
            dev.aborted = (
                f"{dev.address}:{dev.port}: answered in {latency * 1000:.0f} ms (limit "
                f"{limit * 1000:.0f} ms): scan of this device aborted"
            )
            log.warning("%s", dev.aborted)
            self._drop(dev)
            raise LatencyAbort(dev.aborted)

    def _drop(self, dev: DeviceState) -> None:
        if dev.client is not None:
            with contextlib.suppress(Exception):  # closing a broken client
                dev.client.close()
            dev.client = None

    def close(self) -> None:
        for dev in self.devices.values():
            self._drop(dev)


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
