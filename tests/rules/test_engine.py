"""The engine: which rules apply to an event, flowbits, thresholds and detection_filter,
actions, and alert frequency (spec section 2, "threshold", "flowbits", "Alert frequency")."""

from __future__ import annotations

from sentinel.events import Anomaly, ConnId, PacketEvent, StreamData
from sentinel.rules.engine import RuleEngine
from tests.rules.helpers import msg, rule, rules

A = ConnId("10.0.0.1", 40000, "10.0.0.2", 502)
B = ConnId("10.0.0.3", 40001, "10.0.0.2", 502)


def chunk(
    data: bytes,
    ts: float = 0.0,
    conn: ConnId = A,
    uid: str = "C1",
    is_orig: bool = True,
    frame: int = 1,
) -> StreamData:
    return StreamData(ts, frame, uid, conn, is_orig, data, 0)


def packet(
    payload: bytes = b"", established: bool = True, ts: float = 0.0, is_orig: bool = True
) -> PacketEvent:
    return PacketEvent(ts, 1, "C1", A, is_orig, 6, 0x18, payload, established)


def sids(alerts: list) -> list[int]:
    return [a.rule.sid for a in alerts]


def engine(*rules_text: str, header: str = "alert tcp any any -> any any") -> RuleEngine:
    return RuleEngine([rule(t, header) for t in rules_text])


# --------------------------------------------------------------------------- headers
def test_header_and_direction_select_rules_per_flow_direction() -> None:
    e = RuleEngine([
        rule('content:"x"; sid:1;', "alert tcp 10.0.0.1 any -> any 502"),
        rule('content:"x"; sid:2;', "alert tcp any 502 -> any any"),
        rule('content:"x"; flow:to_client; sid:3;', "alert tcp any any -> any any"),
        rule('content:"x"; sid:4;', "alert tcp 10.0.0.3 any -> any any"),
        rule('content:"x"; sid:5;', "alert udp any any -> any any"),
        *rules('content:"x"; sid:6;', "alert tcp any any <> 10.0.0.1 any"),
    ])  # fmt: skip
    assert sids(e.inspect_stream(chunk(b"x"))) == [1, 6]
    assert sids(e.inspect_stream(chunk(b"x", is_orig=False))) == [2, 3, 6]
    assert sids(e.inspect_stream(chunk(b"x", conn=B, uid="C2"))) == [4]


def test_header_index_agrees_with_each_rule_s_header_and_evaluates_a_value_once() -> None:
    """Per flow direction the rules come from cached per-value bitmasks; they must be exactly
    the rules whose own header fits, with an address seen as source in one direction and as
    destination in the other, negations, lists and port ranges."""
    e = RuleEngine([
        rule('content:"x"; sid:1;', "alert tcp [10.0.0.0/24,!10.0.0.9] any -> any 502"),
        rule('content:"x"; sid:2;', "alert tcp any any -> 10.0.0.0/24 ![502,503]"),
        rule('content:"x"; sid:3;', "alert tcp any 1024: -> any any"),
        rule('content:"x"; sid:4;', "alert udp any any -> any 502"),
        rule('content:"x"; flow:to_client; sid:5;', "alert tcp any 502 -> any any"),
        *rules('content:"x"; sid:6;', "alert ip 10.0.0.9 any <> any [80,502]"),
    ])  # fmt: skip
    hosts = ["10.0.0.1", "10.0.0.9", "192.0.2.7"]
    seen_sources = set()
    for n, (client, server, port) in enumerate(
        (c, s, p) for c in hosts for s in hosts for p in (80, 502, 503) if c != s
    ):
        conn = ConnId(client, 40000 + n, server, port)
        for proto in (6, 17):
            for is_orig in (True, False):
                if is_orig:
                    src, sport, dst, dport = client, 40000 + n, server, port
                else:
                    src, sport, dst, dport = server, port, client, 40000 + n
                seen_sources.add(src)
                expected = [
                    c.index
                    for c in e.compiled
                    if c.rule.transport in (None, proto)
                    and c.to_server in (None, is_orig)
                    and c.rule.header.src.match(src)
                    and c.rule.header.src_ports.match(sport)
                    and c.rule.header.dst.match(dst)
                    and c.rule.header.dst_ports.match(dport)
                ]
                mask = e.headers.matching(proto, is_orig, src, sport, dst, dport)
                assert [i for i in range(len(e.compiled)) if mask >> i & 1] == expected, conn
        e.plan(f"C{n}", conn, True, 6)
    assert set(e.headers.cached[0]) == seen_sources  # one entry per source address seen
    assert len(e.headers.parts[0][1]) == 2  # distinct source specs besides "any": 2, not 6


