"""Crafted captures for the detector tests: Modbus sessions, HTTP/FTP/TFTP transfers, scans.

Built with scapy on top of ``tests.craft.Conversation`` (real TCP: handshake, sequence and
acknowledgement numbers, FIN). Every builder is deterministic: same arguments, same bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Packet

from tests.craft import Conversation, adu, ether, write

T0 = 1_700_000_000.0
HMI, ENG, ROGUE, PLC, PLC2, GATEWAY = (
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.66",
    "192.0.2.20",
    "192.0.2.21",
    "192.0.2.30",
)


# ---------------------------------------------------------------------------- Modbus PDUs
def read(fc: int, address: int, quantity: int) -> bytes:
    return struct.pack(">BHH", fc, address, quantity)


def registers(fc: int, values: list[int]) -> bytes:
    return struct.pack(">BB", fc, 2 * len(values)) + b"".join(
        struct.pack(">H", v & 0xFFFF) for v in values
    )


def bits(fc: int, quantity: int) -> bytes:
    n = (quantity + 7) // 8
    return bytes((fc, n)) + bytes(n)


def write_register(address: int, value: int) -> bytes:
    return struct.pack(">BHH", 6, address, value & 0xFFFF)


def write_registers(address: int, values: list[int]) -> bytes:
    body = b"".join(struct.pack(">H", v & 0xFFFF) for v in values)
    return struct.pack(">BHHB", 16, address, len(values), len(body)) + body


def write_coil(address: int, on: bool) -> bytes:
    return struct.pack(">BHH", 5, address, 0xFF00 if on else 0)


def write_multiple_ack(fc: int, address: int, quantity: int) -> bytes:
    return struct.pack(">BHH", fc, address, quantity)


def diagnostics(sub: int, data: int = 0) -> bytes:
    return struct.pack(">BHH", 8, sub, data)


def device_id(code: int = 1, object_id: int = 0) -> bytes:
    return bytes((43, 14, code, object_id))


def device_id_response(vendor: bytes = b"ACME") -> bytes:
    return bytes((43, 14, 1, 1, 0, 0, 1, 0, len(vendor))) + vendor


def report_server_id() -> bytes:
    return bytes((17,))


def report_server_id_response() -> bytes:
    return bytes((17, 3, 7, 0xFF, 0x41))


def read_file_record(file: int = 4, record: int = 1, length: int = 2) -> bytes:
    return bytes((20, 7, 6)) + struct.pack(">HHH", file, record, length)


def write_file_record(file: int = 4, record: int = 1, values: tuple[int, ...] = (1, 2)) -> bytes:
    body = bytes((6,)) + struct.pack(">HHH", file, record, len(values))
    body += b"".join(struct.pack(">H", v) for v in values)
    return bytes((21, len(body))) + body


def exception(fc: int, code: int) -> bytes:
    return bytes((fc | 0x80, code))


class Modbus:
    """A Modbus/TCP client connection: ``request(pdu, response)`` adds one transaction."""

    def __init__(
        self,
        client: str,
        server: str,
        t0: float = T0,
        sport: int = 40000,
        dport: int = 502,
        unit: int = 1,
    ) -> None:
        self.conv = Conversation(client, server, sport=sport, dport=dport, t0=t0)
        self.tid = 0
        self.unit = unit

    @property
    def t(self) -> float:
        return self.conv.t

    def wait_until(self, ts: float) -> None:
        self.conv.t = max(self.conv.t, ts)

    def request(
        self, pdu: bytes, response: bytes | None, dt: float = 0.5, unit: int | None = None
    ) -> None:
        self.tid = (self.tid + 1) & 0xFFFF
        u = self.unit if unit is None else unit
        self.conv.send(True, adu(self.tid, u, pdu), dt=dt)
        if response is not None:
            self.conv.send(False, adu(self.tid, u, response), dt=0.002)

    def poll(self, fc: int = 3, address: int = 0, quantity: int = 4, dt: float = 0.5) -> None:
        response = registers(fc, [0] * quantity) if fc in (3, 4) else bits(fc, quantity)
        self.request(read(fc, address, quantity), response, dt=dt)

    def write(self, pdu: bytes, dt: float = 0.5) -> None:
        """A write answered the way the spec says (echo or address/quantity)."""
        fc = pdu[0]
        response = pdu[:5] if fc in (15, 16) else pdu
        self.request(pdu, response, dt=dt)

    def close(self) -> list[Packet]:
        self.conv.close()
        return self.conv.packets

    @property
    def packets(self) -> list[Packet]:
        return self.conv.packets


# ---------------------------------------------------------------------------- other traffic
def tcp_stream(
    client: str,
    server: str,
    dport: int,
    to_server: list[bytes],
    to_client: list[bytes] = (),
    t0: float = T0,
    sport: int = 41000,
    dt: float = 0.01,
) -> list[Packet]:
    """A TCP connection carrying the given segments (client's first, then the server's)."""
    conv = Conversation(client, server, sport=sport, dport=dport, t0=t0)
    for seg in to_server:
        conv.send(True, seg, dt=dt)
    for seg in to_client:
        conv.send(False, seg, dt=dt)
    conv.close()
    return conv.packets


def http_get(
    client: str,
    server: str,
    path: str,
    body: bytes,
    headers: str = "",
    chunked: bool = False,
    t0: float = T0,
    segment: int = 1400,
    sport: int = 42000,
) -> list[Packet]:
    request = f"GET {path} HTTP/1.1\r\nHost: {server}\r\n\r\n".encode()
    if chunked:
        coded = b""
        for i in range(0, len(body), 700):
            part = body[i : i + 700]
            coded += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        coded += b"0\r\n\r\n"
        head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + headers + "\r\n"
        response = head.encode() + coded
    else:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n" + headers + "\r\n"
        response = head.encode() + body
    segments = [response[i : i + segment] for i in range(0, len(response), segment)]
    return tcp_stream(client, server, 80, [request], segments, t0=t0, sport=sport)


def ftp_transfer(
    client: str,
    server: str,
    name: str,
    body: bytes,
    passive: bool = True,
    store: bool = False,
    t0: float = T0,
) -> list[Packet]:
    """An FTP session on port 21 and its data connection (passive or active mode)."""
    ctl = Conversation(client, server, sport=43000, dport=21, t0=t0)
    ctl.send(False, b"220 ftp ready\r\n")
    ctl.send(True, b"USER plc\r\n")
    ctl.send(False, b"331 password\r\n")
    ctl.send(True, b"PASS plc\r\n")
    ctl.send(False, b"230 ok\r\n")
    data_port = 50123
    if passive:
        ctl.send(True, b"PASV\r\n")
        h = server.replace(".", ",")
        ctl.send(
            False,
            f"227 Entering Passive Mode ({h},{data_port >> 8},{data_port & 255})\r\n".encode(),
        )
        data = Conversation(client, server, sport=43001, dport=data_port, t0=ctl.t + 0.01)
    else:
        h = client.replace(".", ",")
        ctl.send(True, f"PORT {h},{data_port >> 8},{data_port & 255}\r\n".encode())
        ctl.send(False, b"200 PORT ok\r\n")
        data = Conversation(server, client, sport=20, dport=data_port, t0=ctl.t + 0.01)
    ctl.t = data.t + 0.01
    verb = "STOR" if store else "RETR"
    ctl.send(True, f"{verb} {name}\r\n".encode())
    ctl.send(False, b"150 opening data connection\r\n")
    data.t = ctl.t + 0.01
    # who sends the bytes: the client on STOR, the server on RETR; in active mode the
    # server opened the data connection (it is the TCP client there)
    sender_is_tcp_client = store if passive else not store
    for i in range(0, len(body), 1400):
        data.send(sender_is_tcp_client, body[i : i + 1400], dt=0.001)
    data.close()
    ctl.t = data.t + 0.01
    ctl.send(False, b"226 transfer complete\r\n")
    ctl.send(True, b"QUIT\r\n")
    ctl.close()
    return ctl.packets + data.packets


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes, t: float) -> Packet:
    from_client = src < dst
    p = ether(from_client) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload
    p.time = t
    return p


def tftp_read(
    client: str,
    server: str,
    name: str,
    body: bytes,
    blksize: int | None = None,
    t0: float = T0,
    resend: bool = True,
) -> list[Packet]:
    """RRQ to port 69, answered from the server's transfer port, block by block (with one
    duplicate DATA block, as a resend after a lost ACK looks)."""
    cport, sport = 44000, 51000
    t = t0
    req = b"\x00\x01" + name.encode() + b"\x00octet\x00"
    if blksize:
        req += b"blksize\x00" + str(blksize).encode() + b"\x00"
    pkts = [udp(client, server, cport, 69, req, t)]
    size = blksize or 512
    if blksize:
        t += 0.01
        oack = b"\x00\x06blksize\x00" + str(blksize).encode() + b"\x00"
        pkts.append(udp(server, client, sport, cport, oack, t))
        t += 0.01
        pkts.append(udp(client, server, cport, sport, b"\x00\x04\x00\x00", t))
    blocks = [body[i : i + size] for i in range(0, len(body) + 1, size)]
    if len(body) % size and blocks[-1] == b"":
        blocks.pop()
    for n, block in enumerate(blocks, start=1):
        data = b"\x00\x03" + struct.pack(">H", n) + block
        t += 0.01
        pkts.append(udp(server, client, sport, cport, data, t))
        if resend and n == 1:
            t += 0.01
            pkts.append(udp(server, client, sport, cport, data, t))
        t += 0.01
        pkts.append(udp(client, server, cport, sport, b"\x00\x04" + struct.pack(">H", n), t))
    return pkts


def syn_probe(
    client: str, server: str, dport: int, t: float, sport: int = 45000, open_port: bool = False
) -> list[Packet]:
    """One SYN scan probe: SYN, then RST (closed port) or SYN/ACK and the scanner's RST."""
    syn = (
        ether(True)
        / IP(src=client, dst=server)
        / TCP(sport=sport, dport=dport, flags="S", seq=1000)
    )
    syn.time = t
    if open_port:
        reply = (
            ether(False)
            / IP(src=server, dst=client)
            / TCP(sport=dport, dport=sport, flags="SA", seq=5000, ack=1001)
        )
        reply.time = t + 0.0005
        rst = (
            ether(True)
            / IP(src=client, dst=server)
            / TCP(sport=sport, dport=dport, flags="R", seq=1001)
        )
        rst.time = t + 0.001
        return [syn, reply, rst]
    reply = (
        ether(False)
        / IP(src=server, dst=client)
        / TCP(sport=dport, dport=sport, flags="RA", seq=0, ack=1001)
    )
    reply.time = t + 0.0005
    return [syn, reply]


# ---------------------------------------------------------------------------- results
def save(path: Path, *packet_lists: list[Packet]) -> Path:
    return write(path, *packet_lists)


def summary(findings: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(rule id, count) of each finding, in output order."""
    return [(f["rule"]["id"], f["sentinel"]["count"]) for f in findings]


def by_rule(findings: list[dict[str, Any]], rule_id: str) -> dict[str, Any]:
    matches = [f for f in findings if f["rule"]["id"] == rule_id]
    assert len(matches) == 1, summary(findings)
    return matches[0]


def evidence(finding: dict[str, Any]) -> dict[str, Any]:
    return finding["sentinel"]["evidence"]


def technique(finding: dict[str, Any]) -> str:
    return finding["threat"]["technique"]["id"][0]


def as_text(findings: list[dict[str, Any]]) -> str:
    return json.dumps(findings)
