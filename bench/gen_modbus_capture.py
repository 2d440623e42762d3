#!/usr/bin/env python3
"""Deterministic generator of large, realistic Modbus/TCP captures.

Writes a classic little-endian pcap (linktype 1 / Ethernet, microsecond timestamps),
optionally gzip-compressed when the output name ends in ``.gz``. Packets are built with
``struct`` from per-direction templates, so one million packets take seconds, not minutes.

What the capture contains (all drawn from one ``random.Random(seed)``, so the same
arguments always give byte-identical output):

* HMI/SCADA clients in 192.0.2.0/24 polling PLCs in 198.51.100.0/24 (same site, sub-ms
  RTT) and 203.0.113.0/24 (remote sites over WAN/radio, 6-25 ms RTT) on TCP port 502.
* Every connection opens with a SYN, SYN/ACK, ACK handshake and ends with a
  FIN/ACK, FIN/ACK, ACK exchange. About a quarter of the connections open and close
  part-way through the capture; the rest live for the whole capture.
* Polling cycles of 1-5 requests, repeated every 100 ms-1 s with jitter. Requests and
  responses are PSH/ACK segments with consistent sequence/acknowledgement numbers; the
  client's pure ACK is sent after a delayed-ACK timeout or piggy-backed on its next request.
* Function codes mostly 3/4 (quantities 1-125, register banks that look like process data:
  scaled analog values, status words, 32-bit counters, IEEE floats, setpoints), 1/2 (coils,
  discrete inputs), occasional writes (5, 6, 15, 16), exception responses (a misconfigured
  poll item that always gets 0x83/0x84 code 2, rare "server busy" code 6, FC 43 refused
  with code 1 by PLCs that lack it), FC 43/14 device identification and FC 8 diagnostics.
* A small fraction of segments carry two pipelined Modbus PDUs (and the response segment
  carries both answers); a small fraction of requests are split across two TCP segments.
* IPv4 header and TCP checksums are correct (computed with the "big integer modulo 0xFFFF"
  identity for ones' complement sums, which is cheap in CPython).

The total packet count is exact: connection set-up and tear-down are reserved in a
budget, and the last transactions are sized (2, 3 or 4 packets) to land on ``--packets``.

Usage::

    python bench/gen_modbus_capture.py OUT.pcap --packets 1000000 --connections 300 --seed 1
    python bench/gen_modbus_capture.py OUT.pcap.gz --packets 20000 --truth OUT.json
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import math
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

# --------------------------------------------------------------------------- formats

PCAP_GLOBAL_HEADER = struct.Struct("<IHHiIII")
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
PCAP_RECORD = struct.Struct("<IIII")
# Ethernet (pre-built 14 bytes) + IPv4 (20, no options) + TCP (20, options go with data).
FRAME_HEADERS = struct.Struct("!14sBBHHHBBH4s4sHHIIBBHHH")
MBAP = struct.Struct(">HHHB")
U16 = struct.Struct(">H")
U16_PAIR = struct.Struct(">HH")
U32 = struct.Struct(">I")
F32 = struct.Struct(">f")

FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10
MODBUS_PORT = 502
BASE_EPOCH = 1_709_539_200  # 2024-03-04 08:00:00 UTC
CLIENT_SYN_OPTIONS = bytes.fromhex("020405b401010402")  # MSS 1460, NOP, NOP, SACK_PERM
SERVER_SYN_OPTIONS = bytes.fromhex("020405b4")  # MSS 1460 (typical embedded stack)

REG_BANK = 1024  # holding/input registers per unit
COIL_BYTES = 256  # 2048 coils / discrete inputs per unit

# Per-transaction probabilities of the "unusual" things.
P_WRITE = 0.003
P_DIAG = 0.0003
P_DEVID = 0.0002
P_BUSY = 0.0005
P_DOUBLE = 0.01
P_SPLIT = 0.005
P_SLOW = 0.004
SHORT_LIVED_FRACTION = 0.25

# (vendor, product code, revision, MAC OUI, supports FC 43/14)
VENDORS: tuple[tuple[str, str, str, bytes, bool], ...] = (
    ("Schneider Electric", "BMX P34 2020", "v3.10", b"\x00\x80\xf4", True),
    ("Schneider Electric", "TM241CEC24T", "V5.1.9", b"\x00\x80\xf4", True),
    ("WAGO", "750-8212", "03.10.08", b"\x00\x30\xde", True),
    ("Phoenix Contact", "AXC F 2152", "2023.0.2", b"\x00\xa0\x45", True),
    ("ABB", "AC500 PM573-ETH", "2.8.4", b"\x00\x24\x59", True),
    ("Siemens", "6ES7 215-1AG40-0XB0", "V4.5", b"\x00\x1b\x1b", False),
)

Packet = tuple[int, int, bytes]  # (timestamp in us, tie-breaker, frame bytes)


def _ones_sum_int(data: bytes) -> int:
    """Integer congruent (mod 0xFFFF) to the ones' complement sum of 16-bit words of data."""
    if len(data) & 1:
        return int.from_bytes(data, "big") << 8
    return int.from_bytes(data, "big")