def test_packet_rules_see_flow_state() -> None:
    e = engine(
        "flow:established,to_server; sid:1;", "flow:not_established; sid:2;", "dsize:0; sid:3;"
    )
    assert sids(e.inspect_packet(packet(b"", established=False))) == [2, 3]
    assert sids(e.inspect_packet(packet(b"abc"))) == [1]
    assert sids(e.inspect_packet(packet(b"abc", is_orig=False))) == []


# --------------------------------------------------------------------------- frequency
def test_one_alert_per_signature_per_event() -> None:
    e = engine('content:"a"; sid:1;')
    assert sids(e.inspect_stream(chunk(b"a a a a"))) == [1]
    assert sids(e.inspect_stream(chunk(b"a", frame=2))) == [1]
    both = RuleEngine(rules('content:"a"; sid:7;', "alert tcp 10.0.0.0/8 any <> 10.0.0.0/8 any"))
    assert len(both.rules) == 2
    assert sids(both.inspect_stream(chunk(b"a"))) == [7]  # both halves match: one alert


def test_modbus_rules_alert_once_per_transaction_and_direction() -> None:
    e = engine(
        "modbus:function 3; sid:1;",
        "flow:to_client; modbus:function 3; sid:2;",
        header="alert modbus any any -> any any",
    )
    assert sids(e.inspect_modbus(msg(3, {"address": 0, "quantity": 1}))) == [1]
    # the keyword inspects requests; a paired response does not match again
    assert sids(e.inspect_modbus(msg(3, {"values": [1]}, is_orig=False, latency=0.1))) == []
    # a response without request (response-only transaction) is inspected
    assert sids(e.inspect_modbus(msg(3, {"values": [1]}, is_orig=False))) == [1, 2]


def test_app_layer_events_match_the_message_they_belong_to() -> None:
    e = engine(
        "app-layer-event:modbus.invalid_value; sid:1;",
        "app-layer-event:modbus.invalid_value; modbus:function 5; sid:2;",
        "app-layer-event:modbus.invalid_value; modbus:function 6; sid:3;",
        "app-layer-event:modbus.invalid_function_code; sid:4;",
        header="alert modbus any any -> any any",
    )
    bad = Anomaly(1.0, "C1", A, True, "modbus.invalid_value", "coil value 0x1234", 1)
    assert sids(e.inspect_modbus(msg(5, {"address": 0}), (bad,))) == [1, 2]
    assert sids(e.inspect_modbus(msg(5, {"address": 0}))) == []
    assert sids(e.inspect_event(bad)) == [1]  # outside a message: no modbus clause can match
    assert sids(e.inspect_modbus(msg(0))) == [4]  # derived from the message


# --------------------------------------------------------------------------- flowbits
def test_flowbits_set_isset_isnotset_unset_toggle_and_or() -> None:
    e = engine(
        'content:"login"; flowbits:set,auth; flowbits:noalert; sid:1;',
        'content:"cmd"; flowbits:isset,auth; sid:2;',
        'content:"cmd"; flowbits:isnotset,auth; sid:3;',
        'content:"logout"; flowbits:unset,auth; sid:4;',
        'content:"flip"; flowbits:toggle,other; sid:5;',
        'content:"cmd"; flowbits:isset,nope|other; sid:6;',
    )
    assert sids(e.inspect_stream(chunk(b"cmd"))) == [3]
    assert sids(e.inspect_stream(chunk(b"login"))) == []  # noalert, but the bit is set
    assert sids(e.inspect_stream(chunk(b"cmd"))) == [2]
    assert sids(e.inspect_stream(chunk(b"flip"))) == [5]
    assert sids(e.inspect_stream(chunk(b"cmd"))) == [2, 6]
    assert sids(e.inspect_stream(chunk(b"flip logout"))) == [4, 5]
    assert sids(e.inspect_stream(chunk(b"cmd"))) == [3]
    # bits are per flow
    assert sids(e.inspect_stream(chunk(b"cmd", conn=B, uid="C2"))) == [3]
    e.flow_ended("C1")
    assert "C1" not in e.flowbits


