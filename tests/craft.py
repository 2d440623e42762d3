"""Craft Modbus/TCP conversations with scapy for tests (real TCP: handshake, seq/ack, FIN)."""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


def ether(from_client: bool = True) -> Ether:
    """Explicit addresses: scapy would otherwise try to resolve them (slow, and off-host)."""
    if from_client:
        return Ether(src=CLIENT_MAC, dst=SERVER_MAC)
    return Ether(src=SERVER_MAC, dst=CLIENT_MAC)


def adu(tid: int, unit: int, pdu: bytes) -> bytes:
    """An MBAP header + PDU (function code first)."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


class Conversation:
    """One TCP connection between a client and a server; ``packets`` in capture order."""

    def __init__(
        self,
        client: str = "192.0.2.10",
        server: str = "192.0.2.20",
        sport: int = 40000,
        dport: int = 502,
        t0: float = 1_700_000_000.0,
        handshake: bool = True,
    ) -> None:
        self.client, self.server, self.sport, self.dport = client, server, sport, dport
        self.t = t0
        self.cseq, self.sseq = 1000, 5000
        self.packets: list[Packet] = []
        if handshake:
            self._pkt(True, "S", b"", seq=self.cseq - 1)
            self._pkt(False, "SA", b"", seq=self.sseq - 1, ack=self.cseq)
            self._pkt(True, "A", b"")

    def _pkt(
        self,
        from_client: bool,
        flags: str,
        payload: bytes,
        seq: int | None = None,
        ack: int | None = None,
        dt: float = 0.001,
    ) -> Packet:
        self.t += dt
        if from_client:
            ip = IP(src=self.client, dst=self.server)
            tcp = TCP(
                sport=self.sport,
                dport=self.dport,
                flags=flags,
                seq=self.cseq if seq is None else seq,
                ack=self.sseq if ack is None else ack,
            )
        else:
            ip = IP(src=self.server, dst=self.client)
            tcp = TCP(
                sport=self.dport,
                dport=self.sport,
                flags=flags,
                seq=self.sseq if seq is None else seq,
                ack=self.cseq if ack is None else ack,
            )
        p = ether(from_client) / ip / tcp
        if payload:
            p = p / payload
        p.time = self.t
        self.packets.append(p)
        return p

    def send(self, from_client: bool, payload: bytes, dt: float = 0.001) -> Packet:
        p = self._pkt(from_client, "PA", payload, dt=dt)
        if from_client:
            self.cseq += len(payload)
        else:
            self.sseq += len(payload)
        return p

    def exchange(self, request: bytes, response: bytes | None, dt: float = 0.5) -> None:
        self.send(True, request, dt=dt)
        if response is not None:
            self.send(False, response)
            self._pkt(True, "A", b"")

    def close(self) -> None:
        self._pkt(True, "FA", b"")
        self.cseq += 1
        self._pkt(False, "FA", b"")
        self.sseq += 1
        self._pkt(True, "A", b"")


def write(path: Path, *packets_lists: list[Packet]) -> Path:
    packets = sorted((p for lst in packets_lists for p in lst), key=lambda p: float(p.time))
    wrpcap(str(path), packets)
    return path
