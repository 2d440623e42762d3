"""Capture formats, link types and hostile files: read what can be read, count the rest."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q
from scapy.utils import PcapNgWriter, wrpcap

from sentinel.capture.pcapfile import CaptureFile
from sentinel.errors import CaptureError
from tests.craft import Conversation, adu, ether, write

READ = b"\x03" + struct.pack(">HH", 0, 2)
ANSWER = b"\x03\x04" + struct.pack(">HH", 7, 9)


def conversation() -> Conversation:
    conv = Conversation()
    for tid in range(3):
        conv.exchange(adu(tid, 1, READ), adu(tid, 1, ANSWER))
    conv.close()
    return conv


def classic_pcap(
    path: Path, frames, endian: str = "<", nanos: bool = False, linktype: int = 1
) -> Path:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    with open(path, "wb") as f:
        f.write(struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype))
        for ts, data in frames:
            sec = int(ts)
            frac = round((ts - sec) * (1e9 if nanos else 1e6))
            f.write(struct.pack(endian + "IIII", sec, frac, len(data), len(data)) + data)
    return path


def frames(packets) -> list[tuple[float, bytes]]:
    return [(float(p.time), bytes(p)) for p in packets]


def test_pcap_variants_decode_the_same(tmp_path, analyze):
    packets = conversation().packets
    reference = analyze(write(tmp_path / "ref.pcap", packets)).modbus
    assert len(reference) == 6
    variants = {
        "big-endian": classic_pcap(tmp_path / "be.pcap", frames(packets), endian=">"),
        "nanosecond": classic_pcap(tmp_path / "ns.pcap", frames(packets), nanos=True),
    }
    writer = PcapNgWriter(str(tmp_path / "ng.pcapng"))
    for p in packets:
        writer.write(p)
    writer.close()
    variants["pcapng"] = tmp_path / "ng.pcapng"
    gz = tmp_path / "ref.pcap.gz"
    gz.write_bytes(gzip.compress((tmp_path / "ref.pcap").read_bytes()))
    variants["gzip"] = gz
    for name, path in variants.items():
        got = analyze(path).modbus
        assert [(r["tid"], r["fc"], r.get("values")) for r in got] == [
            (r["tid"], r["fc"], r.get("values")) for r in reference
        ], name
        assert [r["ts"] for r in got] == pytest.approx([r["ts"] for r in reference], abs=5e-6)


@pytest.mark.parametrize("name", ["vlan", "qinq", "sll", "raw", "ipv6"])
def test_link_types_and_ipv6(tmp_path, analyze, name):
    packets = conversation().packets
    out = []
    for p in packets:
        ip = p[IP]
        if name == "vlan":
            q = ether() / Dot1Q(vlan=10) / ip
        elif name == "qinq":
            q = ether() / Dot1AD(vlan=100) / Dot1Q(vlan=10) / ip
        elif name == "sll":
            q = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=0x0800) / ip
        elif name == "raw":
            q = ip
        else:
            q = (
                ether()
                / IPv6(
                    src="2001:db8::10" if ip.src.endswith(".10") else "2001:db8::20",
                    dst="2001:db8::20" if ip.dst.endswith(".20") else "2001:db8::10",
                )
                / ip[TCP]
            )
        q.time = p.time
        out.append(q)
    linktype = {"sll": 113, "raw": 101}.get(name, 1)
    path = classic_pcap(tmp_path / f"{name}.pcap", frames(out), linktype=linktype)
    result = analyze(path)
    assert len(result.modbus) == 6
    assert result.stats["decode_errors"] == {}
    if name == "ipv6":
        assert result.modbus[0]["orig_h"] == "2001:db8::10"


def test_ip_fragments_are_reassembled(tmp_path, analyze):
    conv = Conversation()
    big = b"\x10" + struct.pack(">HHB", 0, 100, 200) + bytes(200)
    conv.exchange(adu(1, 1, big), adu(1, 1, b"\x10" + struct.pack(">HH", 0, 100)))
    out = []
    for p in conv.packets:
        pieces = fragment(p[IP], fragsize=64) if len(p[IP]) > 100 else [p[IP]]
        for piece in reversed(pieces):  # out of order, too
            q = ether() / piece
            q.time = p.time
            out.append(q)
    result = analyze(classic_pcap(tmp_path / "frag.pcap", frames(out)))
    assert [(r["fc"], r["pdu_type"], r.get("quantity")) for r in result.modbus] == [
        (16, "REQ", 100),
        (16, "RESP", 100),
    ]
    assert result.modbus[0]["values"] == [0] * 100


def test_capture_cut_in_the_middle_of_a_record(tmp_path, analyze):
    path = write(tmp_path / "full.pcap", conversation().packets)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(path.read_bytes()[:-30])
    result = analyze(cut)
    assert result.stats["decode_errors"] == {"capture.truncated_record": 1}
    assert len(result.modbus) == 6  # the last record was a bare ACK


def test_gzip_cut_short_keeps_what_was_read(tmp_path, analyze):
    path = write(tmp_path / "full.pcap", conversation().packets)
    data = gzip.compress(path.read_bytes())
    bad = tmp_path / "cut.pcap.gz"
    bad.write_bytes(data[: len(data) * 2 // 3])
    result = analyze(bad)
    assert result.stats["decode_errors"].get("capture.truncated_file") == 1
    assert 0 < result.stats["packets"] < len(conversation().packets)


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a capture\n", os.urandom(4096)], ids=["empty", "text", "random"]
)
def test_not_a_capture_is_refused_clearly(tmp_path, content):
    path = tmp_path / "input.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match="not a pcap or pcapng capture"):
        CaptureFile(path)
    proc = subprocess.run(
        ["sentinel", "analyze", str(path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr


def test_random_bytes_after_a_valid_header(tmp_path, analyze):
    path = tmp_path / "garbage.pcap"
    rng = __import__("random").Random(7)
    body = bytes(rng.randrange(256) for _ in range(20000))
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + body)
    result = analyze(path)  # must not raise
    assert result.stats["packets"] >= 0
    assert set(result.stats["decode_errors"]) <= {
        "capture.bad_record",
        "capture.truncated_record",
        "link.truncated",
        "ip.truncated",
        "ip.bad_header",
        "tcp.truncated",
        "tcp.bad_header",
        "udp.truncated",
    }


def test_wrpcap_roundtrip_sanity(tmp_path):
    path = tmp_path / "x.pcap"
    wrpcap(str(path), conversation().packets)
    with CaptureFile(path) as cap:
        assert sum(1 for _ in cap) == len(conversation().packets)
