"""Synthetic lab captures: hours of a site's traffic, attacks included, in seconds.

``synthesize(site, minutes, scenarios, seed, out_dir)`` runs the site's HMI, engineering
workstation and PLCs, and the chosen attack scenarios, as a discrete-event simulation in
simulated time, and writes what a sensor on the site's bridge would capture
(``capture.pcap``) with the ground-truth labels (``labels.jsonl``) and a summary of the run
(``run.json``). The same seed gives the same bytes.

What the simulation reproduces, so that the capture looks like the live lab's:

- Linux TCP: three-way handshake with the options Linux sends (MSS, SACK permitted,
  timestamps, window scale), timestamps on every segment, consistent sequence and
  acknowledgement numbers, delayed ACKs (40 ms) or ACKs piggy-backed on the next segment,
  FIN handshakes, RST from a closed port or from a kernel that gets an unexpected SYN/ACK;
- ARP resolution the first time a host talks to another;
- the lab PLC's answers (``sentinel.lab.plcmodel``, checked against pymodbus), computed
  from a physical process stepped in simulated time, with a single-threaded server's
  processing delay (requests queue behind each other);
- the scenarios' own traffic: scapy-made SYNs for scans and floods (window 1024, MSS
  option, IP id 1), and the man in the middle's ARP replies and forwarded copies of every
  frame it relays (the HMI-bound copies of FC 3/4 responses carrying altered values).

Time is kept in integer microseconds since the epoch; packets are written in time order.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sentinel.errors import SentinelError
from sentinel.lab import ops
from sentinel.lab.actors import engineering_script, hmi_script
from sentinel.lab.config import SiteDef
from sentinel.lab.labels import Label, write_labels
from sentinel.lab.pcapwriter import (
    ACK,
    BROADCAST,
    FIN,
    PSH,
    RST,
    SYN,
    PcapWriter,
    TcpDirection,
    arp_frame,
    ip_bytes,
    mac_bytes,
    rewrite_tcp,
)
from sentinel.lab.plcmodel import PlcModel, Session
from sentinel.lab.scenarios import ScenarioDef, make_context

DEFAULT_START = 1_714_982_400  # 2024-05-06 08:00:00 UTC
DELAYED_ACK_US = 40_000  # Linux's minimum delayed-ACK timeout
MITM_FORWARD_US = (300, 1500)  # the attacker's user-space forwarder
_TS = struct.Struct(">4sII")
_MBAP = struct.Struct(">HHHB")


class Host:
    """A lab host: addresses, TCP timestamp clock, ephemeral ports, ARP cache."""

    def __init__(self, name: str, ip: str, mac: str, rng: random.Random) -> None:
        self.name = name
        self.ip = ip
        self.ipb = ip_bytes(ip)
        self.mac = mac_bytes(mac)
        self.ts_offset = rng.getrandbits(32)
        self.next_port = rng.randint(32768, 60999)
        self.neighbours: set[bytes] = set()

    def tsval(self, t_us: int) -> int:
        return (self.ts_offset + t_us // 1000) & 0xFFFFFFFF

    def port(self) -> int:
        port = self.next_port
        self.next_port = port + 1 if port < 60999 else 32768
        return port


class Side:
    """One end of a simulated TCP connection."""

    __slots__ = ("ack_owed", "ack_version", "buffer", "dir", "host", "rcv_nxt", "snd_nxt")
    __slots__ += ("ts_recent", "window")

    def __init__(self, host: Host, direction: TcpDirection, isn: int, window: int) -> None:
        self.host = host
        self.dir = direction
        self.snd_nxt = isn
        self.rcv_nxt = 0
        self.ts_recent = 0
        self.ack_owed = False
        self.ack_version = 0
        self.buffer = b""
        self.window = window


@dataclass
class Conn:
    """A simulated TCP connection from an actor to a PLC."""

    id: int
    client: Side
    server: Side
    session: Session | None
    plc: PlcModel | None
    tid: int = 1
    open: bool = True
    waiting: dict[int, tuple[ActorRun, int]] = field(default_factory=dict)
    burst_answers: int = 0


@dataclass
class ActorRun:
    """A running script and where it is."""

    actor: ops.Actor
    host: Host
    script: ops.Script
    version: int = 0
    done: bool = False
    on_done: Callable[[float], None] | None = None


@dataclass
class SynthResult:
    out_dir: str
    packets: int
    bytes: int
    start: float
    end: float
    labels: list[Label]
    seconds: float


class Simulation:
    """The event loop: actors' operations become timed packets and deliveries."""

    def __init__(self, site: SiteDef, seed: int, start_us: int) -> None:
        self.site = site
        self.seed = seed
        self.rng = random.Random(f"{seed}:{site.name}:network")
        self.now = start_us
        self.start_us = start_us
        self._events: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._frames: list[tuple[int, int, bytes]] = []
        self._seq = 0
        self._conn_ids = 0
        lab = site.lab
        self.hosts: dict[str, Host] = {}
        for name, h in (("hmi", lab.hmi), ("engineering", lab.engineering)):
            self.hosts[h.address] = Host(name, h.address, h.mac, self._rng(name))
        self.attacker = Host("attacker", lab.attacker.address, lab.attacker.mac, self._rng("a"))
        self.hosts[lab.attacker.address] = self.attacker
        self.plcs: dict[str, PlcModel] = {}
        self.busy_until: dict[str, int] = {}
        for plc in lab.plcs:
            self.hosts[plc.asset] = Host(plc.asset, plc.asset, plc.mac, self._rng(plc.asset))
            model = PlcModel(site, plc, self._rng(f"process:{plc.asset}"), start_us / 1e6)
            self.plcs[plc.asset] = model
            self.busy_until[plc.asset] = 0
        self.poisoned: dict[tuple[bytes, bytes], float] = {}  # (src ip, dst ip) -> factor
        self._victim_ip = b""

    def _rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{self.site.name}:{name}")

    # ------------------------------------------------------------------ event plumbing
    def at(self, t_us: int, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (max(t_us, self.now), self._seq, fn, args))

    def emit(self, t_us: int, frame: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._frames, (t_us, self._seq, frame))

    def run(self, end_us: int, writer: PcapWriter, keep_going: Callable[[], bool]) -> int:
        """Process events until ``end_us`` (or later while ``keep_going()``); return the end."""
        events, frames = self._events, self._frames
        pop = heapq.heappop
        while events:
            t = events[0][0]
            if t > end_us and not keep_going():
                break
            while frames and frames[0][0] <= t:
                ts, _, frame = pop(frames)
                writer.write(ts, frame)
            _, _, fn, args = pop(events)
            self.now = t
            fn(*args)
        end = max(end_us, self.now)
        while frames and frames[0][0] <= end:
            ts, _, frame = pop(frames)
            writer.write(ts, frame)
        return end

    # ------------------------------------------------------------------ actors
    def start_actor(self, actor: ops.Actor, host: Host, script: ops.Script, t_us: int) -> ActorRun:
        run = ActorRun(actor, host, script)
        self.at(t_us, self._step, run, None, 0)
        return run

    def actor(self, name: str, address: str) -> ops.Actor:
        return ops.Actor(name, address, self._rng(f"actor:{name}"), lambda: self.now / 1e6)

    def _resume(self, run: ActorRun, t_us: int, value: Any) -> None:
        run.version += 1
        self.at(t_us, self._step, run, value, run.version)

    def _step(self, run: ActorRun, value: Any, version: int) -> None:
        if run.done or version != run.version:
            return
        try:
            op = run.script.send(value)
        except StopIteration:
            run.done = True
            if run.on_done:
                run.on_done(self.now / 1e6)
            return
        handler = self._handlers[type(op)]
        handler(self, run, op)

    # ------------------------------------------------------------------ link layer
    def _owd(self) -> int:
        return self.rng.randint(12, 40)

    def _resolve(self, t: int, src: Host, dst: Host) -> int:
        """ARP the first time ``src`` talks to ``dst``; returns when the frame can go."""
        if dst.ipb in src.neighbours:
            return t
        self.emit(t, arp_frame(1, src.mac, src.ipb, BROADCAST, dst.ipb, BROADCAST))
        t_reply = t + self.rng.randint(30, 120)
        self.emit(t_reply, arp_frame(2, dst.mac, dst.ipb, src.mac, src.ipb, src.mac))
        src.neighbours.add(dst.ipb)
        dst.neighbours.add(src.ipb)
        return t_reply + self.rng.randint(10, 40)

    def _transmit(
        self, t: int, src: Host, dst: Host, frame: bytes, payload: bytes
    ) -> tuple[int, bytes]:
        """Put a frame on the wire at ``t`` (or through the man in the middle); returns the
        time and payload with which it reaches ``dst``."""
        factor = self.poisoned.get((src.ipb, dst.ipb))
        if factor is None:
            self.emit(t, frame)
            return t + self._owd(), payload
        mitm = self.attacker
        self.emit(t, rewrite_tcp(frame, src.mac, mitm.mac))
        t_fwd = t + self.rng.randint(*MITM_FORWARD_US)
        altered = _tamper(payload, factor) if dst.ipb == self._victim_ip else None
        if altered == payload:
            altered = None
        self.emit(t_fwd, rewrite_tcp(frame, mitm.mac, dst.mac, altered))
        return t_fwd + self._owd(), altered if altered is not None else payload

    # ------------------------------------------------------------------ TCP
    def _segment(
        self,
        conn: Conn,
        side: Side,
        t: int,
        flags: int,
        data: bytes = b"",
        opts: bytes | None = None,
    ) -> None:
        """Send a segment from ``side`` at ``t`` and schedule its delivery to the peer."""
        peer = conn.server if side is conn.client else conn.client
        tsval = side.host.tsval(t)
        if opts is None:
            opts = _TS.pack(b"\x01\x01\x08\x0a", tsval, side.ts_recent)
        ack = side.rcv_nxt if flags & ACK else 0
        seq = side.snd_nxt
        frame = side.dir.frame(flags, seq, ack, side.window, data, opts)
        side.snd_nxt = (seq + len(data) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        if flags & ACK:
            side.ack_owed = False
        t_arrive, payload = self._transmit(t, side.host, peer.host, frame, data)
        self.at(t_arrive, self._deliver, conn, peer, flags, payload, tsval)

    def _deliver(self, conn: Conn, side: Side, flags: int, data: bytes, tsval: int) -> None:
        t = self.now
        side.ts_recent = tsval
        if flags & SYN:
            return  # the handshake is driven by _connect
        if data:
            side.rcv_nxt = (side.rcv_nxt + len(data)) & 0xFFFFFFFF
            if side is conn.server:
                self._server_data(conn, t, data)
            else:
                self._client_data(conn, t, data)
        if flags & FIN:
            side.rcv_nxt = (side.rcv_nxt + 1) & 0xFFFFFFFF
            if side is conn.server:  # the PLC's server sees EOF and closes its socket
                self.at(t + self.rng.randint(150, 800), self._server_close, conn)
            else:
                self.at(t + self.rng.randint(5, 20), self._ack_now, conn, side)
                conn.open = False

    def _server_close(self, conn: Conn) -> None:
        self._segment(conn, conn.server, self.now, FIN | ACK)

    def _ack_now(self, conn: Conn, side: Side) -> None:
        self._segment(conn, side, self.now, ACK)

    def _arm_delayed_ack(self, conn: Conn, side: Side, t: int) -> None:
        side.ack_owed = True
        side.ack_version += 1
        self.at(
            t + DELAYED_ACK_US + self.rng.randint(0, 2000),
            self._delayed_ack,
            conn,
            side,
            side.ack_version,
        )

    def _delayed_ack(self, conn: Conn, side: Side, version: int) -> None:
        if side.ack_owed and side.ack_version == version and conn.open:
            self._segment(conn, side, self.now, ACK)

    def _server_data(self, conn: Conn, t: int, data: bytes) -> None:
        plc = conn.plc
        if plc is None or conn.session is None:
            self._arm_delayed_ack(conn, conn.server, t)
            return
        address = plc.plc.asset
        t_start = max(t, self.busy_until[address])
        plc.advance(t_start / 1e6)
        answers = conn.session.feed(data)
        if not answers:
            self._arm_delayed_ack(conn, conn.server, t)
            return
        t_resp = t_start
        for answer in answers:
            t_resp += self.rng.randint(250, 900) + 2 * len(answer)
            self.at(t_resp, self._server_send, conn, answer)
        self.busy_until[address] = t_resp

    def _server_send(self, conn: Conn, answer: bytes) -> None:
        if conn.open:
            self._segment(conn, conn.server, self.now, PSH | ACK, answer)

    def _client_data(self, conn: Conn, t: int, data: bytes) -> None:
        side = conn.client
        side.buffer += data
        buf = side.buffer
        pos = 0
        while len(buf) - pos >= 8:
            tid, _pid, length, _unit = _MBAP.unpack_from(buf, pos)
            if len(buf) - pos < 6 + length:
                break
            pdu = buf[pos + 7 : pos + 6 + length]
            pos += 6 + length
            conn.burst_answers += 1
            waiting = conn.waiting.pop(tid, None)
            if waiting is not None:
                run, version = waiting
                if version == run.version:
                    self._resume(run, t + self.rng.randint(20, 80), pdu)
        side.buffer = buf[pos:]
        self._arm_delayed_ack(conn, side, t)

    # ------------------------------------------------------------------ operations
    def _op_sleep(self, run: ActorRun, op: ops.Sleep) -> None:
        self._resume(run, self.now + max(1, round(op.seconds * 1e6)), None)

    def _op_connect(self, run: ActorRun, op: ops.Connect) -> None:
        client_host = run.host
        server_host = self.hosts.get(op.dst)
        t = self.now
        if server_host is None:
            self._resume(run, t + 3_000_000, None)  # nobody answers ARP: connect times out
            return
        t = self._resolve(t, client_host, server_host)
        sport = client_host.port()
        rng = self.rng
        c_dir = TcpDirection(
            client_host.mac,
            server_host.mac,
            client_host.ipb,
            server_host.ipb,
            sport,
            op.port,
            rng.getrandbits(16),
        )
        s_dir = TcpDirection(
            server_host.mac,
            client_host.mac,
            server_host.ipb,
            client_host.ipb,
            op.port,
            sport,
            rng.getrandbits(16),
        )
        plc = self.plcs.get(op.dst) if op.port == ops.MODBUS_PORT else None
        self._conn_ids += 1
        conn = Conn(
            self._conn_ids,
            Side(client_host, c_dir, rng.getrandbits(32), 502),
            Side(server_host, s_dir, rng.getrandbits(32), 509),
            plc.session() if plc else None,
            plc,
        )
        client, server = conn.client, conn.server
        syn_opts = _syn_options(client_host.tsval(t), 0)
        saved = client.window
        client.window = 64240
        self._segment(conn, client, t, SYN, opts=syn_opts)
        client.window = saved
        t_srv = t + self._owd()
        server.rcv_nxt = client.snd_nxt
        server.ts_recent = client_host.tsval(t)
        if plc is None:  # closed port: the kernel answers RST/ACK
            s_dir.ip_id = 0
            self.emit(t_srv, s_dir.frame(RST | ACK, 0, server.rcv_nxt, 0))
            self._resume(run, t_srv + self._owd() + 30, None)
            return
        t_synack = t_srv + rng.randint(8, 30)
        server.window, saved = 65160, server.window
        self._segment_at(
            conn,
            server,
            t_synack,
            SYN | ACK,
            _syn_options(server_host.tsval(t_synack), server.ts_recent),
        )
        server.window = saved
        t_cli = t_synack + self._owd()
        client.rcv_nxt = server.snd_nxt
        client.ts_recent = server_host.tsval(t_synack)
        self.at(t_cli + rng.randint(5, 20), self._handshake_done, conn, run)

    def _segment_at(self, conn: Conn, side: Side, t: int, flags: int, opts: bytes) -> None:
        self._segment(conn, side, t, flags, b"", opts)

    def _handshake_done(self, conn: Conn, run: ActorRun) -> None:
        self._segment(conn, conn.client, self.now, ACK)
        self._resume(run, self.now + self.rng.randint(20, 60), conn)

    def _op_request(self, run: ActorRun, op: ops.Request) -> None:
        conn: Conn = op.conn
        tid = op.tid if op.tid is not None else conn.tid
        if op.tid is None:
            conn.tid = (conn.tid + 1) & 0xFFFF
        run.version += 1
        conn.waiting[tid] = (run, run.version)
        self._segment(conn, conn.client, self.now, PSH | ACK, ops.adu(tid, op.unit, op.pdu))
        self.at(self.now + round(op.timeout * 1e6), self._timeout, conn, tid, run, run.version)

    def _timeout(self, conn: Conn, tid: int, run: ActorRun, version: int) -> None:
        waiting = conn.waiting.get(tid)
        if waiting is not None and waiting == (run, version):
            del conn.waiting[tid]
            self._resume(run, self.now, None)

    def _op_send(self, run: ActorRun, op: ops.Send) -> None:
        self._segment(op.conn, op.conn.client, self.now, PSH | ACK, op.data)
        self._resume(run, self.now + self.rng.randint(20, 60), None)

    def _op_burst(self, run: ActorRun, op: ops.Burst) -> None:
        conn: Conn = op.conn
        conn.burst_answers = 0
        t = self.now
        step = round(op.interval * 1e6)
        for i, data in enumerate(op.adus):
            self.at(t + i * step + self.rng.randint(0, step // 4 + 1), self._burst_send, conn, data)
        t_end = t + len(op.adus) * step + round(op.linger * 1e6)
        self.at(t_end, self._burst_done, conn, run)

    def _burst_send(self, conn: Conn, data: bytes) -> None:
        self._segment(conn, conn.client, self.now, PSH | ACK, data)

    def _burst_done(self, conn: Conn, run: ActorRun) -> None:
        self._resume(run, self.now, conn.burst_answers)

    def _op_close(self, run: ActorRun, op: ops.Close) -> None:
        conn: Conn = op.conn
        self._segment(conn, conn.client, self.now, FIN | ACK)
        self._resume(run, self.now + self.rng.randint(30, 100), None)

    def _op_synscan(self, run: ActorRun, op: ops.SynScan) -> None:
        target = self.hosts[op.dst]
        t = self._resolve(self.now, run.host, target)
        step = round(op.interval * 1e6)
        open_ports = []
        for i, port in enumerate(op.ports):
            if self._probe(t + i * step, run.host, target, op.sport, port):
                open_ports.append(port)
        self._resume(run, t + len(op.ports) * step + 200_000, sorted(open_ports))

    def _op_synflood(self, run: ActorRun, op: ops.SynFlood) -> None:
        target = self.hosts[op.dst]
        t = self._resolve(self.now, run.host, target)
        step = round(op.interval * 1e6)
        for i in range(op.count):
            sport = self.rng.randint(1024, 65535)
            self._probe(
                t + i * step + self.rng.randint(0, step // 3 + 1), run.host, target, sport, op.port
            )
        self._resume(run, t + op.count * step + 100_000, None)

    def _probe(self, t: int, src: Host, dst: Host, sport: int, dport: int) -> bool:
        """A scapy-made SYN and what the kernels answer; True if the port is open."""
        rng = self.rng
        seq = rng.getrandbits(32)
        probe = TcpDirection(src.mac, dst.mac, src.ipb, dst.ipb, sport, dport, 1)
        self.emit(t, probe.frame(SYN, seq, 0, 1024, b"", b"\x02\x04\x05\xb4"))
        t_answer = t + self._owd() + rng.randint(8, 30)
        back = TcpDirection(dst.mac, src.mac, dst.ipb, src.ipb, dport, sport, 0)
        is_open = dst.ip in self.plcs and dport == ops.MODBUS_PORT
        if not is_open:
            self.emit(t_answer, back.frame(RST | ACK, 0, (seq + 1) & 0xFFFFFFFF, 0))
            return False
        isn = rng.getrandbits(32)
        back.ip_id = 0
        self.emit(
            t_answer,
            back.frame(SYN | ACK, isn, (seq + 1) & 0xFFFFFFFF, 64240, b"", b"\x02\x04\x05\xb4"),
        )
        reset = TcpDirection(src.mac, dst.mac, src.ipb, dst.ipb, sport, dport, 0)
        self.emit(
            t_answer + self._owd() + rng.randint(5, 20),
            reset.frame(RST, (seq + 1) & 0xFFFFFFFF, 0, 0),
        )
        return True

    def _op_mitm(self, run: ActorRun, op: ops.Mitm) -> None:
        victim, plc = self.hosts[op.victim], self.hosts[op.plc]
        a = self.attacker
        t = self.now
        t = self._resolve(t, a, victim)
        t = self._resolve(t, a, plc)
        end = t + round(op.duration * 1e6)
        period = round(op.repoison * 1e6)
        self._victim_ip = victim.ipb
        n = 0
        while t + n * period < end:
            ts = t + n * period
            self.emit(ts, arp_frame(2, a.mac, plc.ipb, victim.mac, victim.ipb, victim.mac))
            self.emit(ts + 50, arp_frame(2, a.mac, victim.ipb, plc.mac, plc.ipb, plc.mac))
            n += 1
        self.at(t + 100, self._poison, victim, plc, op.factor)
        for i in range(3):  # restore both caches, as arpspoof does on exit
            ts = end + i * 200_000
            self.emit(ts, arp_frame(2, plc.mac, plc.ipb, victim.mac, victim.ipb, victim.mac, a.mac))
            self.emit(
                ts + 50, arp_frame(2, victim.mac, victim.ipb, plc.mac, plc.ipb, plc.mac, a.mac)
            )
        self.at(end + 100, self._unpoison, victim, plc)
        self._resume(run, end + 500_000, None)

    def _poison(self, victim: Host, plc: Host, factor: float) -> None:
        self.poisoned[(victim.ipb, plc.ipb)] = factor
        self.poisoned[(plc.ipb, victim.ipb)] = factor

    def _unpoison(self, victim: Host, plc: Host) -> None:
        self.poisoned.pop((victim.ipb, plc.ipb), None)
        self.poisoned.pop((plc.ipb, victim.ipb), None)

    _handlers: ClassVar[dict[type, Callable[[Simulation, ActorRun, Any], None]]] = {
        ops.Sleep: _op_sleep,
        ops.Connect: _op_connect,
        ops.Request: _op_request,
        ops.Send: _op_send,
        ops.Burst: _op_burst,
        ops.Close: _op_close,
        ops.SynScan: _op_synscan,
        ops.SynFlood: _op_synflood,
        ops.Mitm: _op_mitm,
    }


def _syn_options(tsval: int, tsecr: int) -> bytes:
    """Linux's SYN and SYN/ACK options: MSS 1460, SACK permitted, timestamps, NOP, WS 7."""
    return (
        b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + struct.pack(">II", tsval, tsecr) + b"\x01\x03\x03\x07"
    )


def _tamper(payload: bytes, factor: float) -> bytes:
    """Scale the register values of the FC 3/4 responses in a segment's payload."""
    out = bytearray(payload)
    pos = 0
    while len(out) - pos >= 9:
        _tid, _pid, length, _unit = _MBAP.unpack_from(out, pos)
        fc = out[pos + 7]
        if fc in (3, 4) and length >= 3:
            count = out[pos + 8] // 2
            for i in range(count):
                at = pos + 9 + 2 * i
                if at + 2 > len(out):
                    break
                value = struct.unpack_from(">H", out, at)[0]
                struct.pack_into(">H", out, at, min(round(value * factor), 0xFFFF))
        pos += 6 + length
    return bytes(out)


# ---------------------------------------------------------------------------- the driver
LABEL_MARGIN = 0.05  # seconds after a script ends for its last handshake to complete


def schedule(span: float, count: int, rng: random.Random) -> list[float]:
    """Start offsets (seconds) of ``count`` attacks in a capture of ``span`` seconds: after a
    warm-up of normal traffic (a quarter of the capture, at most 10 minutes: what a
    detector's learning window would see), one attack in each equal slot, at a random point
    of its first half."""
    if count == 0:
        return []
    warmup = min(600.0, 0.25 * span)
    slot = max(span - warmup - 10.0, 1.0) / count
    return [warmup + i * slot + rng.uniform(0.0, 0.5 * slot) for i in range(count)]


def synthesize(
    site: SiteDef,
    minutes: float,
    scenarios: list[ScenarioDef],
    seed: int,
    out_dir: str | os.PathLike[str],
    start: int = DEFAULT_START,
) -> SynthResult:
    """Write ``capture.pcap``, ``labels.jsonl`` and ``run.json`` into ``out_dir``.

    The capture lasts ``minutes`` of packet time, or until the last attack has ended if the
    attacks do not fit (each attack starts when the one before has ended)."""
    if minutes <= 0:
        raise SentinelError("--minutes must be positive")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = Simulation(site, seed, start * 1_000_000)
    lab = site.lab
    hosts = sim.hosts
    for name, host, script in (
        ("hmi", lab.hmi.address, hmi_script),
        ("engineering", lab.engineering.address, engineering_script),
    ):
        actor = sim.actor(name, host)
        sim.start_actor(actor, hosts[host], script(site, actor), sim.start_us)
    labels: list[Label] = []
    span = minutes * 60.0
    offsets = schedule(span, len(scenarios), sim._rng("schedule"))
    attacker = lab.attacker.address
    runner = sim.actor("attacker", attacker)

    def attacks() -> ops.Script:
        for i, (scenario, offset) in enumerate(zip(scenarios, offsets, strict=True)):
            due = start + offset
            if due > runner.now():
                yield ops.Sleep(due - runner.now())
            actor = ops.Actor(
                scenario.name,
                attacker,
                random.Random(f"{seed}:{site.name}:scenario:{i}:{scenario.name}"),
                runner.now,
            )
            ctx = make_context(scenario, site, actor)
            began = runner.now()
            yield from scenario.function()(ctx)
            labels.append(
                Label(
                    scenario.name,
                    round(began, 6),
                    round(runner.now() + LABEL_MARGIN, 6),
                    attacker,
                    ctx.target or "",
                    scenario.technique,
                )
            )
            yield ops.Sleep(5.0)

    attack_run = sim.start_actor(runner, hosts[attacker], attacks(), sim.start_us)
    end_us = sim.start_us + round(span * 1e6)
    pcap = out / "capture.pcap"
    with open(pcap, "wb") as fh:
        writer = PcapWriter(fh)
        end_us = sim.run(end_us, writer, lambda: bool(scenarios) and not attack_run.done)
        writer.flush()
    write_labels(out / "labels.jsonl", labels)
    result = SynthResult(
        str(out),
        writer.packets,
        writer.bytes,
        start,
        end_us / 1e6,
        labels,
        time.perf_counter() - t0,
    )
    run_info = {
        "site": site.name,
        "seed": seed,
        "minutes": minutes,
        "start": start,
        "end": end_us / 1e6,
        "scenarios": [s.name for s in scenarios],
        "packets": writer.packets,
        "capture": "capture.pcap",
        "labels": "labels.jsonl",
    }
    (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
    return result
