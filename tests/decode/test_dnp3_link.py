"""The native DNP3 link checker (sentinel/decode/dnp3_link.py) on byte streams.

Frames are built with the bitwise CRC of tests/ot/craft.py (an implementation independent of
the checker's crcmod table); the checker's own CRC is checked against the published check
value. The pipeline-level tests (rules, stats, flows) are in tests/ot/test_dnp3_link.py.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.decode import dnp3_link as dl
from sentinel.events import Anomaly, ConnId
from tests.ot.craft import _crc, dnp3_bad_data_crc, dnp3_bad_header_crc, dnp3_frame
from tests.ot.craft import dnp3_link_header as header


class Bus:
    def __init__(self) -> None:
        self.events: list[Anomaly] = []

    def anomaly(self, event: Anomaly) -> None:
        self.events.append(event)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]


class FakeFlow:
    """Only what the analyzer reads from a flow (uid, conn)."""

    uid = "Ctest"
    conn = ConnId("192.0.2.70", 44010, "192.0.2.80", 20000)


def checker() -> tuple[dl.Dnp3LinkAnalyzer, Bus]:
    bus = Bus()
    return dl.Dnp3LinkAnalyzer(FakeFlow(), bus), bus


def read(seq: int, src: int = 1, dst: int = 10) -> bytes:
    return dnp3_frame(bytes([0xC0 | seq, 0x01, 0x3C, 0x02, 0x06]), src, dst, True, seq)


def response(seq: int, src: int = 10, dst: int = 1, fc: int = 0x81) -> bytes:
    return dnp3_frame(bytes([0xC0 | seq, fc, 0x00, 0x00]), src, dst, False, seq)


# --------------------------------------------------------------------------- CRC
def test_crc_check_value() -> None:
    """CRC-16/DNP catalogue check value: the CRC of ASCII "123456789" is 0xEA82."""
    assert dl.crc16_dnp(b"123456789") == 0xEA82


@given(st.binary(max_size=64))
def test_crc_agrees_with_the_bitwise_definition(data: bytes) -> None:
    assert struct.pack("<H", dl.crc16_dnp(data)) == _crc(data)


# --------------------------------------------------------------------------- bad_link_crc
def test_clean_traffic_gives_nothing() -> None:
    a, bus = checker()
    for seq in range(40):
        a.feed(True, read(seq & 0x0F), 1.0, seq)
        a.feed(False, response(seq & 0x0F), 1.1, seq)
    assert bus.events == [] and a.frames == 80 and a.live == 0


def test_bad_header_crc_once_then_resynchronised() -> None:
    a, bus = checker()
    a.feed(True, read(0) + dnp3_bad_header_crc(read(1)) + read(2), 1.0, 7)
    [ev] = bus.events
    assert (ev.name, ev.frame, ev.is_orig, ev.uid) == ("dnp3.bad_link_crc", 7, True, "Ctest")
    assert ev.detail.startswith("link header CRC 0x")
    assert a.frames == 2  # the frames before and after
    a.feed(True, dnp3_bad_header_crc(read(3)), 2.0, 8)  # in step again: a new event
    assert bus.names == ["dnp3.bad_link_crc"] * 2


def test_bad_data_crc_is_not_a_link_event() -> None:
    """A data block CRC mismatch is the tshark path's bad_transport_crc."""
    a, bus = checker()
    a.feed(True, dnp3_bad_data_crc(read(0)), 1.0, 1)
    assert bus.events == [] and a.frames == 1 and a.live == 0  # the request does not count


def test_stream_starting_mid_frame_resynchronises_silently() -> None:
    a, bus = checker()
    a.feed(True, read(0)[4:] + dnp3_bad_header_crc(read(1)) + read(2), 1.0, 1)
    assert bus.events == [] and a.frames == 1


