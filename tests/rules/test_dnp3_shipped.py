"""Every shipped DNP3 event rule (signatures/dnp3-events.rules) against a positive and a
negative capture, decoded by tshark through the real pipeline; each test asserts the exact
findings (rule id -> alert count) of the whole shipped rule set.

Captures are crafted with tests/ot/craft.py (master 192.0.2.70 -> outstation
192.0.2.80:20000, link 1 -> 10), except the real Zeek capture dnp3.pcap, whose five READs of
object 255/0 (no such object in IEEE 1815) are unknown objects, and Zeek's other DNP3
captures, which must raise none of these events.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sentinel.config import Config
from sentinel.detectors.suricata import RuleDetector
from sentinel.rules.loader import load_ruleset
from tests.craft import Conversation, write
from tests.ot import craft
from tests.ot.conftest import ZEEK_DNP3

DNP3_EVENT_SIDS = {
    "2270000", "2270001", "2270002", "2270003", "2270004", "2270005", "2270006", "2270007",
    "2270101",
}  # fmt: skip


def _fragment(c: Conversation, app: bytes, master: bool = True) -> None:
    frames = craft.dnp3_link_frames(app, 1 if master else 10, 10 if master else 1, master)
    for frame in frames:
        c.send(master, frame, dt=0.01)


READ_CLASS1 = bytes.fromhex("c0013c0206")


def normal_session(c: Conversation) -> None:
    craft.dnp3_request(c, READ_CLASS1, bytes.fromhex("c0810000"))
    craft.dnp3_request(c, bytes.fromhex("c10d"), bytes.fromhex("c1818000"))


def response_without_iin(c: Conversation) -> None:
    craft.dnp3_request(c, READ_CLASS1, bytes.fromhex("c081"))


def secure_authentication(c: Conversation) -> None:
    """SAv5 challenge and reply (Wireshark 4.0 shows no IIN for the 0x83)."""
    craft.dnp3_secure_authentication_session(c, fail=False)
    craft.dnp3_secure_authentication_session(c, fail=True)


def authentication_response_without_iin(c: Conversation) -> None:
    craft.dnp3_request(c, READ_CLASS1, bytes.fromhex("c083"))


def bad_data_crc_then_retry(c: Conversation) -> None:
    c.send(True, craft.dnp3_bad_data_crc(craft.dnp3_frame(READ_CLASS1, 1, 10, True)))
    craft.dnp3_request(c, READ_CLASS1, bytes.fromhex("c0810000"))


def unknown_object(c: Conversation) -> None:
    craft.dnp3_request(c, bytes.fromhex("c001fe6306"), bytes.fromhex("c0810002"))


def points(n: int) -> Callable[[Conversation], None]:
    def build(c: Conversation) -> None:
        _fragment(c, READ_CLASS1)
        header = b"\xc0\x81\x00\x00\x01\x01\x01" + (0).to_bytes(2, "little")
        body = (n - 1).to_bytes(2, "little") + b"\x55" * ((n + 7) // 8)  # g1v1, packed bits
        _fragment(c, header + body, master=False)

    build.__name__ = f"points_{n}"
    return build


def objects(n: int) -> Callable[[Conversation], None]:
    def build(c: Conversation) -> None:
        _fragment(c, b"\xc0\x01" + b"\x3c\x01\x06" * n)  # n x class 0, no range

    build.__name__ = f"objects_{n}"
    return build


def octet_strings(n: int) -> Callable[[Conversation], None]:
    """A WRITE of n 255-byte octet strings (g110v255, index prefixes): 63 of them make a
    fragment of 16133 bytes, more than 63 x 255."""

    def build(c: Conversation) -> None:
        body = b"".join(bytes([i]) + b"A" * 255 for i in range(n))
        _fragment(c, b"\xc0\x02\x6e\xff\x17" + bytes([n]) + body)

    build.__name__ = f"octet_strings_{n}"
    return build


def truncated_object_header(c: Conversation) -> None:
    craft.dnp3_request(c, bytes.fromhex("c0013c0200"), bytes.fromhex("c0810000"))  # no range


def complete_object_header(c: Conversation) -> None:
    craft.dnp3_request(c, bytes.fromhex("c0013c02000000"), bytes.fromhex("c0810000"))


# The native link checker's events (sentinel/decode/dnp3_link.py): tshark does not dissect
# these frames, the alert is on the event alone (no DNP3 message in its evidence).
def bad_link_crc(c: Conversation) -> None:
    c.send(True, craft.dnp3_bad_header_crc(craft.dnp3_frame(READ_CLASS1, 1, 10, True)))
    craft.dnp3_request(c, READ_CLASS1, bytes.fromhex("c0810000"))  # the retry, answered


def link_length_3(c: Conversation) -> None:
    c.send(True, craft.dnp3_link_header(3, 0xC4, 1, 10))
    craft.dnp3_request(c, READ_CLASS1, bytes.fromhex("c0810000"))


def link_status_request(c: Conversation) -> None:
    """Link length 5, the smallest there is: a REQUEST_LINK_STATUS (9) and its LINK_STATUS."""
    c.send(True, craft.dnp3_link_header(5, 0xC9, 1, 10))
    c.send(False, craft.dnp3_link_header(5, 0x0B, 10, 1))
    normal_session(c)


def unanswered_reads(n: int) -> Callable[[Conversation], None]:
    def build(c: Conversation) -> None:
        craft.dnp3_unanswered_reads(c, n)

    build.__name__ = f"unanswered_reads_{n}"
    return build


LINK_CHECKER_CASES = {"bad_link_crc", "link_length_3", "unanswered_reads_33"}

CASES: list[tuple[str, Callable[[Conversation], None], dict[str, int]]] = [
    ("2270000", unanswered_reads(33), {"2270000": 1}),
    ("2270000", unanswered_reads(32), {}),
    ("2270001", link_length_3, {"2270001": 1}),
    ("2270001", link_status_request, {}),
    ("2270002", bad_link_crc, {"2270002": 1}),
    ("2270002", normal_session, {}),
    ("2270001", response_without_iin, {"2270001": 1}),
    ("2270001", normal_session, {}),
    ("2270001", authentication_response_without_iin, {"2270001": 1}),
    ("2270001", secure_authentication, {}),
    ("2270003", bad_data_crc_then_retry, {"2270003": 1}),
    ("2270003", normal_session, {}),
    ("2270004", unknown_object, {"2270004": 1}),
    ("2270004", normal_session, {}),
    ("2270005", points(16385), {"2270005": 1}),
    ("2270005", points(16384), {}),
    ("2270006", objects(2049), {"2270006": 1}),
    ("2270006", objects(2048), {}),
    ("2270007", octet_strings(63), {"2270007": 1}),
    ("2270007", octet_strings(62), {}),
    ("2270101", truncated_object_header, {"2270101": 1}),
    ("2270101", complete_object_header, {}),
]


def _alerts(result) -> Counter[str]:
    alerts: Counter[str] = Counter()
    for f in result.findings:
        alerts[f["rule"]["id"]] += f["sentinel"]["count"]
        if f["rule"]["id"] in DNP3_EVENT_SIDS:
            assert f["rule"]["ruleset"] == "dnp3-events.rules"
            assert f["network"]["protocol"] == "dnp3"
            assert f["threat"]["technique"]["id"][0].startswith("T08")
    return alerts


def _case_id(case: tuple) -> str:
    return f"{case[0]}-{'positive' if case[2] else 'negative'}-{case[1].__name__}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_shipped_dnp3_rule(case: tuple, tmp_path: Path, analyze) -> None:
    assert shutil.which("tshark"), "tshark is installed by .ci/run and the Makefile"
    _sid, build, expected = case
    c = craft.dnp3_conversation()
    build(c)
    c.close()
    pcap = write(tmp_path / "capture.pcap", c.packets)
    config = Config()
    result = analyze(pcap, config, [RuleDetector(config, include_default=True)])
    assert dict(_alerts(result)) == expected
    if expected:
        [finding] = [f for f in result.findings if f["rule"]["id"] == case[0]]
        evidence = finding["sentinel"]["evidence"]
        [event] = evidence["events"]
        name = event["name"]
        assert name.startswith("dnp3.")
        if build.__name__ in LINK_CHECKER_CASES:
            assert evidence["inspected"] == "event" and "dnp3" not in evidence
            assert result.stats["anomalies"] == {name: 1}
        else:
            assert evidence["dnp3"]["events"] == [name.removeprefix("dnp3.")]


def test_every_shipped_dnp3_rule_has_a_positive_and_a_negative_case() -> None:
    shipped = {str(r.sid) for r in load_ruleset(Config()).rules if r.app_proto == "dnp3"}
    assert shipped == DNP3_EVENT_SIDS
    assert {c[0] for c in CASES if c[2]} == {c[0] for c in CASES if not c[2]} == shipped


def test_real_capture_unknown_objects(analyze) -> None:
    """Zeek's dnp3.pcap: five READs of object 255/0 (frames 200-212)."""
    config = Config()
    result = analyze(ZEEK_DNP3 / "pcaps" / "dnp3.pcap", config, [RuleDetector(config)])
    alerts = _alerts(result)
    assert {sid: n for sid, n in alerts.items() if sid in DNP3_EVENT_SIDS} == {"2270004": 5}
    [f] = [f for f in result.findings if f["rule"]["id"] == "2270004"]
    assert f["sentinel"]["evidence"]["dnp3"]["objects"] == ["g255v0"]


@pytest.mark.parametrize(
    "name",
    ["dnp3_file_read", "dnp3_file_write", "dnp3_select_operate", "dnp3_link_only", "dnp3_en_spon"],
)
def test_real_captures_without_events(analyze, name: str) -> None:
    config = Config()
    result = analyze(ZEEK_DNP3 / "pcaps" / f"{name}.pcap", config, [RuleDetector(config)])
    assert not set(_alerts(result)) & DNP3_EVENT_SIDS
