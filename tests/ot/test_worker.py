"""The tshark worker's pieces: splitting tshark's JSON stream, and normalisers that never raise
on dissections of shapes they did not expect (hostile or truncated traffic)."""

from __future__ import annotations

import os
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.decode.ot import MODULES
from sentinel.decode.ot.common import FrameBase
from sentinel.decode.ot_settings import PROTOCOLS
from sentinel.decode.tshark import Dnp3Log
from sentinel.decode.tshark_worker import FrameParser, split_packets
from sentinel.events import ConnId, OTEvent
from tests.ot.conftest import ICS, ZEEK_DNP3

LAYERS = " ".join(
    ["frame", "ip", "ipv6", "tcp", "udp", *(x for m in MODULES.values() for x in m.LAYERS)]
)
BASE = FrameBase(1.0, 1, "tcp", "192.0.2.1", 40000, "192.0.2.2", 20000)
CAPTURES = [
    *sorted(ICS.glob("*/*.pcap")),
    ZEEK_DNP3 / "pcaps" / "dnp3.pcap",
    ZEEK_DNP3 / "pcaps" / "dnp3_file_read.pcap",
]


def tshark_json(capture: Path) -> bytes:
    display = " or ".join(MODULES[p].FILTER for p in PROTOCOLS)
    cmd = ["tshark", "-n", "-r", str(capture), "-Y", display, "-T", "json", "--no-duplicate-keys"]
    return subprocess.run([*cmd, "-J", LAYERS], capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def packets(tshark: str) -> list[bytes]:
    """Every packet of the sample captures, as tshark's JSON (one object each)."""
    out: list[bytes] = []
    for capture in CAPTURES:
        out += [orjson.dumps(p) for p in orjson.loads(tshark_json(capture))]
    return out


def test_split_packets_survives_any_chunking(tshark: str) -> None:
    raw = tshark_json(ICS / "iec104" / "TestDissectIec104.pcap")
    expected = orjson.loads(raw)
    for chunk in (1, 3, 7, 4096):
        read, write = os.pipe()

        def feed(data: bytes = raw, size: int = chunk, fd: int = write) -> None:
            with os.fdopen(fd, "wb", buffering=0) as f:
                for i in range(0, len(data), size):
                    f.write(data[i : i + size])

        writer = threading.Thread(target=feed)
        writer.start()
        got = [orjson.loads(p) for p in split_packets(read)]
        writer.join()
        os.close(read)
        assert got == expected, chunk


def mutations(tree: Any, rng: random.Random) -> Iterator[Any]:
    """Shapes a hostile or truncated dissection can take: values of the wrong kind, dropped
    fields, lists where one value was expected and the other way round."""
    junk = ["", "-1", "0xzz", "99999999999999999999", "\x00", "1e309", "nan"]

    def mutate(node: Any, mode: int) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                r = rng.random()
                if mode == 1 and r < 0.2:
                    continue  # dropped
                out[k] = mutate(v, mode)
            return out
        if isinstance(node, list):
            items = [mutate(v, mode) for v in node]
            return items[0] if mode == 2 and items and rng.random() < 0.5 else items
        if mode == 0:
            return rng.choice(junk)
        if mode == 2 and rng.random() < 0.3:
            return [node, node]
        if mode == 3 and rng.random() < 0.3:
            return {"x": node}
        return node

    for mode in range(4):
        yield mutate(tree, mode)


def test_normalisers_never_raise(packets: list[bytes]) -> None:
    rng = random.Random(1)
    parser = FrameParser(PROTOCOLS, 8, {})
    events = 0
    for raw in packets:
        tree = orjson.loads(raw)
        events += len(parser.parse(raw))
        for variant in mutations(tree, rng):
            layers = variant.get("_source", {}).get("layers") if isinstance(variant, dict) else None
            if not isinstance(layers, dict):
                continue
            for names, norm in parser.normalisers:
                if any(n in layers for n in names):
                    norm.packet(layers, BASE)  # must not raise
    assert events > 1000
    assert parser.stats["normaliser_errors"] == 0


def test_garbage_is_counted_not_raised() -> None:
    parser = FrameParser(PROTOCOLS, 8, {})
    for raw in (b"{", b"[]", b'{"_source": 1}', b'{"_source": {"layers": []}}', b"\xff\xfe"):
        assert parser.parse(raw) == []
    assert parser.stats["bad_json"] >= 3


def _event(code: int, function: str, uid: str = "C1", iin: int | None = None) -> OTEvent:
    detail: dict[str, Any] = {"dnp3": {"iin": iin} if iin is not None else {}}
    conn = ConnId("10.0.0.1", 40000, "10.0.0.2", 20000)
    return OTEvent(
        1.0,
        uid,
        conn,
        code < 0x80,
        1,
        "tcp",
        "dnp3",
        "",
        "",
        function,
        code,
        None,
        (),
        None,
        (),
        detail,
    )


def test_dnp3_log_pairs_like_zeek() -> None:
    written: list[dict[str, Any]] = []
    log = Dnp3Log(written.append)
    log.event(_event(1, "READ"))
    log.event(_event(0, "CONFIRM"))  # a second request before the reply overwrites the first
    log.event(_event(0x81, "RESPONSE", iin=0x1000))
    log.event(_event(0x12, "STOP_APPL"))  # never answered
    log.event(_event(0x82, "UNSOLICITED_RESPONSE", uid="C2", iin=0))
    assert [(w["fc_request"], w["fc_reply"], w["iin"]) for w in written] == [
        ("CONFIRM", "RESPONSE", 4096),
        (None, "UNSOLICITED_RESPONSE", 0),
    ]
    log.flow_ended("C1")
    assert (written[-1]["fc_request"], written[-1]["fc_reply"]) == ("STOP_APPL", None)


def test_may_carry() -> None:
    """The prefilter's selection over link types, VLAN tags, IPv6 and fragments."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
    from scapy.layers.l2 import CookedLinux, Dot1Q, Ether

    from sentinel.decode.tshark_worker import may_carry

    ports = frozenset({20000, 47808})
    tcp_ot, tcp_other = TCP(sport=40000, dport=20000), TCP(sport=40000, dport=502)
    assert may_carry(1, bytes(Ether() / IP() / tcp_ot), ports)
    assert not may_carry(1, bytes(Ether() / IP() / tcp_other), ports)
    assert may_carry(
        1, bytes(Ether() / Dot1Q() / Dot1Q() / IP() / UDP(sport=47808, dport=1)), ports
    )
    assert may_carry(1, bytes(Ether() / IPv6() / tcp_ot), ports)
    assert may_carry(1, bytes(Ether() / IPv6() / IPv6ExtHdrFragment() / tcp_other), ports)
    assert may_carry(1, bytes(Ether() / IP(flags="MF") / tcp_other), ports)  # a first fragment
    assert may_carry(1, bytes(Ether() / IP(frag=100) / (b"x" * 20)), ports)  # a later one
    assert may_carry(113, bytes(CookedLinux(proto=0x0800) / IP() / tcp_ot), ports)
    assert may_carry(101, bytes(IP() / tcp_ot), ports)
    assert not may_carry(1, bytes(Ether(type=0x0806) / (b"\0" * 28)), ports)  # ARP
    assert not may_carry(1, b"\x00" * 10, ports)  # truncated: nothing to look at
    assert may_carry(147, b"\x00" * 10, ports)  # a link type it does not read: handed on
