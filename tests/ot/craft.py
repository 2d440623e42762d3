"""Crafted captures of the OT operations the public corpora do not contain.

Each builder writes a pcap with real TCP conversations (handshake, seq/ack, FIN; see
tests/craft.py) or BACnet/IP datagrams, byte for byte as the protocol specifications lay them
out, and returns its path. Wireshark 4.0 dissects every message without a "malformed" flag
(asserted in tests/ot/test_crafted.py), so these are valid protocol messages.

Addresses: S7 engineering station 192.0.2.10 -> PLC 192.0.2.20; CIP client 192.0.2.30 ->
adapter 192.0.2.40; IEC 104 controlling station 192.0.2.50 -> RTU 192.0.2.60 (common address
7); BACnet client 10.1.1.5 -> device 10.1.1.50 (instance 1234); DNP3 master 192.0.2.70 ->
outstation 192.0.2.80 (link addresses 1 -> 10).
"""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from tests.craft import Conversation, write

T0 = 1_700_000_000.0


# --------------------------------------------------------------------------- S7comm
def _tpkt(s7: bytes) -> bytes:
    cotp = b"\x02\xf0\x80"  # COTP DT, last data unit (ISO 8073)
    return struct.pack(">BBH", 3, 0, 4 + len(cotp) + len(s7)) + cotp + s7


def s7_job(ref: int, param: bytes, data: bytes = b"") -> bytes:
    return _tpkt(struct.pack(">BBHHHH", 0x32, 1, 0, ref, len(param), len(data)) + param + data)


def s7_ack(ref: int, param: bytes, data: bytes = b"", error: int = 0) -> bytes:
    header = struct.pack(">BBHHHHH", 0x32, 3, 0, ref, len(param), len(data), error)
    return _tpkt(header + param + data)


def s7_userdata(ref: int, param: bytes, data: bytes) -> bytes:
    return _tpkt(struct.pack(">BBHHHH", 0x32, 7, 0, ref, len(param), len(data)) + param + data)


PI = b"\x28\x00\x00\x00\x00\x00\x00\xfd"  # PI-Service, unknown bytes
SETUP = bytes.fromhex("f0000001000101e0")


def s7_operations(path: Path) -> Path:
    """Stop, warm/cold start, block download + activation, block deletion, upload, a DB
    write, set clock, a refused PLC password and a memory reset."""
    c = Conversation("192.0.2.10", "192.0.2.20", 41000, 102, t0=T0)
    c.exchange(s7_job(1, SETUP), s7_ack(1, bytes.fromhex("f0000001000100f0")))
    c.exchange(s7_job(2, b"\x29\x00\x00\x00\x00\x00\x09P_PROGRAM"), s7_ack(2, b"\x29"))
    c.exchange(s7_job(3, PI + b"\x00\x00\x09P_PROGRAM"), s7_ack(3, b"\x28"))
    c.exchange(s7_job(4, PI + b"\x00\x02C \x09P_PROGRAM"), s7_ack(4, b"\x28"))
    block = b"\x00\x01\x00\x00\x00\x00\x00\x09_0800001P"
    c.exchange(s7_job(5, b"\x1a" + block + b"\x0d1000044000060"), s7_ack(5, b"\x1a"))
    c.exchange(s7_job(6, b"\x1b" + block), s7_ack(6, b"\x1b\x00", b"\x00\x04\x00\xfb\x70\x70"))
    c.exchange(s7_job(7, b"\x1c" + block), s7_ack(7, b"\x1c"))
    c.exchange(s7_job(8, PI + b"\x00\x0a\x00\x010800001P\x05_INSE"), s7_ack(8, b"\x28"))
    c.exchange(s7_job(9, PI + b"\x00\x0a\x00\x010800001B\x05_DELE"), s7_ack(9, b"\x28"))
    c.exchange(
        s7_job(10, b"\x1d\x00\x00\x00\x00\x00\x00\x00\x09_0800001A"),
        s7_ack(10, b"\x1d\x00\x01\x00\x00\x00\x00\x07\x070000100"),
    )
    # Write Var DB1.DBW10 = 0x1234 (item: any-pointer, WORD, 1, DB 1, area DB, bit address 80)
    write_item = bytes.fromhex("0501120a10040001000184000050")
    c.exchange(
        s7_job(11, write_item, bytes.fromhex("000400101234")), s7_ack(11, b"\x05\x01", b"\xff")
    )
    c.exchange(
        s7_userdata(
            12, bytes.fromhex("0001120411470200"), bytes.fromhex("ff09000a00191408201200000004")
        ),
        s7_userdata(12, bytes.fromhex("000112081287020100000000"), bytes.fromhex("0a000000")),
    )
    c.exchange(
        s7_userdata(
            13, bytes.fromhex("0001120411450100"), bytes.fromhex("ff09000863656c656d626172")
        ),
        s7_userdata(13, bytes.fromhex("00011208128501010000d602"), bytes.fromhex("0a000000")),
    )
    c.exchange(s7_userdata(14, bytes.fromhex("0001120411410c00"), bytes.fromhex("ff090000")), None)
    c.close()
    return write(path, c.packets)


