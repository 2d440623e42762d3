"""Fast, deterministic building of Ethernet/IPv4/TCP and ARP frames, and pcap writing.

The synthetic generator writes hours of traffic in seconds, so frames are packed with one
``struct`` call each from per-direction templates, and checksums use the identity "ones'
complement sum = big integer modulo 0xFFFF" (cheap in CPython), as in
``bench/gen_modbus_capture.py``. Output is a classic little-endian pcap (magic a1b2c3d4,
microsecond timestamps, linktype 1 Ethernet), which every tool reads.

Frames are not padded to the Ethernet minimum of 60 bytes: a capture on a Linux bridge or
veth sees frames before any NIC pads them, and the lab's captures must look like that.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

PCAP_GLOBAL_HEADER = struct.Struct("<IHHiIII")
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
PCAP_RECORD = struct.Struct("<IIII")

# Ethernet (14, pre-built) + IPv4 (20, no options) + TCP (20, options go with data).
_TCP_FRAME = struct.Struct("!14sBBHHHBBH4s4sHHIIBBHHH")

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
BROADCAST = b"\xff" * 6

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SEQ_MASK = 0xFFFFFFFF


def ones_sum(data: bytes) -> int:
    """An integer congruent (mod 0xFFFF) to the ones' complement sum of data's 16-bit words."""
    if len(data) & 1:
        return int.from_bytes(data, "big") << 8
    return int.from_bytes(data, "big")


def fold(n: int) -> int:
    """The checksum field (RFC 1071) from an integer congruent to the ones' complement sum."""
    r = n % 0xFFFF
    return 0xFFFF - (r or 0xFFFF)


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def ip_bytes(ip: str) -> bytes:
    return bytes(int(part) for part in ip.split("."))


class TcpDirection:
    """Header template of one direction of a TCP connection (addresses, ports, IP id)."""

    __slots__ = ("dport", "dst", "eth", "ip_id", "ip_sum", "sport", "src", "tcp_sum", "ttl")

    def __init__(
        self,
        src_mac: bytes,
        dst_mac: bytes,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        ip_id: int,
        ttl: int = 64,
    ) -> None:
        self.eth = dst_mac + src_mac + b"\x08\x00"
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.ttl = ttl
        self.ip_id = ip_id
        addrs = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
        self.ip_sum = 0x4500 + 0x4000 + (ttl << 8 | 6) + addrs
        self.tcp_sum = addrs + 6 + sport + dport

    def set_macs(self, src_mac: bytes, dst_mac: bytes) -> None:
        self.eth = dst_mac + src_mac + b"\x08\x00"

    def frame(
        self, flags: int, seq: int, ack: int, window: int, data: bytes = b"", opts: bytes = b""
    ) -> bytes:
        """One TCP segment; ``opts`` (a multiple of 4 bytes) precede the payload."""
        if opts:
            data = opts + data
        tcp_len = 20 + len(data)
        off = (5 + len(opts) // 4) << 4
        tcsum = fold(
            self.tcp_sum + window + tcp_len + seq + ack + (off << 8 | flags) + ones_sum(data)
        )
        total = 20 + tcp_len
        ip_id = self.ip_id
        self.ip_id = (ip_id + 1) & 0xFFFF
        return (
            _TCP_FRAME.pack(
                self.eth,
                0x45,
                0,
                total,
                ip_id,
                0x4000,  # DF, as Linux sets on TCP
                self.ttl,
                6,
                fold(self.ip_sum + total + ip_id),
                self.src,
                self.dst,
                self.sport,
                self.dport,
                seq,
                ack,
                off,
                flags,
                window,
                tcsum,
                0,
            )
            + data
        )


def arp_frame(
    op: int,
    src_mac: bytes,
    src_ip: bytes,
    dst_mac: bytes,
    dst_ip: bytes,
    eth_dst: bytes,
    eth_src: bytes | None = None,
) -> bytes:
    """An ARP request (op 1, target MAC zero) or reply (op 2) for IPv4 over Ethernet
    (RFC 826); ``eth_src`` defaults to the sender's MAC."""
    target = b"\x00" * 6 if op == 1 else dst_mac
    return (
        eth_dst
        + (eth_src or src_mac)
        + b"\x08\x06"
        + struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, op)
        + src_mac
        + src_ip
        + target
        + dst_ip
    )


class PcapWriter:
    """Writes a classic pcap; timestamps are integer microseconds since the epoch."""

    def __init__(self, fh: BinaryIO, snaplen: int = SNAPLEN) -> None:
        self._fh = fh
        self._chunk: list[bytes] = []
        self.packets = 0
        self.bytes = 24
        self.last_us = 0
        fh.write(PCAP_GLOBAL_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))

    def write(self, ts_us: int, frame: bytes) -> None:
        if ts_us < self.last_us:
            raise ValueError(f"packet time goes backwards: {ts_us} < {self.last_us}")
        self.last_us = ts_us
        n = len(frame)
        sec, usec = divmod(ts_us, 1_000_000)
        self._chunk.append(PCAP_RECORD.pack(sec, usec, n, n))
        self._chunk.append(frame)
        self.packets += 1
        self.bytes += 16 + n
        if len(self._chunk) >= 8192:
            self.flush()

    def flush(self) -> None:
        if self._chunk:
            self._fh.write(b"".join(self._chunk))
            self._chunk.clear()


def rewrite_tcp(
    frame: bytes, src_mac: bytes, dst_mac: bytes, payload: bytes | None = None
) -> bytes:
    """A copy of an Ethernet/IPv4/TCP frame with other MAC addresses and, optionally, a new
    TCP payload of the same length (the TCP checksum is computed again); what a forwarding
    man in the middle emits."""
    body = frame[12:]
    if payload is None:
        return dst_mac + src_mac + body
    ihl = (frame[14] & 0x0F) * 4
    tcp_at = 14 + ihl
    data_at = tcp_at + (frame[tcp_at + 12] >> 4) * 4
    if len(frame) - data_at != len(payload):
        raise ValueError("the new payload must have the length of the old one")
    tcp = bytearray(frame[tcp_at:data_at])
    tcp[16:18] = b"\x00\x00"
    tcp_len = len(tcp) + len(payload)
    pseudo = int.from_bytes(frame[26:30], "big") + int.from_bytes(frame[30:34], "big") + 6 + tcp_len
    checksum = fold(pseudo + ones_sum(bytes(tcp) + payload))
    tcp[16:18] = checksum.to_bytes(2, "big")
    return dst_mac + src_mac + frame[12:tcp_at] + bytes(tcp) + payload
