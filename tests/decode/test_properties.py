"""Property-based tests: arbitrary bytes and arbitrary segmentations never break decoding."""

from __future__ import annotations

import itertools
import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.decode.flow import FlowTable
from sentinel.decode.modbus import ModbusAnalyzer
from sentinel.decode.packet import PROTO_TCP, TCP_ACK, TCP_PSH, TCP_SYN, PacketDecoder
from tests.craft import adu
from tests.decode.test_modbus_pdus import Bus, FakeFlow

CLIENT, SERVER = bytes([192, 0, 2, 10]), bytes([192, 0, 2, 20])

requests = st.one_of(
    st.builds(
        lambda a, q: b"\x03" + struct.pack(">HH", a, q), st.integers(0, 65535), st.integers(1, 125)
    ),
    st.builds(
        lambda a, v: b"\x06" + struct.pack(">HH", a, v),
        st.integers(0, 65535),
        st.integers(0, 65535),
    ),
    st.builds(
        lambda a, vs: b"\x10" + struct.pack(f">HHB{len(vs)}H", a, len(vs), 2 * len(vs), *vs),
        st.integers(0, 65535),
        st.lists(st.integers(0, 65535), min_size=1, max_size=20),
    ),
)


def run_stream(segments: list[tuple[int, bytes]]) -> Bus:
    """Feed client segments (seq, payload) through a real FlowTable after a handshake."""
    bus = Bus()
    table = FlowTable(
        lambda flow, first: ModbusAnalyzer(flow, bus) if first is None else None, lambda flow: None
    )
    isn = 1000
    table.process(1.0, 1, (PROTO_TCP, CLIENT, 40000, SERVER, 502, TCP_SYN, isn - 1, 0, b"", 40))
    table.process(
        1.0, 2, (PROTO_TCP, SERVER, 502, CLIENT, 40000, TCP_SYN | TCP_ACK, 0, isn, b"", 40)
    )
    for i, (offset, data) in enumerate(segments):
        table.process(
            2.0 + i * 0.001,
            3 + i,
            (
                PROTO_TCP,
                CLIENT,
                40000,
                SERVER,
                502,
                TCP_PSH | TCP_ACK,
                isn + offset,
                1,
                data,
                40 + len(data),
            ),
        )
    table.flush()
    return bus


def messages(bus: Bus) -> list[tuple]:
    return [(m.tid, m.fc, m.len, m.fields) for m in bus.messages]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=12), st.data())
def test_same_stream_any_segmentation_same_messages(pdus, data):
    stream = b"".join(adu(i, 1, pdu) for i, pdu in enumerate(pdus))
    baseline = messages(run_stream([(0, stream)]))
    assert len(baseline) == len(pdus)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=15))))
    bounds = [0, *cuts, len(stream)]
    segments = [(a, stream[a:b]) for a, b in itertools.pairwise(bounds)]
    # Reorder a little and retransmit some segments: TCP must put it back together.
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for i in range(len(segments) - 1):
        if rng.random() < 0.3:
            segments[i], segments[i + 1] = segments[i + 1], segments[i]
    segments += [segments[rng.randrange(len(segments))] for _ in range(rng.randrange(3))]
    assert messages(run_stream(segments)) == baseline


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans())
def test_arbitrary_bytes_never_raise_in_the_modbus_decoder(chunks, from_client):
    bus = Bus()
    analyzer = ModbusAnalyzer(FakeFlow(), bus)
    for i, chunk in enumerate(chunks):
        analyzer.feed(from_client if i % 3 else not from_client, chunk, float(i), i)
    analyzer.finish(99.0)
    for m in bus.messages:
        assert 2 <= m.len <= 254


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([0, 1, 101, 113, 228, 229, 276, 147]))
def test_arbitrary_frames_never_raise_in_the_packet_decoder(frame, linktype):
    decoder = PacketDecoder()
    decoder.decode(1.0, linktype, frame)
    # and an Ethernet/IPv4/TCP header in front of random bytes
    header = bytes(12) + b"\x08\x00" + b"\x45\x00" + struct.pack(">H", 20 + len(frame))
    decoder.decode(1.0, 1, header + frame)