def s7_reads(path: Path, client: str = "192.0.2.11") -> Path:
    """Normal HMI polling: Read Var of a DB word, three times."""
    c = Conversation(client, "192.0.2.20", 41001, 102, t0=T0)
    c.exchange(s7_job(1, SETUP), s7_ack(1, bytes.fromhex("f0000001000100f0")))
    for ref in range(2, 5):
        c.exchange(
            s7_job(ref, bytes.fromhex("0401120a10020002000184000050")),
            s7_ack(ref, b"\x04\x01", bytes.fromhex("ff0400101234")),
        )
    c.close()
    return write(path, c.packets)


# --------------------------------------------------------------------------- EtherNet/IP, CIP
def _encap(cmd: int, data: bytes, session: int = 0x11223344, ctx: bytes = b"ctx00001") -> bytes:
    return struct.pack("<HHII8sI", cmd, len(data), session, 0, ctx, 0) + data


def _rr(cip: bytes, ctx: bytes) -> bytes:
    items = struct.pack("<HH", 0, 0) + struct.pack("<HH", 0xB2, len(cip)) + cip
    return _encap(0x6F, struct.pack("<IHH", 0, 5, 2) + items, ctx=ctx)  # SendRRData


def _req(service: int, path: bytes, data: bytes = b"") -> bytes:
    return bytes([service, len(path) // 2]) + path + data


def _rsp(service: int, status: int = 0, data: bytes = b"") -> bytes:
    return bytes([service | 0x80, 0, status, 0]) + data


def cip_operations(path: Path) -> Path:
    """RegisterSession, an identity read, Reset, a Stop refused with privilege violation, a
    Time Sync attribute set, a Logix tag write, a File object download, and a Multiple
    Service Packet hiding a Reset."""
    c = Conversation("192.0.2.30", "192.0.2.40", 42000, 44818, t0=T0)
    reg = struct.pack("<HH", 1, 0)
    c.exchange(_encap(0x65, reg, session=0), _encap(0x65, reg))
    identity = b"\x20\x01\x24\x01"
    c.exchange(
        _rr(_req(0x0E, identity + b"\x30\x07"), b"get00001"),
        _rr(_rsp(0x0E, 0, b"\x04ACME"), b"get00001"),
    )
    c.exchange(_rr(_req(0x05, identity, b"\x00"), b"reset001"), _rr(_rsp(0x05), b"reset001"))
    c.exchange(
        _rr(_req(0x07, b"\x20\x8e\x24\x01"), b"stop0001"), _rr(_rsp(0x07, 0x0F), b"stop0001")
    )
    c.exchange(
        _rr(_req(0x10, b"\x20\x43\x24\x01\x30\x06", b"\x00" * 8), b"time0001"),
        _rr(_rsp(0x10), b"time0001"),
    )
    tag = b"Setpoint"
    value = b"\xca\x00\x01\x00" + struct.pack("<f", 80.0)  # REAL, 1 element
    c.exchange(
        _rr(_req(0x4D, bytes([0x91, len(tag)]) + tag, value), b"wtag0001"),
        _rr(_rsp(0x4D), b"wtag0001"),
    )
    c.exchange(
        _rr(_req(0x4C, b"\x20\x37\x24\x01", b"\x00" * 8), b"file0001"), _rr(_rsp(0x4C), b"file0001")
    )
    sub1, sub2 = _req(0x0E, identity + b"\x30\x01"), _req(0x05, identity, b"\x01")
    msp = struct.pack("<HHH", 2, 6, 6 + len(sub1)) + sub1 + sub2
    c.exchange(_rr(_req(0x0A, b"\x20\x02\x24\x01", msp), b"msp00001"), None)
    c.close()
    return write(path, c.packets)


# --------------------------------------------------------------------------- IEC 60870-5-104
class _Station:
    def __init__(self) -> None:
        self.tx = 0

    def i_frame(self, asdu: bytes) -> bytes:
        ctl = struct.pack("<HH", self.tx << 1, 0)
        self.tx += 1
        return bytes([0x68, 4 + len(asdu)]) + ctl + asdu


def _u_frame(code: int) -> bytes:
    return bytes([0x68, 4, code | 0x03, 0, 0, 0])


def _asdu(type_id: int, cot: int, ioa: int, element: bytes, negative: bool = False) -> bytes:
    cause = cot | (0x40 if negative else 0)
    return (
        bytes([type_id, 1, cause, 0]) + struct.pack("<H", 7) + ioa.to_bytes(3, "little") + element
    )


def _iec104_conversation(client: str, t0: float, sport: int = 43000) -> Conversation:
    """STARTDT, a single command select then execute, a float set-point, clock
    synchronisation, and a reset process command the RTU refuses."""
    m, o = _Station(), _Station()
    c = Conversation(client, "192.0.2.60", sport, 2404, t0=t0)
    c.exchange(_u_frame(0x04), _u_frame(0x08))
    for sco in (0x81, 0x01):  # select, then execute, ON
        c.exchange(
            m.i_frame(_asdu(45, 6, 1001, bytes([sco]))), o.i_frame(_asdu(45, 7, 1001, bytes([sco])))
        )
    setpoint = struct.pack("<f", 55.5) + b"\x00"
    c.exchange(m.i_frame(_asdu(50, 6, 2001, setpoint)), o.i_frame(_asdu(50, 7, 2001, setpoint)))
    cp56 = struct.pack("<H", 30000) + bytes([15, 10, 3, 4, 24])
    c.exchange(m.i_frame(_asdu(103, 6, 0, cp56)), o.i_frame(_asdu(103, 7, 0, cp56)))
    c.exchange(
        m.i_frame(_asdu(105, 6, 0, b"\x01")), o.i_frame(_asdu(105, 7, 0, b"\x01", negative=True))
    )
    c.close()
    return c


def iec104_operations(path: Path, client: str = "192.0.2.50") -> Path:
    """See ``_iec104_conversation``."""
    return write(path, _iec104_conversation(client, T0).packets)


def iec104_rogue_master(path: Path) -> Path:
    """The RTU's usual master interrogates it; 15 minutes later (after the default learning
    window) the master sends commands, and so does a host never seen before."""
    m, o = _Station(), _Station()
    usual = Conversation("192.0.2.50", "192.0.2.60", 43001, 2404, t0=T0)
    usual.exchange(_u_frame(0x04), _u_frame(0x08))
    usual.exchange(m.i_frame(_asdu(100, 6, 0, b"\x14")), o.i_frame(_asdu(100, 7, 0, b"\x14")))
    usual.close()
    later = _iec104_conversation("192.0.2.50", T0 + 900, sport=43002)
    rogue = _iec104_conversation("192.0.2.99", T0 + 960, sport=43003)
    return write(path, usual.packets, later.packets, rogue.packets)


# --------------------------------------------------------------------------- BACnet/IP
def _bvlc(npdu: bytes, function: int = 0x0A) -> bytes:
    return bytes([0x81, function]) + struct.pack(">H", len(npdu) + 4) + npdu


def _confirmed(invoke: int, service: int, params: bytes) -> bytes:
    return bytes([0x01, 0x04, 0x00, 0x05, invoke, service]) + params


def _objid(obj_type: int, instance: int) -> bytes:
    return struct.pack(">I", (obj_type << 22) | instance)


class _Datagrams:
    def __init__(self) -> None:
        self.t = T0
        self.packets: list[Packet] = []

    def add(self, src: str, dst: str, payload: bytes) -> None:
        self.t += 0.1
        p = (
            Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:50")
            / IP(src=src, dst=dst)
            / UDP(sport=47808, dport=47808)
            / payload
        )
        p.time = self.t
        self.packets.append(p)


def bacnet_operations(path: Path, dcc: str = "disable") -> Path:
    """ReinitializeDevice (coldstart, with a password), DeviceCommunicationControl (refused:
    password failure), WriteProperty with priority 8, a device's vendor-name read back,
    I-Am, TimeSynchronization, deleteObject of a file and atomicWriteFile."""
    client, device = "10.1.1.5", "10.1.1.50"
    d = _Datagrams()
    password = bytes([0x1D, 0x05, 0x00]) + b"abcd"  # [1] CharacterString, UTF-8
    d.add(client, device, _bvlc(_confirmed(1, 20, b"\x09\x00" + password)))
    d.add(device, client, _bvlc(bytes([0x01, 0x00, 0x20, 1, 20])))
    enable = {"enable": 0, "disable": 1, "disable-initiation": 2}[dcc]
    d.add(client, device, _bvlc(_confirmed(2, 17, bytes([0x09, 10, 0x19, enable]))))
    d.add(device, client, _bvlc(bytes([0x01, 0x00, 0x50, 2, 17, 0x91, 0x04, 0x91, 0x1A])))
    write_property = (
        b"\x0c" + _objid(2, 1) + b"\x19\x55\x3e\x44" + struct.pack(">f", 72.5) + b"\x3f\x49\x08"
    )
    d.add(client, device, _bvlc(_confirmed(3, 15, write_property)))
    d.add(device, client, _bvlc(bytes([0x01, 0x00, 0x20, 3, 15])))
    d.add(client, device, _bvlc(_confirmed(4, 12, b"\x0c" + _objid(8, 1234) + b"\x19\x79")))
    name = b"\x00Acme Controls"
    ack = b"\x0c" + _objid(8, 1234) + b"\x19\x79\x3e\x75" + bytes([len(name)]) + name + b"\x3f"
    d.add(device, client, _bvlc(bytes([0x01, 0x00, 0x30, 4, 12]) + ack))
    i_am = b"\x10\x00\xc4" + _objid(8, 1234) + b"\x22\x05\xc4\x91\x03\x21\x0f"
    d.add(device, "10.1.1.255", _bvlc(bytes([0x01, 0x00]) + i_am, function=0x0B))
    time_sync = b"\x10\x06\xa4\x7c\x03\x0f\x05\xb4\x0c\x1e\x00\x00"
    d.add(client, "10.1.1.255", _bvlc(bytes([0x01, 0x00]) + time_sync, function=0x0B))
    d.add(client, device, _bvlc(_confirmed(5, 11, b"\xc4" + _objid(10, 3))))
    file_write = b"\xc4" + _objid(10, 3) + b"\x0e\x31\x00\x65\x04abcd\x0f"
    d.add(client, device, _bvlc(_confirmed(6, 7, file_write)))
    return write(path, d.packets)


# --------------------------------------------------------------------------- DNP3
def _crc(data: bytes) -> bytes:
    """CRC-16/DNP (IEEE 1815 9.2.4.1.1): poly 0x3D65 reflected, final complement."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
    return struct.pack("<H", ~crc & 0xFFFF)


def dnp3_frame(app: bytes, src: int, dst: int, master: bool, seq: int = 0) -> bytes:
    """One link frame (user data, unconfirmed) carrying one transport segment."""
    user = bytes([0xC0 | (seq & 0x3F)]) + app  # transport: FIR, FIN
    ctrl = 0xC4 if master else 0x44  # DIR (from master), PRM, UNCONFIRMED_USER_DATA
    header = b"\x05\x64" + bytes([5 + len(user), ctrl]) + struct.pack("<HH", dst, src)
    out = header + _crc(header)
    for i in range(0, len(user), 16):
        block = user[i : i + 16]
        out += block + _crc(block)
    return out


def dnp3_reused_tuple(path: Path) -> Path:
    """Two DNP3 connections on the same 5-tuple, one after the other (a reused client port):
    a READ on the first, a COLD_RESTART on the second."""
    packets = []
    for n, (fc, t0) in enumerate(((0x01, T0), (0x0D, T0 + 60.0))):
        c = Conversation("192.0.2.70", "192.0.2.80", 44000, 20000, t0=t0, handshake=False)
        c.cseq, c.sseq = 1000 + n * 100000, 5000 + n * 100000  # a new connection, new ISNs
        c._pkt(True, "S", b"", seq=c.cseq - 1)
        c._pkt(False, "SA", b"", seq=c.sseq - 1, ack=c.cseq)
        c._pkt(True, "A", b"")
        request = bytes([0xC0 | n, fc]) + (b"\x3c\x02\x06" if fc == 0x01 else b"")
        response = bytes([0xC0 | n, 0x81, 0x00, 0x00])
        c.exchange(dnp3_frame(request, 1, 10, True, n), dnp3_frame(response, 10, 1, False, n))
        c.close()
        packets.append(c.packets)
    return write(path, *packets)


def mixed_modbus_dnp3(path: Path) -> Path:
    """A Modbus/TCP read and a DNP3 read in the same capture, interleaved in time."""
    from tests.craft import adu

    mb = Conversation("192.0.2.90", "192.0.2.91", 45000, 502, t0=T0)
    dn = Conversation("192.0.2.70", "192.0.2.80", 44001, 20000, t0=T0 + 0.2)
    for i in range(3):
        mb.exchange(
            adu(i + 1, 1, b"\x03\x00\x00\x00\x02"), adu(i + 1, 1, b"\x03\x04\x00\x01\x00\x02")
        )
        dn.exchange(
            dnp3_frame(bytes([0xC0 | i, 0x01, 0x3C, 0x02, 0x06]), 1, 10, True, i),
            dnp3_frame(bytes([0xC0 | i, 0x81, 0x00, 0x00]), 10, 1, False, i),
        )
    mb.close()
    dn.close()
    return write(path, mb.packets, dn.packets)


def dnp3_unsolicited(path: Path, enable_after: float | None) -> Path:
    """A master disables unsolicited reporting (classes 1-3), reads, and enables it again
    ``enable_after`` seconds later (never when None); then it keeps polling for a minute."""
    c = Conversation("192.0.2.70", "192.0.2.80", 44002, 20000, t0=T0)
    seq = 0

    def exchange(app: bytes, dt: float = 0.5) -> None:
        nonlocal seq
        request = bytes([0xC0 | (seq & 0x0F)]) + app
        response = bytes([0xC0 | (seq & 0x0F), 0x81, 0x00, 0x00])
        c.exchange(
            dnp3_frame(request, 1, 10, True, seq), dnp3_frame(response, 10, 1, False, seq), dt=dt
        )
        seq += 1

    classes = b"\x3c\x02\x06\x3c\x03\x06\x3c\x04\x06"
    exchange(b"\x15" + classes)  # DISABLE_UNSOLICITED
    exchange(b"\x01\x3c\x01\x06")  # integrity poll
    if enable_after is not None:
        exchange(b"\x14" + classes, dt=enable_after)  # ENABLE_UNSOLICITED
    for _ in range(6):
        exchange(b"\x01\x3c\x02\x06", dt=10.0)
    c.close()
    return write(path, c.packets)


def dnp3_link_frames(app: bytes, src: int, dst: int, master: bool, seq: int = 0) -> list[bytes]:
    """An application fragment as link frames of at most 249 application bytes each
    (IEEE 1815 8.2: 250 user data bytes per frame, one of them the transport header), with
    FIR on the first transport segment, FIN on the last and consecutive sequence numbers."""
    parts = [app[i : i + 249] for i in range(0, len(app), 249)] or [b""]
    frames = []
    for n, part in enumerate(parts):
        th = (seq + n) & 0x3F | (0x40 if n == 0 else 0) | (0x80 if n == len(parts) - 1 else 0)
        user = bytes([th]) + part
        ctrl = 0xC4 if master else 0x44
        header = b"\x05\x64" + bytes([5 + len(user), ctrl]) + struct.pack("<HH", dst, src)
        frame = header + _crc(header)
        for i in range(0, len(user), 16):
            block = user[i : i + 16]
            frame += block + _crc(block)
        frames.append(frame)
    return frames


def dnp3_bad_data_crc(frame: bytes) -> bytes:
    """A link frame whose last data block CRC is wrong (the header CRC stays right)."""
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


def dnp3_bad_header_crc(frame: bytes) -> bytes:
    """A link frame whose header CRC is wrong (its data blocks stay right)."""
    return frame[:8] + bytes([frame[8] ^ 0xFF]) + frame[9:]


def dnp3_link_header(length: int, ctrl: int, src: int, dst: int) -> bytes:
    """A bare link header with a correct CRC and the given length octet (IEEE 1815 9.2.4.1:
    below 5 it cannot even hold control, destination and source)."""
    header = b"\x05\x64" + bytes([length, ctrl]) + struct.pack("<HH", dst, src)
    return header + _crc(header)


def dnp3_unanswered_reads(c: Conversation, n: int, first_seq: int = 0) -> None:
    """``n`` READ class 1 requests, application sequences ``first_seq`` + i (mod 16), sent by
    the master without waiting for responses."""
    for i in range(n):
        seq = (first_seq + i) & 0x0F
        c.send(
            True, dnp3_frame(bytes([0xC0 | seq, 0x01, 0x3C, 0x02, 0x06]), 1, 10, True, i), dt=0.01
        )


def dnp3_responses(c: Conversation, seqs: list[int]) -> None:
    """Empty solicited responses (IIN 0) from the outstation with these sequences."""
    for seq in seqs:
        c.send(False, dnp3_frame(bytes([0xC0 | seq, 0x81, 0x00, 0x00]), 10, 1, False, seq), dt=0.01)


def dnp3_conversation(sport: int = 44010) -> Conversation:
    """Master 192.0.2.70 -> outstation 192.0.2.80:20000, link addresses 1 -> 10."""
    return Conversation("192.0.2.70", "192.0.2.80", sport, 20000, t0=T0)


def dnp3_request(c: Conversation, app: bytes, response: bytes | None = None) -> None:
    """One request fragment (``app`` without the transport byte) and its response."""
    c.exchange(
        dnp3_frame(app, 1, 10, True, app[0] & 0x0F),
        None if response is None else dnp3_frame(response, 10, 1, False, response[0] & 0x0F),
    )


def dnp3_keyword_session(path: Path) -> Path:
    """Every kind of message the DNP3 keyword tests need, each with its own application
    sequence number (request qN, response rN; see tests/rules/test_dnp3_pipeline.py)."""
    c = dnp3_conversation()
    crob = bytes.fromhex("0c01280100000003016400000064000000" + "00")  # g12v1, index 0, LATCH_ON
    dnp3_request(c, bytes.fromhex("c0013c0206"), bytes.fromhex("c0810000"))  # READ class 1
    dnp3_request(c, b"\xc1\x05" + crob, b"\xc1\x81\x80\x00" + crob)  # DIRECT_OPERATE
    dnp3_request(c, bytes.fromhex("c20d"), bytes.fromhex("c2810020"))  # COLD_RESTART
    dnp3_request(c, bytes.fromhex("c302500100070700"), bytes.fromhex("c3811002"))  # WRITE IIN
    c.send(False, dnp3_frame(bytes.fromhex("f5820200"), 10, 1, False, 5), dt=0.5)  # unsolicited
    c.send(True, dnp3_frame(bytes.fromhex("d600"), 1, 10, True, 6), dt=0.1)  # CONFIRM
    dnp3_request(c, bytes.fromhex("c7013c0106"), bytes.fromhex("c7810008"))  # READ class 0
    c.close()
    return write(path, c.packets)


def _g120(variation: int, body: bytes) -> bytes:
    """One SAv5 object (group 120, IEEE 1815-2012 A.45): qualifier 0x5B, one object prefixed
    by its 2-octet size."""
    return bytes([120, variation, 0x5B, 1]) + struct.pack("<H", len(body)) + body


def dnp3_secure_authentication(path: Path, fail: bool, iin: int = 0x0200) -> Path:
    """See ``dnp3_secure_authentication_session``."""
    c = dnp3_conversation(44030)
    dnp3_secure_authentication_session(c, fail, iin)
    c.close()
    return write(path, c.packets)


def dnp3_secure_authentication_session(c: Conversation, fail: bool, iin: int = 0x0200) -> None:
    """SAv5 challenge of a critical request (IEEE 1815-2012 7.5): the master sends a
    DIRECT_OPERATE, the outstation answers with an Authentication Response (0x83, IIN ``iin``)
    carrying a challenge (g120v1), the master replies (AUTHENTICATE_REQ, g120v2); the
    outstation then either executes (RESPONSE) or reports an authentication error (0x83 with
    g120v7, error code 1: authentication failed)."""
    csq, user = struct.pack("<I", 7), struct.pack("<H", 1)
    crob = bytes.fromhex("0c01280100000003016400000064000000" + "00")  # g12v1 LATCH_ON
    iin_bytes = struct.pack(">H", iin)
    # challenge: CSQ, user, MAC algorithm 4 (HMAC-SHA-256/16), reason 1 (critical), 4 octets
    challenge = _g120(1, csq + user + b"\x04\x01" + b"\xa1\xb2\xc3\xd4")
    dnp3_request(c, b"\xc0\x05" + crob, b"\xc0\x83" + iin_bytes + challenge)
    reply = _g120(2, csq + user + bytes(range(16)))  # challenge reply: MAC value
    if fail:
        # error: CSQ, user, association id, error code 1, time of error (48-bit ms)
        error = _g120(
            7, csq + user + b"\x01\x00" + b"\x01" + (1_700_000_000_000).to_bytes(6, "little")
        )
        dnp3_request(c, b"\xc1\x20" + reply, b"\xc1\x83" + iin_bytes + error)
    else:
        dnp3_request(c, b"\xc1\x20" + reply, b"\xc0\x81" + iin_bytes + crob)


def dnp3_clock_writes(path: Path) -> Path:
    """The outstation's usual master polls it; 15 minutes later (after the default learning
    window) that master sets the outstation's clock (WRITE g50v1), and so does a host never
    seen before (192.0.2.99)."""
    clock = b"\x02\x32\x01\x07\x01" + (1_700_000_900_000).to_bytes(6, "little")
    usual = dnp3_conversation(44040)
    dnp3_request(usual, bytes.fromhex("c0013c0106"), bytes.fromhex("c0810000"))
    usual.close()
    later = Conversation("192.0.2.70", "192.0.2.80", 44041, 20000, t0=T0 + 900)
    dnp3_request(later, b"\xc1" + clock, bytes.fromhex("c1810000"))
    later.close()
    rogue = Conversation("192.0.2.99", "192.0.2.80", 44042, 20000, t0=T0 + 960)
    dnp3_request(rogue, b"\xc2" + clock, bytes.fromhex("c2810000"))
    rogue.close()
    return write(path, usual.packets, later.packets, rogue.packets)


def iec104_authentication(path: Path, fail: bool) -> Path:
    """IEC 60870-5-7 challenge of a critical command: the controlling station selects a
    single command, the RTU challenges it (S_CH_NA_1, cause 14 "authentication"), the station
    replies (S_RP_NA_1); the RTU then confirms the command or, when ``fail``, sends an
    authentication error (S_ER_NA_1, cause 14, error code 1: authentication failed)."""
    m, o = _Station(), _Station()
    c = Conversation("192.0.2.50", "192.0.2.60", 43010, 2404, t0=T0)
    c.exchange(_u_frame(0x04), _u_frame(0x08))
    csq, user = struct.pack("<I", 7), struct.pack("<H", 1)
    challenge = csq + user + b"\x04\x01" + struct.pack("<H", 4) + b"\xa1\xb2\xc3\xd4"
    c.exchange(m.i_frame(_asdu(45, 6, 1001, b"\x81")), o.i_frame(_asdu(81, 14, 0, challenge)))
    reply = csq + user + struct.pack("<H", 16) + bytes(range(16))
    if fail:
        cp56 = struct.pack("<H", 30000) + bytes([15, 10, 3, 4, 24])
        error = csq + user + b"\x01\x00" + b"\x01" + cp56 + struct.pack("<H", 0)
        answer = o.i_frame(_asdu(87, 14, 0, error))
    else:
        answer = o.i_frame(_asdu(45, 7, 1001, b"\x81"))
    c.exchange(m.i_frame(_asdu(82, 14, 0, reply)), answer)
    c.close()
    return write(path, c.packets)


def s7_force(path: Path) -> Path:
    """An S7 programmer command Force (userdata group 1, sub-function 9) and its answer."""
    c = Conversation("192.0.2.10", "192.0.2.20", 41002, 102, t0=T0)
    c.exchange(s7_job(1, SETUP), s7_ack(1, bytes.fromhex("f0000001000100f0")))
    c.exchange(
        s7_userdata(2, bytes.fromhex("0001120411410900"), bytes.fromhex("ff090000")),
        s7_userdata(2, bytes.fromhex("000112081281090000000000"), bytes.fromhex("0a000000")),
    )
    c.close()
    return write(path, c.packets)


def cip_firmware(path: Path) -> Path:
    """A firmware update: the object-specific service 0x4B on the Non-Volatile Storage object
    (class 0xA1, instance 1) after RegisterSession, and an identity read."""
    c = Conversation("192.0.2.30", "192.0.2.40", 42001, 44818, t0=T0)
    reg = struct.pack("<HH", 1, 0)
    c.exchange(_encap(0x65, reg, session=0), _encap(0x65, reg))
    identity = b"\x20\x01\x24\x01"
    c.exchange(
        _rr(_req(0x0E, identity + b"\x30\x07"), b"get00001"),
        _rr(_rsp(0x0E, 0, b"\x04ACME"), b"get00001"),
    )
    c.exchange(
        _rr(_req(0x4B, b"\x20\xa1\x24\x01", b"\x01\x00\x00\x00"), b"nvs00001"),
        _rr(_rsp(0x4B), b"nvs00001"),
    )
    c.close()
    return write(path, c.packets)


def iec104_stopdt(path: Path, restart: str | None) -> Path:
    """A controlling station interrogates the RTU, then stops data transfer (STOPDT act/con)
    and keeps the connection alive with test frames for a minute. ``restart``: None (data
    transfer stays stopped), ``"same"`` (STARTDT again 5 s later on the same connection) or
    ``"other"`` (a redundant station's switch-over: STARTDT 5 s later on a second
    connection)."""
    m, o = _Station(), _Station()
    c = Conversation("192.0.2.50", "192.0.2.60", 43020, 2404, t0=T0)
    c.exchange(_u_frame(0x04), _u_frame(0x08))  # STARTDT act / con
    c.exchange(m.i_frame(_asdu(100, 6, 0, b"\x14")), o.i_frame(_asdu(100, 7, 0, b"\x14")))
    c.exchange(_u_frame(0x10), _u_frame(0x20))  # STOPDT act / con
    other = None
    if restart == "same":
        c.exchange(_u_frame(0x04), _u_frame(0x08), dt=5.0)
    elif restart == "other":
        other = Conversation("192.0.2.51", "192.0.2.60", 43021, 2404, t0=T0 + 6.0)
        other.exchange(_u_frame(0x04), _u_frame(0x08))
    for _ in range(6):
        c.exchange(_u_frame(0x40), _u_frame(0x80), dt=10.0)  # TESTFR act / con
    c.close()
    if other is not None:
        other.close()
        return write(path, c.packets, other.packets)
    return write(path, c.packets)