def _fold(n: int) -> int:
    """Checksum field from an integer congruent to the ones' complement sum."""
    r = n % 0xFFFF
    return 0xFFFF - (r or 0xFFFF)


# --------------------------------------------------------------------------- model


@dataclass(slots=True)
class Direction:
    """Pre-computed per-direction header template of one TCP connection."""

    eth: bytes
    src: bytes
    dst: bytes
    sport: int
    dport: int
    ttl: int
    win: int
    ip_id: int
    ip_sum: int = 0
    tcp_sum: int = 0

    def __post_init__(self) -> None:
        addrs = int.from_bytes(self.src, "big") + int.from_bytes(self.dst, "big")
        self.ip_sum = 0x4500 + 0x4000 + (self.ttl << 8 | 6) + addrs
        self.tcp_sum = addrs + 6 + self.sport + self.dport + self.win


@dataclass(slots=True)
class Unit:
    """Register and coil image of one Modbus unit (slave id) behind a server."""

    regs: bytearray
    coils: bytearray


@dataclass(slots=True)
class Plc:
    """A Modbus/TCP server."""

    ip: bytes
    mac: bytes
    vendor: tuple[str, str, str, bytes, bool]
    units: list[Unit]
    ttl: int
    win: int
    rtt_us: int
    proc_us: int


@dataclass(slots=True)
class PollItem:
    """One request of a polling cycle: (function code, unit id, address, quantity)."""

    fc: int
    unit: int
    addr: int
    qty: int
    bad: bool = False  # misconfigured: always answered with exception code 2


@dataclass(slots=True)
class Conn:
    """One client-to-PLC TCP connection and its polling schedule."""

    idx: int
    plc: Plc
    c2s: Direction
    s2c: Direction
    isn_c: int
    isn_s: int
    start_us: int
    end_us: int | None
    period_us: int
    items: list[PollItem]
    tid: int
    state: int = 0  # 0 new, 1 open, 2 closed
    c_seq: int = 0
    s_seq: int = 0
    item_pos: int = 0
    cycle_start: int = 0
    startup: list[str] = field(default_factory=list)


@dataclass
class Stats:
    """What was written; also serialised as the ``--truth`` JSON."""

    packets: int = 0
    connections: int = 0
    requests: Counter[int] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[int] = field(default_factory=Counter)
    multi_pdu_segments: int = 0
    split_requests: int = 0
    pcap_bytes: int = 0
    file_bytes: int = 0
    first_ts_us: int = 0
    last_ts_us: int = 0
    seconds: float = 0.0

    @property
    def pdus(self) -> int:
        return sum(self.requests.values()) + sum(self.responses.values())

    def to_json(self) -> dict[str, object]:
        def by_fc(c: Counter[int]) -> dict[str, int]:
            return {str(k): c[k] for k in sorted(c)}

        return {
            "packets": self.packets,
            "connections": self.connections,
            "modbus_pdus": self.pdus,
            "requests_total": sum(self.requests.values()),
            "responses_total": sum(self.responses.values()),
            "exceptions_total": sum(self.exceptions.values()),
            "requests": by_fc(self.requests),
            "responses": by_fc(self.responses),
            "exceptions": by_fc(self.exceptions),
            "multi_pdu_segments": self.multi_pdu_segments,
            "split_requests": self.split_requests,
            "pcap_bytes": self.pcap_bytes,
            "first_ts": self.first_ts_us / 1e6,
            "last_ts": self.last_ts_us / 1e6,
            "notes": (
                "responses/exceptions are keyed by the function code with the 0x80 "
                "exception bit cleared; every exception is also counted in responses"
            ),
        }


# --------------------------------------------------------------------------- generator


