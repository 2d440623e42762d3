"""Modbus messages to detectors: all of them by default; by function code for a detector that
states its interest per flow direction; and every message that comes with a protocol event."""

from __future__ import annotations

import struct
from pathlib import Path

from sentinel.config import Config
from sentinel.events import ConnId, ModbusMessage
from sentinel.pipeline.detector import Detector, ModbusInterest
from sentinel.rules.engine import RuleEngine
from sentinel.rules.loader import load_ruleset
from tests.conftest import run_analysis
from tests.craft import Conversation, adu, write
from tests.rules.helpers import rule


def request(tid: int, fc: int) -> bytes:
    return adu(tid, 1, struct.pack(">BHH", fc, 0, 1))


class Seen(Detector):
    id = "test_seen"

    def __init__(self, interest: dict[bool, ModbusInterest | None] | None = None) -> None:
        super().__init__(Config())
        self.interest = interest
        self.seen: list[tuple[bool, int, str]] = []

    def on_modbus(self, msg: ModbusMessage) -> None:
        self.seen.append((msg.is_orig, msg.tid, msg.func))


class Interested(Seen):
    def modbus_interest(self, uid: str, conn: ConnId, is_orig: bool) -> ModbusInterest | None:
        return self.interest[is_orig]  # type: ignore[index]


def test_interest_selects_messages_and_protocol_events_reach_everyone(tmp_path: Path) -> None:
    c = Conversation()
    c.exchange(request(1, 3), adu(1, 1, bytes([3, 2, 0, 7])))  # a read
    c.exchange(request(2, 6), adu(2, 1, struct.pack(">BHH", 6, 0, 1)))  # a write
    c.exchange(request(3, 4), adu(3, 1, bytes([0x84, 2])))  # an exception response
    c.exchange(request(4, 3), adu(9, 1, bytes([3, 2, 0, 7])))  # unsolicited: a protocol event
    pcap = write(tmp_path / "c.pcap", c.packets)
    every = Seen()
    some = Interested({True: ModbusInterest(frozenset({6})), False: ModbusInterest(frozenset())})
    reads = Interested({True: None, False: ModbusInterest(frozenset({3}), exceptions=False)})
    run_analysis(pcap, tmp_path / "out", Config(), [every, some, reads])
    assert len(every.seen) == 8
    # requests: function 6 only; responses: exceptions, and the one with an event
    assert some.seen == [
        (True, 2, "WRITE_SINGLE_REGISTER"),
        (False, 3, "READ_INPUT_REGISTERS_EXCEPTION"),
        (False, 9, "READ_HOLDING_REGISTERS"),
    ]
    assert [s for s in reads.seen if not s[0]] == [
        (False, 1, "READ_HOLDING_REGISTERS"),
        (False, 9, "READ_HOLDING_REGISTERS"),
    ]
    assert len([s for s in reads.seen if s[0]]) == 4


def test_rule_engine_interest_follows_the_direction_s_rules() -> None:
    engine = RuleEngine(load_ruleset(Config()).rules)
    conn = ConnId("192.0.2.10", 40000, "192.0.2.20", 502)
    functions, exceptions = engine.modbus_interest("C1", conn, True)  # type: ignore[misc]
    # diagnostics, identification, server id; writes for value_mismatch; invalid fc
    assert {8, 17, 43, 0, 5, 6, 15, 16, 22} <= functions and 3 not in functions
    assert exceptions
    functions, exceptions = engine.modbus_interest("C1", conn, False)  # type: ignore[misc]
    assert 3 not in functions and exceptions  # exception codes; echoed writes


def test_rule_engine_interest_is_kept_per_plan_and_direction() -> None:
    """Both directions share one plan here (the rule's header fits both); the interest still
    differs by direction (invalid function codes are requests), and other flows reuse it."""
    engine = RuleEngine([rule("app-layer-event:modbus.invalid_function_code; sid:1;",
                              "alert modbus any any -> any any")])  # fmt: skip
    conn = ConnId("192.0.2.10", 40000, "192.0.2.20", 502)
    assert engine.plan("C1", conn, True, 6) is engine.plan("C1", conn, False, 6)
    assert engine.modbus_interest("C1", conn, True) == (frozenset({0}), True)
    assert engine.modbus_interest("C1", conn, False) == (frozenset(), False)
    other = ConnId("192.0.2.11", 40001, "192.0.2.20", 502)
    assert engine.modbus_interest("C2", other, True) is engine.modbus_interest("C1", conn, True)


class Requests(Detector):
    """Records the request each response names."""

    id = "test_requests"

    def __init__(self) -> None:
        super().__init__(Config())
        self.pairs: list[tuple[int, int | None]] = []

    def on_modbus(self, msg: ModbusMessage) -> None:
        if not msg.is_orig:
            self.pairs.append((msg.tid, msg.request.tid if msg.request is not None else None))


def test_responses_name_their_request_and_records_do_not(tmp_path: Path) -> None:
    c = Conversation()
    c.exchange(request(1, 3), adu(1, 1, bytes([3, 2, 0, 7])))
    c.exchange(request(3, 4), adu(3, 1, bytes([0x84, 2])))
    c.exchange(request(4, 3), adu(9, 1, bytes([3, 2, 0, 7])))  # unsolicited
    pcap = write(tmp_path / "c.pcap", c.packets)
    det = Requests()
    a = run_analysis(pcap, tmp_path / "out", Config(), [det])
    assert det.pairs == [(1, 1), (3, 3), (9, None)]
    records = a.records("modbus")
    assert len(records) == 6 and not any("request" in r for r in records)  # unchanged
    assert ["latency" in r for r in records if not r["is_orig"]] == [True, True, False]
