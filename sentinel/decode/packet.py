"""Link, network and transport layer parsing for the per-packet hot path.

``PacketDecoder.decode`` turns a frame into a flat tuple (no objects per packet) or ``None``.
Every frame it cannot use is counted in ``errors`` by reason; nothing raises. IPv4 and IPv6
fragments are reassembled (bounded in count, size and time); what cannot be reassembled is
counted, never parsed as if it were whole.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Final

from sentinel.events import ArpEvent

# Link types (tcpdump.org/linktypes.html)
LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
LINKTYPES_RAW_IP = {LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6}

ETH_IPV4: Final = 0x0800
ETH_IPV6: Final = 0x86DD
ETH_ARP: Final = 0x0806
ETH_VLAN = {0x8100, 0x88A8, 0x9100}

PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
# IPv6 extension headers that are skipped to find the transport (RFC 8200 section 4)
IPV6_EXT_SKIP = {0, 43, 60}
IPV6_FRAGMENT: Final = 44

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10

_u16 = struct.Struct(">H").unpack_from
_ipv4 = struct.Struct(">BBHHHBBH4s4s").unpack_from
_tcp = struct.Struct(">HHIIBB").unpack_from
_udp = struct.Struct(">HH").unpack_from

# (proto, src, sport, dst, dport, tcp_flags, seq, ack, payload, ip_bytes)
Decoded = tuple[int, bytes, int, bytes, int, int, int, int, bytes, int]


class FragmentReassembler:
    """IP fragment reassembly keyed by (src, dst, id, proto), bounded in count and time.

    Overlapping fragments keep the first bytes seen (the BSD policy most stacks use); a
    datagram that does not complete within ``timeout`` seconds of packet time is dropped and
    counted.
    """

    def __init__(self, errors: Counter[str], max_datagrams: int = 1024, timeout: float = 30.0):
        self.errors = errors
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self._pending: OrderedDict[tuple, list] = OrderedDict()

    def add(self, ts: float, key: tuple, offset: int, more: bool, data: bytes) -> bytes | None:
        self._expire(ts)
        state = self._pending.get(key)
        if state is None:
            if len(self._pending) >= self.max_datagrams:
                self._pending.popitem(last=False)
                self.errors["ip.fragments_evicted"] += 1
            state = [ts, None, {}]  # first ts, total length, {offset: data}
            self._pending[key] = state
        pieces: dict[int, bytes] = state[2]
        if offset + len(data) > 65535:
            self.errors["ip.fragment_too_large"] += 1
            del self._pending[key]
            return None
        pieces.setdefault(offset, data)
        if not more:
            state[1] = offset + len(data)
        total = state[1]
        if total is None:
            return None
        out = bytearray(total)
        covered = 0
        for off in sorted(pieces):
            piece = pieces[off]
            if off > covered:
                return None  # a hole remains
            end = min(off + len(piece), total)
            if end > covered:
                out[covered:end] = piece[covered - off : end - off]
                covered = end
        if covered < total:
            return None
        del self._pending[key]
        return bytes(out)

    def _expire(self, ts: float) -> None:
        pending = self._pending
        while pending:
            key, state = next(iter(pending.items()))
            if ts - state[0] <= self.timeout:
                break
            del pending[key]
            self.errors["ip.fragments_timed_out"] += 1

    def pending(self) -> int:
        return len(self._pending)


class PacketDecoder:
    """Frame -> ``Decoded`` tuple for TCP and UDP over IPv4/IPv6, or ``None`` (counted)."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()
        self.non_ip = 0
        self.other_protocols: Counter[int] = Counter()  # ICMP and friends: not errors
        self.fragments = FragmentReassembler(self.errors)
        # Called with each Ethernet/IPv4 ARP message when a detector wants them.
        self.arp_hook: Callable[[ArpEvent], None] | None = None

    def decode(self, ts: float, linktype: int, frame: bytes) -> Decoded | None:
        # --- link layer
        if linktype == LINKTYPE_ETHERNET:
            if len(frame) < 14:
                self.errors["link.truncated"] += 1
                return None
            ethertype = (frame[12] << 8) | frame[13]
            off = 14
            while ethertype in ETH_VLAN:
                if len(frame) < off + 4:
                    self.errors["link.truncated"] += 1
                    return None
                ethertype = (frame[off + 2] << 8) | frame[off + 3]
                off += 4
        elif linktype in LINKTYPES_RAW_IP:
            if not frame:
                self.errors["link.truncated"] += 1
                return None
            version = frame[0] >> 4
            ethertype = ETH_IPV4 if version == 4 else ETH_IPV6 if version == 6 else 0
            off = 0
        elif linktype == LINKTYPE_LINUX_SLL:
            if len(frame) < 16:
                self.errors["link.truncated"] += 1
                return None
            ethertype = _u16(frame, 14)[0]
            off = 16
        elif linktype == LINKTYPE_LINUX_SLL2:
            if len(frame) < 20:
                self.errors["link.truncated"] += 1
                return None
            ethertype = _u16(frame, 0)[0]
            off = 20
        elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            if len(frame) < 4:
                self.errors["link.truncated"] += 1
                return None
            family = int.from_bytes(frame[:4], "little" if frame[0] else "big")
            ethertype = ETH_IPV4 if family == 2 else ETH_IPV6 if family in (24, 28, 30) else 0
            off = 4
        else:
            self.errors[f"link.unsupported_linktype_{linktype}"] += 1
            return None

        # --- network layer
        if ethertype == ETH_IPV4:
            if len(frame) < off + 20:
                self.errors["ip.truncated"] += 1
                return None
            vihl, _tos, total_len, ident, frag, _ttl, proto, _csum, src, dst = _ipv4(frame, off)
            ihl = (vihl & 0x0F) * 4
            if vihl >> 4 != 4 or ihl < 20 or total_len < ihl:
                self.errors["ip.bad_header"] += 1
                return None
            end = off + total_len
            if end > len(frame):
                self.errors["ip.truncated"] += 1
                return None
            payload = frame[off + ihl : end]  # trims Ethernet padding
            if frag & 0x3FFF:  # MF set or a non-zero fragment offset
                whole = self.fragments.add(
                    ts, (src, dst, ident, proto), (frag & 0x1FFF) * 8, bool(frag & 0x2000), payload
                )
                if whole is None:
                    return None
                payload = whole
            ip_bytes = total_len
        elif ethertype == ETH_IPV6:
            if len(frame) < off + 40:
                self.errors["ip.truncated"] += 1
                return None
            if frame[off] >> 4 != 6:
                self.errors["ip.bad_header"] += 1
                return None
            plen = _u16(frame, off + 4)[0]
            proto = frame[off + 6]
            src = frame[off + 8 : off + 24]
            dst = frame[off + 24 : off + 40]
            end = off + 40 + plen
            if end > len(frame):
                self.errors["ip.truncated"] += 1
                return None
            payload = frame[off + 40 : end]
            ip_bytes = 40 + plen
            while proto in IPV6_EXT_SKIP or proto == IPV6_FRAGMENT:
                if len(payload) < 8:
                    self.errors["ip.truncated"] += 1
                    return None
                if proto == IPV6_FRAGMENT:
                    frag = _u16(payload, 2)[0]
                    ident = payload[4:8]
                    proto = payload[0]
                    if frag & 0xFFF9 == 0:  # offset 0 and no M flag: an atomic fragment
                        payload = payload[8:]
                        continue
                    whole = self.fragments.add(
                        ts, (src, dst, ident, proto), frag & 0xFFF8, bool(frag & 1), payload[8:]
                    )
                    if whole is None:
                        return None
                    payload = whole
                    break
                proto, hdr_len = payload[0], (payload[1] + 1) * 8
                payload = payload[hdr_len:]
        else:
            if ethertype == ETH_ARP and self.arp_hook is not None:
                self._arp(ts, frame, off)
            self.non_ip += 1
            return None

        # --- transport layer
        if proto == PROTO_TCP:
            if len(payload) < 20:
                self.errors["tcp.truncated"] += 1
                return None
            sport, dport, seq, ack, data_off, flags = _tcp(payload, 0)
            hlen = (data_off >> 4) * 4
            if hlen < 20 or hlen > len(payload):
                self.errors["tcp.bad_header"] += 1
                return None
            return (PROTO_TCP, src, sport, dst, dport, flags, seq, ack, payload[hlen:], ip_bytes)
        if proto == PROTO_UDP:
            if len(payload) < 8:
                self.errors["udp.truncated"] += 1
                return None
            sport, dport = _udp(payload, 0)
            return (PROTO_UDP, src, sport, dst, dport, 0, 0, 0, payload[8:], ip_bytes)
        self.other_protocols[proto] += 1
        return None

    def _arp(self, ts: float, frame: bytes, off: int) -> None:
        """RFC 826 for Ethernet (hardware type 1, 6-byte addresses) and IPv4 (4 bytes)."""
        if len(frame) < off + 28 or frame[off : off + 6] != b"\x00\x01\x08\x00\x06\x04":
            if len(frame) < off + 28:
                self.errors["arp.truncated"] += 1
            return
        op = _u16(frame, off + 6)[0]
        sha, spa = frame[off + 8 : off + 14], frame[off + 14 : off + 18]
        tha, tpa = frame[off + 18 : off + 24], frame[off + 24 : off + 28]
        self.arp_hook(  # type: ignore[misc]
            ArpEvent(
                ts,
                0,
                op,
                _mac(sha),
                socket.inet_ntoa(spa),
                _mac(tha),
                socket.inet_ntoa(tpa),
                _mac(frame[6:12]) if off >= 14 else "",
            )
        )


def _mac(raw: bytes) -> str:
    return raw.hex(":")