class Generator:
    """Event-driven simulation of all connections, emitting packets in time order."""

    def __init__(
        self,
        packets: int,
        connections: int,
        seed: int,
        clients: int = 10,
        servers: int = 60,
        split_in_header: bool = False,
    ) -> None:
        if packets < 16:
            raise ValueError("--packets must be at least 16")
        self.rng = random.Random(seed)
        self.target = packets
        self.split_in_header = split_in_header
        # Each connection costs 6 packets of set-up/tear-down; keep room for polling.
        max_conns = max(1, packets // 40)
        if connections > max_conns:
            print(
                f"note: {connections} connections do not fit in {packets} packets; "
                f"using {max_conns}",
                file=sys.stderr,
            )
            connections = max_conns
        self.n_conns = connections
        self.stats = Stats()
        self.emitted = 0
        self.reserve = 0
        self.ending = False
        self.events: list[tuple[int, int, int, int]] = []
        self.outq: list[Packet] = []
        self.counter = 0
        self.clients = self._make_clients(clients)
        self.plcs = self._make_plcs(servers)
        self.conns = self._make_conns(connections)

    # ----------------------------------------------------------------- set-up

    def _make_clients(self, n: int) -> list[tuple[bytes, bytes, int]]:
        out = []
        for i in range(n):
            ip = bytes((192, 0, 2, 10 + i))
            mac = bytes((0x18, 0x66, 0xDA, 0x10, 0x00, 10 + i))
            out.append((ip, mac, self.rng.randint(32768, 60999)))
        return out

    def _make_unit(self) -> Unit:
        rng = self.rng
        regs = bytearray(2 * REG_BANK)
        for r in range(0, 100):  # analog process values, scaled integers
            U16.pack_into(
                regs,
                2 * r,
                rng.choice((rng.randint(150, 350), rng.randint(0, 1000), rng.randint(4000, 20000))),
            )
        for r in range(100, 200):  # status / alarm words
            U16.pack_into(regs, 2 * r, rng.choice((0, 0, 1, 0x11, 0x0100, rng.getrandbits(8))))
        for r in range(200, 300, 2):  # 32-bit run-hour / energy counters (hi, lo)
            U32.pack_into(regs, 2 * r, rng.randint(0, 5_000_000))
        for r in range(300, 400, 2):  # IEEE 754 floats (temperature, pressure, frequency)
            F32.pack_into(
                regs,
                2 * r,
                rng.choice((rng.uniform(15, 90), rng.uniform(0.5, 12), rng.uniform(49.9, 50.1))),
            )
        for r in range(400, 600):  # setpoints / configuration, mostly constant
            if rng.random() < 0.6:
                U16.pack_into(regs, 2 * r, rng.choice((0, 1, 100, 250, 500, 1000, 1500)))
        coils = bytearray(rng.getrandbits(8) & rng.getrandbits(8) for _ in range(COIL_BYTES))
        return Unit(regs, coils)

    def _make_plcs(self, n: int) -> list[Plc]:
        rng = self.rng
        out = []
        for i in range(n):
            remote = i % 2 == 1
            ip = bytes((203, 0, 113, 10 + i // 2)) if remote else bytes((198, 51, 100, 10 + i // 2))
            vendor = rng.choice(VENDORS)
            mac = vendor[3] + bytes((rng.getrandbits(8), i >> 8, i & 0xFF))
            r = rng.random()
            n_units = 1 if r < 0.7 else rng.randint(2, 4) if r < 0.9 else rng.randint(5, 8)
            out.append(
                Plc(
                    ip=ip,
                    mac=mac,
                    vendor=vendor,
                    units=[self._make_unit() for _ in range(n_units)],
                    ttl=rng.choice((64, 64, 60, 128, 255, 30)),
                    win=rng.choice((2048, 4096, 5840, 8192, 8192, 16384)),
                    rtt_us=rng.randint(6_000, 25_000) if remote else rng.randint(150, 900),
                    proc_us=rng.randint(1_500, 15_000),
                )
            )
        return out

    def _make_items(self, plc: Plc) -> list[PollItem]:
        rng = self.rng
        items = []
        for _ in range(rng.choices((1, 2, 3, 4, 5), (30, 30, 20, 12, 8))[0]):
            fc = rng.choices((3, 4, 1, 2, 16), (50, 25, 12, 8, 3))[0]
            unit = rng.randint(1, len(plc.units))
            if fc in (3, 4):
                qty = rng.choices(
                    (1, 2, 4, 8, 10, 16, 20, 32, 50, 64, 100, 120, 125),
                    (4, 8, 6, 8, 10, 10, 10, 8, 6, 6, 6, 3, 5),
                )[0]
                addr = rng.choice((0, 0, 10, 100, 200, 256, 300, 400, 500, 1000, 3000, 4096))
                addr += rng.choice((0, 0, 0, 2, 8, 20))
            elif fc in (1, 2):
                qty = rng.choice((1, 8, 16, 16, 32, 64, 128, 256, 512))
                addr = rng.choice((0, 0, 16, 100, 256, 1000))
            else:  # periodic setpoint sync written by the HMI
                qty = rng.randint(2, 10)
                addr = rng.randint(400, 480)
            items.append(PollItem(fc, unit, addr, qty))
        if rng.random() < 0.05:  # misconfigured tag: address the PLC does not have
            items.append(
                PollItem(
                    rng.choice((3, 4)), 1, rng.randint(9000, 9990), rng.randint(1, 10), bad=True
                )
            )
        return items

    def _make_conns(self, n: int) -> list[Conn]:
        rng = self.rng
        specs = []
        extra = n - len(self.plcs)
        p_short = min(1.0, SHORT_LIVED_FRACTION * n / extra) if extra > 0 else 0.0
        for i in range(n):
            plc = self.plcs[i] if i < len(self.plcs) else rng.choice(self.plcs)
            client = i if i < len(self.clients) else rng.randrange(len(self.clients))
            # Every PLC gets one long-lived connection; the extra ones are short-lived with
            # a probability that makes SHORT_LIVED_FRACTION of all connections short-lived.
            short = i >= len(self.plcs) and rng.random() < p_short
            period = rng.choice((100, 200, 250, 500, 500, 1000, 1000)) * 1000
            items = self._make_items(plc)
            specs.append((plc, client, short, period, items))

        # Estimate capture duration D from the polling rates so that short-lived connections
        # can be placed inside it; the packet budget, not D, decides where the capture ends.
        free = self.target - 6 * n
        rate_long = rate_short = 0.0
        short_frac: list[float] = []
        for plc, _client, short, period, items in specs:
            item_us = plc.rtt_us + plc.proc_us + 1500
            cycle_us = max(period * 1.02, len(items) * item_us + 2000)
            rate = (2 * len(items) + 0.6) / (cycle_us / 1e6)
            if short:
                frac = rng.uniform(0.02, 0.2)
                short_frac.append(frac)
                rate_short += rate * frac
            else:
                rate_long += rate
        duration = max(free / max(rate_long + rate_short, 1e-9), 1.0)

        conns = []
        short_iter = iter(short_frac)
        for idx, (plc, client, short, period, items) in enumerate(specs):
            c_ip, c_mac, _ = self.clients[client]
            sport = self._next_port(client)
            if short:
                start = int(rng.uniform(0.05, 0.75) * duration * 1e6)
                end: int | None = start + int(next(short_iter) * duration * 1e6)
            else:
                start = int(rng.uniform(0.0, min(2.0, 0.02 * duration)) * 1e6)
                end = None
            c_ttl = rng.choice((128, 64))
            conn = Conn(
                idx=idx,
                plc=plc,
                c2s=Direction(
                    plc.mac + c_mac + b"\x08\x00",
                    c_ip,
                    plc.ip,
                    sport,
                    MODBUS_PORT,
                    c_ttl,
                    64240,
                    rng.getrandbits(16),
                ),
                s2c=Direction(
                    c_mac + plc.mac + b"\x08\x00",
                    plc.ip,
                    c_ip,
                    MODBUS_PORT,
                    sport,
                    plc.ttl,
                    plc.win,
                    rng.getrandbits(16),
                ),
                isn_c=rng.getrandbits(32),
                isn_s=rng.getrandbits(32),
                start_us=start,
                end_us=end,
                period_us=period,
                items=items,
                tid=rng.randint(0, 0xFFFF) if rng.random() < 0.3 else 0,
            )
            if rng.random() < 0.3:
                conn.startup.append("devid")
            if rng.random() < 0.1:
                conn.startup.append("diag")
            conns.append(conn)
        return conns

    def _next_port(self, client: int) -> int:
        ip, mac, port = self.clients[client]
        nxt = port + 1 if port < 60999 else 32768
        self.clients[client] = (ip, mac, nxt)
        return port

    # ----------------------------------------------------------------- packets

    def _frame(
        self, d: Direction, flags: int, seq: int, ack: int, data: bytes, opts: bytes = b""
    ) -> bytes:
        if opts:
            data = opts + data
        tcp_len = 20 + len(data)
        off = (5 + len(opts) // 4) << 4
        tcsum = _fold(d.tcp_sum + tcp_len + seq + ack + (off << 8 | flags) + _ones_sum_int(data))
        total = 20 + tcp_len
        ip_id = d.ip_id
        d.ip_id = (ip_id + 1) & 0xFFFF
        return (
            FRAME_HEADERS.pack(
                d.eth,
                0x45,
                0,
                total,
                ip_id,
                0x4000,
                d.ttl,
                6,
                _fold(d.ip_sum + total + ip_id),
                d.src,
                d.dst,
                d.sport,
                d.dport,
                seq,
                ack,
                off,
                flags,
                d.win,
                tcsum,
                0,
            )
            + data
        )

    def _out(self, ts: int, frame: bytes) -> None:
        self.counter += 1
        heapq.heappush(self.outq, (ts, self.counter, frame))

    def _event(self, ts: int, kind: int, conn: Conn) -> None:
        self.counter += 1
        heapq.heappush(self.events, (ts, self.counter, kind, conn.idx))

    # ----------------------------------------------------------------- TCP life

    def _open(self, c: Conn, t: int) -> None:
        rtt = c.plc.rtt_us
        self._out(t, self._frame(c.c2s, SYN, c.isn_c, 0, b"", CLIENT_SYN_OPTIONS))
        t2 = t + rtt + self.rng.randint(20, 300)
        self._out(
            t2,
            self._frame(
                c.s2c, SYN | ACK, c.isn_s, (c.isn_c + 1) & 0xFFFFFFFF, b"", SERVER_SYN_OPTIONS
            ),
        )
        c.c_seq = (c.isn_c + 1) & 0xFFFFFFFF
        c.s_seq = (c.isn_s + 1) & 0xFFFFFFFF
        t3 = t2 + self.rng.randint(20, 150)
        self._out(t3, self._frame(c.c2s, ACK, c.c_seq, c.s_seq, b""))
        c.state = 1
        self.emitted += 3
        self.reserve -= 3
        self.stats.connections += 1
        c.cycle_start = t3 + self.rng.randint(300, 5000)
        self._event(c.cycle_start, 1, c)

    def _close(self, c: Conn, t: int) -> None:
        rng = self.rng
        self._out(t, self._frame(c.c2s, FIN | ACK, c.c_seq, c.s_seq, b""))
        c.c_seq = (c.c_seq + 1) & 0xFFFFFFFF
        t2 = t + c.plc.rtt_us + rng.randint(100, 2000)
        self._out(t2, self._frame(c.s2c, FIN | ACK, c.s_seq, c.c_seq, b""))
        c.s_seq = (c.s_seq + 1) & 0xFFFFFFFF
        self._out(t2 + rng.randint(30, 200), self._frame(c.c2s, ACK, c.c_seq, c.s_seq, b""))
        c.state = 2
        self.emitted += 3
        self.reserve -= 3

    def _begin_ending(self, t: int) -> None:
        """Budget spent: connections not yet opened open now (and close right after)."""
        self.ending = True
        for c in self.conns:
            if c.state == 0 and c.start_us > t:
                c.start_us = t + self.rng.randint(1000, 200_000)
                self._event(c.start_us, 0, c)

    # ----------------------------------------------------------------- Modbus

    def _read_response(self, c: Conn, item: PollItem) -> bytes:
        fc, qty = item.fc, item.qty
        unit = c.plc.units[item.unit - 1]
        rng = self.rng
        if fc in (3, 4):
            i = item.addr % REG_BANK
            if i + qty > REG_BANK:
                i = REG_BANK - qty
            self._evolve(unit.regs, i + rng.randrange(qty))
            return bytes((fc, 2 * qty)) + unit.regs[2 * i : 2 * (i + qty)]
        nbytes = (qty + 7) // 8
        i = (item.addr // 8) % (COIL_BYTES - nbytes + 1)
        if rng.random() < 0.1:
            unit.coils[i + rng.randrange(nbytes)] ^= 1 << rng.randrange(8)
        bits = bytearray(unit.coils[i : i + nbytes])
        if qty & 7:
            bits[-1] &= (1 << (qty & 7)) - 1
        return bytes((fc, nbytes)) + bits

    def _evolve(self, regs: bytearray, r: int) -> None:
        """Nudge one register so that successive reads look like live process data."""
        rng = self.rng
        region = r // 100
        if region == 0:
            v = U16.unpack_from(regs, 2 * r)[0] + rng.choice((-3, -1, -1, 1, 1, 3))
            U16.pack_into(regs, 2 * r, min(max(v, 0), 0xFFFF))
        elif region == 1:
            if rng.random() < 0.05:
                v = U16.unpack_from(regs, 2 * r)[0] ^ (1 << rng.randrange(8))
                U16.pack_into(regs, 2 * r, v)
        elif region == 2:
            r &= ~1
            U32.pack_into(
                regs, 2 * r, (U32.unpack_from(regs, 2 * r)[0] + rng.randint(1, 5)) & 0xFFFFFFFF
            )
        elif region == 3:
            r &= ~1
            v = F32.unpack_from(regs, 2 * r)[0]
            F32.pack_into(regs, 2 * r, v * (1 + rng.uniform(-0.002, 0.002)))

    def _write_pair(self, c: Conn) -> tuple[int, int, bytes, bytes]:
        """An operator write: returns (fc, unit id, request PDU, response PDU)."""
        rng = self.rng
        unit_id = rng.randint(1, len(c.plc.units))
        unit = c.plc.units[unit_id - 1]
        fc = rng.choices((6, 16, 5, 15), (50, 20, 20, 10))[0]
        if fc == 6:
            addr, value = rng.randint(400, 599), rng.choice((0, 1, 100, 250, 500, 750, 1200))
            U16.pack_into(unit.regs, 2 * addr, value)
            pdu = bytes((6,)) + U16_PAIR.pack(addr, value)
            return fc, unit_id, pdu, pdu
        if fc == 5:
            addr, on = rng.randint(0, 255), rng.random() < 0.5
            byte, bit = divmod(addr, 8)
            if on:
                unit.coils[byte] |= 1 << bit
            else:
                unit.coils[byte] &= ~(1 << bit) & 0xFF
            pdu = bytes((5,)) + U16_PAIR.pack(addr, 0xFF00 if on else 0)
            return fc, unit_id, pdu, pdu
        if fc == 16:
            addr, qty = rng.randint(400, 580), rng.randint(1, 16)
            values = b"".join(
                U16.pack(rng.choice((0, 1, 100, 500, rng.randint(0, 3000)))) for _ in range(qty)
            )
            unit.regs[2 * addr : 2 * (addr + qty)] = values
            head = bytes((16,)) + U16_PAIR.pack(addr, qty)
            return fc, unit_id, head + bytes((2 * qty,)) + values, head
        addr, qty = rng.randint(0, 31) * 8, rng.choice((8, 10, 16, 32))
        nbytes = (qty + 7) // 8
        bits = bytearray(rng.getrandbits(8) for _ in range(nbytes))
        if qty & 7:
            bits[-1] &= (1 << (qty & 7)) - 1
        head = bytes((15,)) + U16_PAIR.pack(addr, qty)
        return fc, unit_id, head + bytes((nbytes,)) + bits, head

    def _devid_pair(self, c: Conn) -> tuple[int, int, bytes, bytes]:
        vendor, product, rev, _oui, supported = c.plc.vendor
        req = bytes((0x2B, 0x0E, 0x01, 0x00))
        if not supported:
            return 43, 1, req, bytes((0xAB, 0x01))
        objs = b"".join(
            bytes((i, len(s))) + s.encode() for i, s in enumerate((vendor, product, rev))
        )
        return 43, 1, req, bytes((0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x03)) + objs

    def _diag_pair(self, c: Conn) -> tuple[int, int, bytes, bytes]:
        pdu = bytes((0x08, 0x00, 0x00)) + U16.pack(self.rng.choice((0xA537, 0x1234, 0x0000)))
        return 8, 1, pdu, pdu

    def _poll_pair(self, c: Conn, item: PollItem) -> tuple[int, int, bytes, bytes]:
        head = bytes((item.fc,)) + U16_PAIR.pack(item.addr, item.qty)
        req = head
        if item.fc == 16:  # periodic setpoint sync: write back the current values
            i = item.addr
            values = c.plc.units[item.unit - 1].regs[2 * i : 2 * (i + item.qty)]
            req = head + bytes((2 * item.qty,)) + values
        if item.bad:
            return item.fc, item.unit, req, bytes((item.fc | 0x80, 0x02))
        if self.rng.random() < P_BUSY:
            return item.fc, item.unit, req, bytes((item.fc | 0x80, 0x06))
        if item.fc == 16:
            return 16, item.unit, req, head
        return item.fc, item.unit, req, self._read_response(c, item)

    def _adus(self, c: Conn, pair: tuple[int, int, bytes, bytes]) -> tuple[bytes, bytes]:
        fc, unit_id, req, resp = pair
        tid = c.tid
        c.tid = (tid + 1) & 0xFFFF
        st = self.stats
        st.requests[fc] += 1
        st.responses[fc] += 1
        if resp[0] & 0x80:
            st.exceptions[fc] += 1
        return (
            MBAP.pack(tid, 0, len(req) + 1, unit_id) + req,
            MBAP.pack(tid, 0, len(resp) + 1, unit_id) + resp,
        )

    # ----------------------------------------------------------------- polling

    def _poll(self, c: Conn, t: int) -> None:
        rng = self.rng
        free = self.target - self.emitted - self.reserve
        if free < 2 or (c.end_us is not None and t >= c.end_us):
            if free < 2 and not self.ending:
                self._begin_ending(t)
            self._close(c, t)
            return

        # What to send: a start-up query, a rare extra, or the next item(s) of the cycle.
        pairs: list[tuple[int, int, bytes, bytes]]
        advance = 0
        r = rng.random()
        if c.startup:
            kind = c.startup.pop(0)
            pairs = [self._devid_pair(c) if kind == "devid" else self._diag_pair(c)]
        elif r < P_WRITE:
            pairs = [self._write_pair(c)]
        elif r < P_WRITE + P_DIAG:
            pairs = [self._diag_pair(c)]
        elif r < P_WRITE + P_DIAG + P_DEVID:
            pairs = [self._devid_pair(c)]
        else:
            pos, items = c.item_pos, c.items
            pairs = [self._poll_pair(c, items[pos])]
            advance = 1
            if pos + 1 < len(items) and rng.random() < P_DOUBLE:
                pairs.append(self._poll_pair(c, items[pos + 1]))
                advance = 2
        more_in_cycle = c.startup or c.item_pos + advance < len(c.items)

        split = len(pairs) == 1 and rng.random() < P_SPLIT
        adus = [self._adus(c, p) for p in pairs]
        req = b"".join(a[0] for a in adus)
        resp = b"".join(a[1] for a in adus)

        # Timing (microseconds, as seen at the capture point next to the clients).
        plc = c.plc
        t_req2 = t + rng.randint(40, 1500) if split else t
        proc = plc.proc_us * rng.randint(80, 130) // 100 + len(resp) * 20
        if rng.random() < P_SLOW:
            proc += rng.randint(20_000, 60_000)
        t_resp = t_req2 + plc.rtt_us + proc
        if more_in_cycle:
            t_next = t_resp + rng.randint(200, 3000)
            want_ack = rng.random() < 0.05
            t_ack = t_resp + rng.randint(60, 150)
        else:
            t_next = max(c.cycle_start + c.period_us * rng.randint(95, 105) // 100, t_resp + 2000)
            t_ack = t_resp + (
                rng.randint(100, 1000) if rng.random() < 0.3 else rng.randint(38_000, 42_000)
            )
            want_ack = t_ack < t_next - 500

        # Fit the packet budget exactly: never leave exactly one packet of it unspent.
        size = 2 + split + want_ack
        if size > free:
            split = split and free >= 3 + want_ack
            want_ack = want_ack and free >= 3 + split
            size = 2 + split + want_ack
            if size > free:
                split = False
                size = 2 + want_ack
        if free - size == 1:
            if want_ack:
                want_ack = False
            elif split:
                split = False
            else:
                want_ack = True
                t_ack = min(t_ack, t_resp + rng.randint(60, 150))
            size = 2 + split + want_ack
        if want_ack and t_next <= t_ack + 100:
            t_next = t_ack + rng.randint(200, 2000)

        # Emit.
        st = self.stats
        if split:
            # Cut after the function code, so that the first segment is recognisable as
            # Modbus/TCP; or, with split_in_header, anywhere in the 7-byte MBAP header (what
            # some stacks really do, and which Wireshark 4.0 cannot reassemble).
            cut = rng.randint(1, 7) if self.split_in_header else rng.randint(8, len(req) - 1)
            self._out(t, self._frame(c.c2s, PSH | ACK, c.c_seq, c.s_seq, req[:cut]))
            self._out(
                t_req2,
                self._frame(c.c2s, PSH | ACK, (c.c_seq + cut) & 0xFFFFFFFF, c.s_seq, req[cut:]),
            )
            st.split_requests += 1
        else:
            self._out(t, self._frame(c.c2s, PSH | ACK, c.c_seq, c.s_seq, req))
        if len(pairs) > 1:
            st.multi_pdu_segments += 2
        c.c_seq = (c.c_seq + len(req)) & 0xFFFFFFFF
        self._out(t_resp, self._frame(c.s2c, PSH | ACK, c.s_seq, c.c_seq, resp))
        c.s_seq = (c.s_seq + len(resp)) & 0xFFFFFFFF
        if want_ack:
            self._out(t_ack, self._frame(c.c2s, ACK, c.c_seq, c.s_seq, b""))
        self.emitted += size

        if advance:
            c.item_pos += advance
            if c.item_pos >= len(c.items):
                c.item_pos = 0
        if not more_in_cycle:
            c.cycle_start = t_next
        self._event(t_next, 1, c)

    # ----------------------------------------------------------------- driver

    def run(self, write: Callable[[bytes], object]) -> Stats:
        """Simulate everything, passing pcap record bytes (without global header) to write."""
        st = self.stats
        self.reserve = 6 * len(self.conns)
        for c in self.conns:
            self._event(c.start_us, 0, c)
        chunk: list[bytes] = []
        first: int | None = None
        last = 0
        rec = PCAP_RECORD.pack
        outq = self.outq
        pop = heapq.heappop
        events = self.events
        conns = self.conns
        inf = 1 << 62
        while True:
            if events:
                t, _, kind, ci = pop(events)
            else:
                t, kind, ci = inf, -1, -1
            while outq and outq[0][0] <= t:
                ts, _, frame = pop(outq)
                n = len(frame)
                sec, usec = divmod(ts, 1_000_000)
                chunk.append(rec(BASE_EPOCH + sec, usec, n, n))
                chunk.append(frame)
                st.pcap_bytes += 16 + n
                last = ts
                if first is None:
                    first = ts
                if len(chunk) >= 16384:
                    write(b"".join(chunk))
                    chunk.clear()
            if kind < 0:
                break
            c = conns[ci]
            if kind == 0:
                if c.state == 0 and t == c.start_us:
                    self._open(c, t)
            elif c.state == 1:
                self._poll(c, t)
        if chunk:
            write(b"".join(chunk))
        st.packets = self.emitted
        st.first_ts_us = BASE_EPOCH * 1_000_000 + (first or 0)
        st.last_ts_us = BASE_EPOCH * 1_000_000 + last
        return st


def generate(
    out: Path,
    packets: int = 1_000_000,
    connections: int = 300,
    seed: int = 1,
    clients: int = 10,
    servers: int = 60,
    split_in_header: bool = False,
) -> Stats:
    """Write a capture to ``out`` (gzip if it ends in ``.gz``) and return what was written."""
    t0 = time.perf_counter()
    gen = Generator(
        packets,
        connections,
        seed,
        clients=clients,
        servers=servers,
        split_in_header=split_in_header,
    )
    header = PCAP_GLOBAL_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
    with open(out, "wb") as raw:
        fh: BinaryIO
        if out.name.endswith(".gz"):
            fh = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=3, mtime=0)
        else:
            fh = raw
        fh.write(header)
        stats = gen.run(fh.write)
        if fh is not raw:
            fh.close()
    stats.pcap_bytes += len(header)
    stats.file_bytes = out.stat().st_size
    stats.seconds = time.perf_counter() - t0
    return stats


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output file (.pcap, or .pcap.gz for gzip)")
    p.add_argument("--packets", type=int, default=1_000_000, help="exact packet count")
    p.add_argument("--connections", type=int, default=300, help="TCP connections in total")
    p.add_argument("--clients", type=int, default=10, help="HMI/SCADA clients (max 240)")
    p.add_argument("--servers", type=int, default=60, help="PLCs (max 480)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--truth", type=Path, help="write expected counts as JSON here")
    p.add_argument(
        "--split-in-header",
        action="store_true",
        help="split requests inside the 7-byte MBAP header (harder for decoders; "
        "Wireshark 4.0 loses those PDUs and the rest of their stream)",
    )
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 240 or not 1 <= args.servers <= 480:
        p.error("--clients must be 1..240 and --servers 1..480")
    if args.connections < 1:
        p.error("--connections must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        stats = generate(
            args.out,
            args.packets,
            args.connections,
            args.seed,
            clients=args.clients,
            servers=args.servers,
            split_in_header=args.split_in_header,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.truth:
        truth = stats.to_json() | {"seed": args.seed, "file": str(args.out)}
        args.truth.write_text(json.dumps(truth, indent=2) + "\n")
    span = (stats.last_ts_us - stats.first_ts_us) / 1e6
    req, resp = sum(stats.requests.values()), sum(stats.responses.values())
    rate = stats.packets / stats.seconds if stats.seconds else math.inf
    print(f"packets written:     {stats.packets}")
    print(
        f"modbus PDUs written: {stats.pdus} (requests {req}, responses {resp}, "
        f"exceptions {sum(stats.exceptions.values())})"
    )
    print(f"connections:         {stats.connections}")
    print(f"bytes:               {stats.pcap_bytes} pcap, {stats.file_bytes} on disk")
    print(f"capture span:        {span:.1f} s of traffic")
    print(f"seconds taken:       {stats.seconds:.2f} ({rate:,.0f} packets/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
