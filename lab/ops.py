"""What lab actors do, as operations that two runtimes interpret.

HMI, engineering workstation and attack scenarios are written once, as Python generators
that ``yield`` operations (connect, send a Modbus request and wait for its answer, sleep,
sweep ports with SYNs, poison ARP caches...) and receive each operation's result. The
synthetic generator (``sentinel.lab.synth``) runs them in simulated time and writes the
packets a capture would hold; the live lab (``sentinel.lab.live``) runs them with real
sockets in network namespaces. So a scenario is the same attack in both worlds.

``Actor.now()`` is the runtime's clock in seconds (epoch seconds of simulated or real time);
``Actor.rng`` is the actor's own seeded random generator.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

MODBUS_PORT = 502
MBAP = struct.Struct(">HHHB")


# ----------------------------------------------------------------------------- operations
@dataclass(frozen=True)
class Sleep:
    """Do nothing for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Connect:
    """Open a TCP connection; the result is a connection handle, or None if refused."""

    dst: str
    port: int = MODBUS_PORT


@dataclass(frozen=True)
class Request:
    """Send one Modbus/TCP request on a connection and wait for the response to its
    transaction id; the result is the response PDU (function code onwards), or None after
    ``timeout`` seconds. ``tid`` None takes the connection's next transaction id."""

    conn: Any
    unit: int
    pdu: bytes
    timeout: float = 1.0
    tid: int | None = None


@dataclass(frozen=True)
class Send:
    """Write raw bytes on a connection (one TCP segment); the result is None."""

    conn: Any
    data: bytes


@dataclass(frozen=True)
class Burst:
    """Write each of ``adus`` as its own segment, ``interval`` seconds apart, without
    waiting for answers; then wait up to ``linger`` seconds for the last answers. The result
    is the number of Modbus responses received."""

    conn: Any
    adus: tuple[bytes, ...]
    interval: float
    linger: float = 1.0


@dataclass(frozen=True)
class Close:
    """Close a connection (FIN)."""

    conn: Any


@dataclass(frozen=True)
class SynScan:
    """Half-open scan (as ``nmap -sS``): a SYN to each port ``interval`` seconds apart;
    the result is the sorted list of ports that answered SYN/ACK."""

    dst: str
    ports: tuple[int, ...]
    interval: float
    sport: int


@dataclass(frozen=True)
class SynFlood:
    """``count`` SYNs to ``dst:port`` from random source ports, ``interval`` seconds apart."""

    dst: str
    port: int
    count: int
    interval: float


@dataclass(frozen=True)
class Mitm:
    """ARP-spoof ``victim`` and ``plc`` into sending to the attacker for ``duration``
    seconds (re-poisoning every ``repoison`` seconds), forward what they send each other,
    and multiply the register values of FC 3/4 responses from ``plc`` by ``factor``;
    restore both ARP caches at the end."""

    victim: str
    plc: str
    duration: float
    factor: float
    repoison: float = 2.0


Op = Sleep | Connect | Request | Send | Burst | Close | SynScan | SynFlood | Mitm
Script = Generator[Op, Any, None]


@dataclass
class Actor:
    """What a script may use: its address, clock and random generator."""

    name: str
    address: str
    rng: random.Random
    now: Callable[[], float]
    notes: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- Modbus PDUs
def read(fc: int, address: int, quantity: int) -> bytes:
    """FC 1-4 request (spec 6.1-6.4)."""
    return struct.pack(">BHH", fc, address, quantity)


def write_coil(address: int, on: bool) -> bytes:
    """FC 5 request (spec 6.5)."""
    return struct.pack(">BHH", 5, address, 0xFF00 if on else 0)


def write_register(address: int, value: int) -> bytes:
    """FC 6 request (spec 6.6)."""
    return struct.pack(">BHH", 6, address, value & 0xFFFF)


def write_registers(address: int, values: list[int]) -> bytes:
    """FC 16 request (spec 6.12)."""
    n = len(values)
    return struct.pack(f">BHHB{n}H", 16, address, n, 2 * n, *values)


def write_coils(address: int, values: list[bool]) -> bytes:
    """FC 15 request (spec 6.11)."""
    packed = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            packed[i // 8] |= 1 << (i % 8)
    return struct.pack(">BHHB", 15, address, len(values), len(packed)) + bytes(packed)


def diagnostics(sub_function: int, data: int = 0) -> bytes:
    """FC 8 request (spec 6.8): sub-function and one data word."""
    return struct.pack(">BHH", 8, sub_function, data)


def read_device_id(code: int = 1, object_id: int = 0) -> bytes:
    """FC 43 / MEI 14 request (spec 6.21)."""
    return bytes((0x2B, 0x0E, code, object_id))


def report_server_id() -> bytes:
    """FC 17 request (spec 6.13)."""
    return b"\x11"


def adu(tid: int, unit: int, pdu: bytes) -> bytes:
    """MBAP header (spec 4.1) + PDU."""
    return MBAP.pack(tid & 0xFFFF, 0, len(pdu) + 1, unit) + pdu


def registers_of(response: bytes | None) -> list[int] | None:
    """Register values of an FC 3/4 response PDU, or None."""
    if not response or response[0] not in (3, 4) or len(response) < 2:
        return None
    n = response[1] // 2
    if len(response) < 2 + 2 * n:
        return None
    return list(struct.unpack_from(f">{n}H", response, 2))