def test_setter_rules_run_before_readers_in_the_same_packet() -> None:
    e = engine(
        'content:"x"; flowbits:isset,seen; sid:1;',
        'content:"x"; flowbits:set,seen; flowbits:noalert; sid:2;',
    )
    assert sids(e.inspect_stream(chunk(b"x"))) == [1]


def test_flowbit_actions_run_even_when_thresholded() -> None:
    e = engine(
        'content:"a"; flowbits:set,b; threshold:type limit, track by_rule, count 1, '
        "seconds 60; sid:1;",
        'content:"z"; flowbits:isset,b; sid:2;',
    )
    assert sids(e.inspect_stream(chunk(b"a", ts=0))) == [1]
    e.flowbits.clear()
    assert sids(e.inspect_stream(chunk(b"a", ts=1))) == []  # suppressed ...
    assert sids(e.inspect_stream(chunk(b"z", ts=2))) == [2]  # ... but the bit was set


# --------------------------------------------------------------------------- thresholds
def run(e: RuleEngine, times: list[float], conn: ConnId = A) -> list[float]:
    """Timestamps of the chunks that alerted."""
    return [t for t in times if e.inspect_stream(chunk(b"a", ts=t, conn=conn))]


def test_threshold_limit() -> None:
    e = engine('content:"a"; threshold:type limit, track by_src, count 2, seconds 10;')
    assert run(e, [0, 1, 2, 3, 11, 12, 13]) == [0, 1, 11, 12]


def test_threshold_threshold() -> None:
    e = engine('content:"a"; threshold:type threshold, track by_src, count 3, seconds 10;')
    assert run(e, [0, 1, 2, 3, 4, 5, 6, 20, 21]) == [2, 5]


def test_threshold_both() -> None:
    e = engine('content:"a"; threshold:type both, track by_src, count 3, seconds 10;')
    assert run(e, [0, 1, 2, 3, 4, 5, 20, 21, 22, 23]) == [2, 22]


def test_threshold_backoff() -> None:
    e = engine('content:"a"; threshold:type backoff, track by_flow, count 1, multiplier 10;')
    alerted = [i for i in range(1, 1001) if e.inspect_stream(chunk(b"a", ts=i))]
    assert alerted == [1, 10, 100, 1000]


def test_detection_filter() -> None:
    e = engine('content:"a"; detection_filter:track by_src, count 2, seconds 10;')
    assert run(e, [0, 1, 2, 3, 12, 13, 14]) == [2, 3, 14]


def test_detection_filter_unique_on_port() -> None:
    e = engine(
        'content:"a"; detection_filter:track by_dst, count 1, seconds 60, unique_on src_port;'
    )
    same = [bool(e.inspect_stream(chunk(b"a", ts=t))) for t in (0, 1, 2)]
    assert same == [False, False, False]  # one source port only
    other = ConnId("10.0.0.1", 40002, "10.0.0.2", 502)
    assert e.inspect_stream(chunk(b"a", ts=3, conn=other, uid="C9"))