def test_after_a_gap_resynchronises_silently() -> None:
    a, bus = checker()
    a.feed(True, read(0)[:12], 1.0, 1)
    a.gap(True, 1.0, 2)
    a.feed(True, read(1)[6:] + dnp3_bad_header_crc(read(2)) + read(3), 1.0, 3)
    assert bus.events == [] and a.frames == 1
    a.feed(True, dnp3_bad_header_crc(read(4)), 1.0, 4)
    assert bus.names == ["dnp3.bad_link_crc"]


# --------------------------------------------------------------------------- len_too_small
@pytest.mark.parametrize("length", [0, 1, 2, 3, 4])
def test_link_length_below_5(length: int) -> None:
    a, bus = checker()
    a.feed(True, header(length, 0xC4, 1, 10) + read(0), 1.0, 3)
    [ev] = bus.events
    assert ev.name == "dnp3.len_too_small" and f"link length {length}" in ev.detail
    assert a.frames == 2 and a.live == 1  # the header is skipped, the READ after it counts


def test_link_length_5_is_fine() -> None:
    a, bus = checker()
    a.feed(True, header(5, 0xC9, 1, 10), 1.0, 1)  # REQUEST_LINK_STATUS
    a.feed(False, header(5, 0x0B, 10, 1), 1.0, 2)  # LINK_STATUS
    assert bus.events == [] and a.frames == 2


def test_bad_crc_is_checked_before_the_length() -> None:
    """Suricata's order: a short header with a wrong CRC is a bad_link_crc."""
    a, bus = checker()
    a.feed(True, dnp3_bad_header_crc(header(3, 0xC4, 1, 10)), 1.0, 1)
    assert bus.names == ["dnp3.bad_link_crc"]


# --------------------------------------------------------------------------- flooded
def test_flooded_once_then_rearmed_below_32() -> None:
    a, bus = checker()
    for i in range(32):
        a.feed(True, read(i & 0x0F), 1.0, i)
    assert bus.events == [] and a.live == 32
    a.feed(True, read(0), 2.0, 100)  # the 33rd
    [ev] = bus.events
    assert ev.name == "dnp3.flooded" and ev.frame == 100 and ev.detail.startswith("33 requests")
    a.feed(True, read(1), 2.0, 101)  # 34: raised once
    assert len(bus.events) == 1
    # Sequence 15 has 2 live requests: 34 - 2 = 32, not below 32, so not re-armed.
    a.feed(False, response(15), 3.0, 102)
    assert a.live == 32
    a.feed(True, read(15), 3.0, 103)
    assert a.live == 33 and len(bus.events) == 1
    # Sequence 14 (2 live): 31, re-armed; two more requests make 33 again.
    a.feed(False, response(14), 4.0, 104)
    assert a.live == 31
    a.feed(True, read(14) + read(14), 4.0, 105)
    assert bus.names == ["dnp3.flooded"] * 2 and bus.events[1].frame == 105


def test_responses_answer_their_pair_and_sequence_only() -> None:
    a, bus = checker()
    for i in range(16):
        a.feed(True, read(i, src=1, dst=10) + read(i, src=2, dst=10), 1.0, i)
    assert a.live == 32
    a.feed(False, response(3, src=10, dst=2), 1.0, 20)  # answers (2 -> 10, seq 3) only
    assert a.live == 31
    a.feed(False, response(3, src=10, dst=2, fc=0x82), 1.0, 21)  # unsolicited: answers nothing
    a.feed(False, response(4, src=11, dst=1), 1.0, 22)  # another outstation
    assert a.live == 31 and bus.events == []


@pytest.mark.parametrize("fc", [0x00, 0x06, 0x08, 0x0A, 0x0C, 0x21])
def test_requests_without_response_do_not_count(fc: int) -> None:
    a, bus = checker()
    for i in range(40):
        a.feed(True, dnp3_frame(bytes([0xC0 | (i & 0x0F), fc, 0x3C, 0x02]), 1, 10, True, i), 1, i)
    assert a.live == 0 and bus.events == []


def test_only_first_fragments_count() -> None:
    a, bus = checker()
    for i in range(40):  # application FIR clear: a later fragment of a request
        a.feed(True, dnp3_frame(bytes([0x40 | (i & 0x0F), 0x01, 0x3C]), 1, 10, True, i), 1, i)
    assert a.live == 0 and bus.events == []


