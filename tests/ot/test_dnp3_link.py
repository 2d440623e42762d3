"""The native DNP3 link checker inside a run (real tshark beside it): its events reach the
rules and the run's stats, carry the flow's uid like the tshark path's events of the same
flow, follow the OT off switch, and never fire on clean real captures.

The byte-level behaviour is tested in tests/decode/test_dnp3_link.py, every shipped DNP3
event rule in tests/rules/test_dnp3_shipped.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sentinel.detectors.suricata import RuleDetector
from sentinel.pipeline.engine import Pipeline
from sentinel.sinks.eve import EveSink
from tests.conftest import run_analysis
from tests.craft import write
from tests.ot import craft
from tests.ot.conftest import ICS, ZEEK_DNP3, ot_config, records

LINK_EVENTS = {"dnp3.bad_link_crc", "dnp3.len_too_small", "dnp3.flooded"}
READ = bytes.fromhex("c0013c0206")


def _alerts(a) -> Counter[str]:
    out: Counter[str] = Counter()
    for f in a.findings:
        out[f["rule"]["id"]] += f["sentinel"]["count"]
    return out


def _run(tmp_path: Path, build, **ot) -> object:
    c = craft.dnp3_conversation()
    build(c)
    c.close()
    pcap = write(tmp_path / "capture.pcap", c.packets)
    config = ot_config(**ot)
    return run_analysis(pcap, tmp_path / "out", config, [RuleDetector(config)])


def test_flooded_rearmed_and_raised_again(tmp_path: Path, tshark: str) -> None:
    """33 unanswered READs (sequences 0-15, 0-15, 0): flooded. Responses to sequences 0 and
    1 answer 3 + 2 of them (28 live, below 32: re-armed); 5 more READs make 33 again."""

    def build(c) -> None:
        craft.dnp3_unanswered_reads(c, 33)
        craft.dnp3_responses(c, [0, 1])
        craft.dnp3_unanswered_reads(c, 5, first_seq=2)

    a = _run(tmp_path, build)
    assert a.stats["anomalies"] == {"dnp3.flooded": 2}
    assert {k: v for k, v in _alerts(a).items() if k.startswith("22700")} == {"2270000": 2}
    details = [
        e["detail"]
        for f in a.findings
        if f["rule"]["id"] == "2270000"
        for e in f["sentinel"]["evidence"]["events"]
    ]
    assert details and all(d.startswith("33 requests without response") for d in details)


def _read(c, seq: int, master: int = 1) -> None:
    c.send(True, craft.dnp3_frame(bytes([0xC0 | seq]) + READ[1:], master, 10, True, seq), dt=0.01)


def _response(c, seq: int, master: int = 1) -> None:
    c.send(False, craft.dnp3_frame(bytes([0xC0 | seq, 0x81, 0, 0]), 10, master, False, seq))


def test_flooded_not_rearmed_at_32(tmp_path: Path, tshark: str) -> None:
    """Masters 1 and 2 on one connection: 33 live (flooded), 32 after one answer (not below
    32: no new event at 33 again), 31 after two more (re-armed: flooded at 33)."""

    def build(c) -> None:
        craft.dnp3_unanswered_reads(c, 32)  # master 1: sequences 0-15 twice
        _read(c, 0, master=2)  # 33
        _response(c, 0, master=2)  # 32
        _read(c, 1, master=2)  # 33: still raised, no event
        _response(c, 5)  # master 1 sequence 5 (2 live): 31, re-armed
        _read(c, 2, master=2)
        _read(c, 3, master=2)  # 33: the second event

    a = _run(tmp_path, build)
    assert a.stats["anomalies"] == {"dnp3.flooded": 2}
    assert {k: v for k, v in _alerts(a).items() if k.startswith("22700")} == {"2270000": 2}


def test_events_join_the_flow_and_its_tshark_events(tmp_path: Path, tshark: str) -> None:
    def build(c) -> None:
        c.send(True, craft.dnp3_bad_header_crc(craft.dnp3_frame(READ, 1, 10, True)))
        c.send(True, craft.dnp3_link_header(3, 0xC4, 1, 10))
        craft.dnp3_request(c, READ, bytes.fromhex("c0810000"))

    a = _run(tmp_path, build)
    assert a.stats["anomalies"] == {"dnp3.bad_link_crc": 1, "dnp3.len_too_small": 1}
    [flow] = a.flows
    assert flow["service"] is None  # the checker does not name the service
    link = [f for f in a.findings if f["rule"]["id"] in ("2270001", "2270002")]
    assert sorted(f["rule"]["id"] for f in link) == ["2270001", "2270002"]
    assert all(f["sentinel"]["evidence"]["direction"] == "to_server" for f in link)
    ot = records(a, "ot")
    assert [r["function"] for r in ot] == ["READ", "RESPONSE"]  # tshark: the good frames only
    assert {r["uid"] for r in ot} == {f["sentinel"]["flow_uid"] for f in link} == {flow["uid"]}
    # One producer per event: tshark's len_too_small does not repeat the link checker's.
    assert [r["dnp3"].get("events") for r in ot] == [None, None]  # written when there are


def test_eve_alert_of_a_link_event(tmp_path: Path, tshark: str) -> None:
    c = craft.dnp3_conversation()
    c.send(True, craft.dnp3_bad_header_crc(craft.dnp3_frame(READ, 1, 10, True)))
    craft.dnp3_request(c, READ, bytes.fromhex("c0810000"))
    c.close()
    pcap = write(tmp_path / "capture.pcap", c.packets)
    config = ot_config()
    eve = EveSink(tmp_path / "out")
    Pipeline(config, tmp_path / "out", [RuleDetector(config, eve=eve)], [eve]).run(pcap)
    alerts = [
        r
        for r in map(json.loads, (tmp_path / "out" / "eve.json").open())
        if r["event_type"] == "alert"
    ]
    [alert] = alerts
    assert alert["alert"]["signature_id"] == 2270002 and alert["app_proto"] == "dnp3"
    assert alert["direction"] == "to_server" and (alert["dest_port"], alert["pcap_cnt"]) == (
        20000,
        4,  # handshake, then the bad frame
    )
    assert "dnp3" not in alert and "tx_id" not in alert  # no message, no transaction


def test_off_switch_turns_the_checker_off(tmp_path: Path, tshark: str) -> None:
    def build(c) -> None:
        c.send(True, craft.dnp3_bad_header_crc(craft.dnp3_frame(READ, 1, 10, True)))
        craft.dnp3_request(c, READ, bytes.fromhex("c0810000"))

    off = _run(tmp_path, build, enabled=False)
    assert off.stats["anomalies"] == {} and not _alerts(off)


def test_other_ports_are_not_checked(tmp_path: Path, tshark: str) -> None:
    def build(c) -> None:
        c.send(True, craft.dnp3_bad_header_crc(craft.dnp3_frame(READ, 1, 10, True)))

    a = _run(tmp_path, build, dnp3={"ports": [20001]})
    assert a.stats["anomalies"] == {}


CLEAN = sorted((ZEEK_DNP3 / "pcaps").glob("*.pcap")) + sorted((ICS / "dnp3").glob("*.pcap"))


@pytest.mark.parametrize("capture", CLEAN, ids=[p.stem for p in CLEAN])
def test_real_captures_give_no_link_event(ot_run, capture: Path) -> None:
    a = ot_run(capture)
    assert not set(a.stats["anomalies"]) & LINK_EVENTS