def test_threshold_tracks_are_separate_counters() -> None:
    e = engine('content:"a"; threshold:type limit, track by_src, count 1, seconds 10;')
    assert run(e, [0, 1]) == [0]
    assert run(e, [2, 3], conn=B) == [2]  # another source has its own counter
    by_rule = engine('content:"a"; threshold:type limit, track by_rule, count 1, seconds 10;')
    assert run(by_rule, [0]) == [0]
    assert run(by_rule, [1], conn=B) == []
    by_dst = engine('content:"a"; threshold:type limit, track by_dst, count 1, seconds 10;')
    assert run(by_dst, [0]) == [0]
    assert run(by_dst, [1], conn=B) == []  # same destination


# --------------------------------------------------------------------------- actions
def test_pass_rules_stop_the_other_rules_for_that_event() -> None:
    e = RuleEngine([
        rule('content:"a"; sid:1;'),
        rule('content:"ok"; sid:2;', "pass tcp any any -> any any"),
        rule('content:"a"; sid:3;', "drop tcp any any -> any any"),
    ])  # fmt: skip
    assert sids(e.inspect_stream(chunk(b"a"))) == [3, 1]  # drop alerts in IDS mode
    assert sids(e.inspect_stream(chunk(b"a ok"))) == []


# --------------------------------------------------------------------------- stream gate
def admits(gate: tuple, data: bytes) -> bool:
    return any(
        len(data) >= size and all(data[at] in values for at, values in conditions)
        for size, conditions in gate
    )


def test_stream_gate_admits_every_chunk_a_stream_rule_can_alert_on() -> None:
    texts = [
        'content:"|00 00|"; offset:2; depth:2; byte_test:1,&,0x80,7; content:"|01|"; '
        "offset:8; depth:1; fast_pattern; sid:1;",
        'content:"|00 00|"; offset:2; depth:2; byte_test:1,&,0x80,7; content:"|02|"; '
        "offset:8; depth:1; fast_pattern; sid:2;",
        'content:"GET "; offset:0; depth:4; sid:3;',
        'content:"abc"; sid:4;',  # anywhere: no position, size 3 at least
        "dsize:>20; sid:5;",
        'dsize:5<>9; content:"z"; sid:6;',
        'content:"q"; offset:6; sid:7;',  # no depth: not at a fixed position, size 7
        'content:"|ff|"; offset:4; depth:1; content:!"x"; byte_test:1,!&,0x01,5; sid:8;',
    ]
    e = engine(*texts)
    gate = e.stream_gate("C1", A, True, 6)
    assert gate is not None
    # the two exception rules share one alternative, their fast pattern tested first
    (exc,) = [conds for size, conds in gate if size == 9]
    assert exc[0] == (8, frozenset({1, 2})) and exc[1] == (7, frozenset(range(128, 256)))
    odd = frozenset(range(1, 256, 2))
    assert (6, ((4, frozenset({255})), (5, frozenset(range(256)) - odd))) in gate
    samples = [b"", b"a", b"ab", b"abc", b"xxabcxx", b"GET /", b"\x00\x01\x00\x00\x00\x03\x01\x83"]
    samples += [bytes([i % 256]) * n for i in (0, 0x47, 0x83, 0xFF) for n in range(1, 30)]
    samples += [b"zzzzzz", b"zzzzzzzzz", b"......q", b"\x00\x00\x00\x00\xff\x02"]
    samples += [
        b"\x00\x01\x00\x00\x00\x03\x01" + bytes([f, c]) for f in (3, 0x83) for c in (1, 2, 3)
    ]
    hits = 0
    for data in samples:
        if e.inspect_stream(chunk(data)):
            hits += 1
            assert admits(gate, data), data
    assert hits > 10
    exceptions_only = engine(*texts[:2]).stream_gate("C1", A, True, 6)
    assert not admits(exceptions_only, b"\x00\x01\x00\x00\x00\x05\x01\x03\x02")  # a response
    assert e.stream_gate("C1", A, True, 17) is None  # UDP: every datagram counts


def test_stream_gate_of_a_direction_without_stream_rules_admits_nothing() -> None:
    e = engine('flow:to_server; content:"x"; offset:1; depth:1; sid:1;')
    assert e.stream_gate("C1", A, False, 6) == ()
    assert e.stream_gate("C1", A, True, 6) == ((2, ((1, frozenset(b"x")),)),)