def test_authenticate_resp_answers() -> None:
    a, _ = checker()
    a.feed(True, read(5), 1.0, 1)
    a.feed(False, response(5, fc=0x83), 1.0, 2)
    assert a.live == 0


# --------------------------------------------------------------------------- bounds
def test_live_table_is_bounded() -> None:
    a, bus = checker()
    for src in range(2000):  # 2000 masters x 1 request: keys are capped
        a.feed(True, read(0, src=src), 1.0, src)
    assert len(a._live) == dl.MAX_KEYS and a.live == dl.MAX_KEYS
    assert bus.names == ["dnp3.flooded"]
    for _ in range(3 * dl.MAX_PER_KEY):  # one key, many retries: capped per key
        a.feed(True, read(1, src=5000), 1.0, 1)
    assert a._live[(5000, 10, 1)] == dl.MAX_PER_KEY


def test_buffer_is_bounded_by_one_frame() -> None:
    a, _ = checker()
    frame = dnp3_frame(bytes(249), 1, 10, True)  # the longest frame: length 255
    assert len(frame) == dl.MAX_FRAME
    for i in range(len(frame) - 1):
        a.feed(True, frame[i : i + 1], 1.0, i)
        assert len(a._buffers[True]) <= dl.MAX_FRAME
    assert a.frames == 0
    a.feed(True, frame[-1:], 1.0, 999)
    assert a.frames == 1 and a._buffers[True] == b""


def test_a_frame_ending_in_0x05_at_a_segment_end_is_not_taken_for_a_start() -> None:
    """Found by the property test below: a frame whose last octet (a CRC octet) is 0x05 and
    that ends a segment was kept as the start of the next frame, and the next segment's 0x64
    made a header of it: a bad-CRC anomaly the same bytes in one piece do not give."""
    data = header(30, 0xC4, 1, 10) + bytes(28) + b"\x05\x64" + bytes(18)
    first, rest = data[:39], data[39:]  # the frame is 39 octets, its last one 0x05
    assert first[-1] == 0x05
    a, bus = checker()
    a.feed(True, first, 1.0, 1)
    assert a.frames == 1 and a._buffers[True] == b""
    a.feed(True, rest, 1.0, 2)
    assert bus.events == [] and a.frames == 1
    # a 0x05 after the frame still waits for the segment that completes its start
    two = read(0) + read(1)
    b, bus = checker()
    b.feed(True, two[: len(read(0)) + 1], 1.0, 1)
    assert b.frames == 1 and b._buffers[True] == b"\x05"
    b.feed(True, two[len(read(0)) + 1 :], 1.0, 2)
    assert b.frames == 2 and bus.events == []


# --------------------------------------------------------------------------- hostile bytes
def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[i:j] for i, j in itertools.pairwise(bounds) if j > i]


_PIECES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([read(0), read(7), response(0), dnp3_bad_header_crc(read(2))]),
    st.builds(lambda n: header(n, 0xC4, 1, 10), st.integers(0, 255)),
    st.just(b"\x05\x64"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=30), st.lists(st.integers(0, 2000), max_size=20))
def test_arbitrary_bytes_and_segmentations_never_raise(
    pieces: list[bytes], cuts: list[int]
) -> None:
    """Any bytes in any segmentation: no exception, bounded buffer, and the same events as
    the bytes in one piece (framing does not depend on where TCP cut the stream)."""
    data = b"".join(pieces)
    whole, whole_bus = checker()
    whole.feed(True, data, 1.0, 1)
    split, split_bus = checker()
    for n, chunk in enumerate(_split(data, cuts)):
        split.feed(True, chunk, 1.0, n)
        assert len(split._buffers[True]) < dl.MAX_FRAME
    split.finish(2.0)
    assert [(e.name, e.detail) for e in split_bus.events] == [
        (e.name, e.detail) for e in whole_bus.events
    ]
    assert split.frames == whole.frames
