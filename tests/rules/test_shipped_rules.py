"""Every shipped rule against a positive and a negative capture crafted with scapy, run
through the real pipeline; each test asserts the exact findings (rule id -> alert count).

The captures are real TCP conversations (handshake, sequence numbers, FIN) written with
scapy's wrpcap into tmp_path. Servers in 192.0.2.0/24 are outside the default $HOME_NET
(RFC 1918), so the "unauthorized" rules stay quiet unless a test uses a 10.x server.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sentinel.config import Config
from sentinel.detectors.suricata import RuleDetector
from sentinel.rules.loader import load_ruleset, shipped_dir
from tests.craft import Conversation, adu, write


def req_read(tid: int, fc: int = 3, address: int = 0, qty: int = 2) -> bytes:
    return adu(tid, 1, struct.pack(">BHH", fc, address, qty))


def resp_read(tid: int, values: tuple[int, ...] = (1, 2), fc: int = 3) -> bytes:
    return adu(tid, 1, struct.pack(f">BB{len(values)}H", fc, 2 * len(values), *values))


def exception(tid: int, fc: int, code: int) -> bytes:
    return adu(tid, 1, bytes([fc | 0x80, code]))


def diag(tid: int, sub: int, data: int = 0) -> bytes:
    return adu(tid, 1, struct.pack(">BHH", 8, sub, data))


def write_single(tid: int, address: int, value: int, fc: int = 6) -> bytes:
    return adu(tid, 1, struct.pack(">BHH", fc, address, value))


def conv(**kw: object) -> Conversation:
    return Conversation(**kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- captures
def normal_polling(c: Conversation) -> None:
    for tid in range(1, 4):
        c.exchange(req_read(tid), resp_read(tid))


def force_listen_only(c: Conversation) -> None:
    c.exchange(diag(1, 4), None)  # a server in listen-only mode does not answer


def return_query_data(c: Conversation) -> None:
    c.exchange(diag(1, 0, 0x1234), diag(1, 0, 0x1234))


def restart_comms(c: Conversation) -> None:
    c.exchange(diag(1, 1), diag(1, 1))


def diag_register(c: Conversation) -> None:
    c.exchange(diag(1, 2), diag(1, 2, 0x0001))


def clear_counters(c: Conversation) -> None:
    c.exchange(diag(1, 10), diag(1, 10))


def bus_message_count(c: Conversation) -> None:
    c.exchange(diag(1, 11), diag(1, 11, 42))


def device_id(c: Conversation) -> None:
    obj = b"\x00\x07Vendor1"
    c.exchange(adu(1, 1, b"\x2b\x0e\x01\x00"), adu(1, 1, b"\x2b\x0e\x01\x01\x00\x00\x01" + obj))


def report_server_id(c: Conversation) -> None:
    c.exchange(adu(1, 1, b"\x11"), adu(1, 1, b"\x11\x05\x2a\xffPLC"))


def comm_event_counter(c: Conversation) -> None:
    c.exchange(adu(1, 1, b"\x0b"), adu(1, 1, b"\x0b\x00\x00\x00\x05"))


def exceptions(code: int, n: int, fc: int = 3) -> Callable[[Conversation], None]:
    def build(c: Conversation) -> None:
        for tid in range(1, n + 1):
            request = adu(tid, 1, bytes([fc])) if fc == 7 else req_read(tid, fc, 1000 + tid)
            c.exchange(request, exception(tid, fc, code), dt=1.0)

    return build


def oversized_adu(c: Conversation) -> None:
    c.exchange(req_read(1), resp_read(1))
    junk = struct.pack(">HHHB", 2, 0, 395, 1) + b"\x10" + bytes(393)  # MBAP length 395
    c.send(True, junk)


def largest_legal_write(c: Conversation) -> None:
    values = tuple(range(123))
    pdu = struct.pack(f">BHHB{len(values)}H", 16, 0, len(values), 2 * len(values), *values)
    assert len(adu(1, 1, pdu)) == 259
    c.exchange(adu(1, 1, pdu), adu(1, 1, struct.pack(">BHH", 16, 0, len(values))))


def tls_on_502(c: Conversation) -> None:
    c.send(True, bytes.fromhex("160301020001") + bytes(60))


def invalid_protocol_id(c: Conversation) -> None:
    c.exchange(req_read(1), resp_read(1))
    c.send(True, struct.pack(">HHHB", 2, 1, 6, 1) + b"\x03\x00\x00\x00\x01")


def unsolicited_response(c: Conversation) -> None:
    c.exchange(req_read(1), resp_read(1))
    c.send(False, resp_read(9))


def invalid_length_pdu(c: Conversation) -> None:
    c.exchange(adu(1, 1, b"\x03\x00\x00\x00\x01\xff"), exception(1, 3, 3))


def invalid_function_codes(c: Conversation) -> None:
    c.exchange(adu(1, 1, b"\x83\x00\x00\x00\x01"), None)  # exception bit in a request
    c.exchange(adu(2, 1, b"\x00\x00\x00"), None)  # function code 0


def bad_coil_value(c: Conversation) -> None:
    c.exchange(write_single(1, 0, 0x1234, fc=5), exception(1, 5, 3))


def good_coil_value(c: Conversation) -> None:
    c.exchange(write_single(1, 0, 0xFF00, fc=5), write_single(1, 0, 0xFF00, fc=5))


def bad_exception_code(c: Conversation) -> None:
    c.exchange(req_read(1), exception(1, 3, 9))


def mismatched_echo(c: Conversation) -> None:
    c.exchange(write_single(1, 4, 7), write_single(1, 4, 8))


def matching_echo(c: Conversation) -> None:
    c.exchange(write_single(1, 4, 7), write_single(1, 4, 7))


def unanswered(n: int) -> Callable[[Conversation], None]:
    def build(c: Conversation) -> None:
        for tid in range(1, n + 1):
            c.send(True, req_read(tid))

    return build


def truncated_pdu(c: Conversation) -> None:
    c.exchange(adu(1, 1, b"\x06\x00\x01"), exception(1, 6, 3))


def user_function(c: Conversation) -> None:
    c.exchange(adu(1, 1, b"\x41\x01\x02"), exception(1, 0x41, 1))


def reserved_diagnostic(c: Conversation) -> None:
    c.exchange(diag(1, 5), exception(1, 8, 1))


def read_holding(c: Conversation) -> None:
    c.exchange(req_read(1), resp_read(1))


def write_register(c: Conversation) -> None:
    c.exchange(write_single(1, 9, 100), write_single(1, 9, 100))


OUTSIDER = {"client": "203.0.113.50", "server": "10.0.0.2"}
INSIDER = {"client": "10.0.0.1", "server": "10.0.0.2"}

# (rule, capture builder, conversation options, config, expected {sid: alerts})
CASES = [
    ("9100001", force_listen_only, {}, {}, {"9100001": 1}),
    ("9100001", return_query_data, {}, {}, {}),
    ("9100002", restart_comms, {}, {}, {"9100002": 1}),
    ("9100002", diag_register, {}, {}, {}),
    ("9100003", clear_counters, {}, {}, {"9100003": 1}),
    ("9100003", bus_message_count, {}, {}, {}),
    ("9100004", device_id, {}, {}, {"9100004": 1}),
    ("9100004", normal_polling, {}, {}, {}),
    ("9100005", report_server_id, {}, {}, {"9100005": 1}),
    ("9100005", comm_event_counter, {}, {}, {}),
    ("9100006", exceptions(1, 3, fc=7), {}, {}, {"9100006": 1}),
    ("9100006", exceptions(1, 2, fc=7), {}, {}, {}),
    ("9100007", oversized_adu, {}, {}, {"9100007": 1, "2250003": 1}),
    ("9100007", largest_legal_write, {}, {}, {}),
    ("9100008", tls_on_502, {}, {}, {"9100008": 1}),
    ("9100008", normal_polling, {}, {}, {}),
    ("9100009", exceptions(6, 3), {}, {}, {"9100009": 1}),
    ("9100009", exceptions(6, 2), {}, {}, {}),
    ("9100010", exceptions(5, 3), {}, {}, {"9100010": 1}),
    ("9100010", exceptions(5, 2), {}, {}, {}),
    ("9100011", exceptions(2, 5), {}, {}, {"9100011": 1}),
    ("9100011", exceptions(2, 4), {}, {}, {}),
    ("9100012", read_holding, OUTSIDER, {}, {"9100012": 1}),
    ("9100012", read_holding, INSIDER, {}, {}),
    ("9100013", write_register, OUTSIDER, {}, {"9100013": 1}),
    ("9100013", write_register, INSIDER, {}, {}),
    ("2250001", invalid_protocol_id, {}, {}, {"2250001": 1}),
    ("2250001", normal_polling, {}, {}, {}),
    ("2250002", unsolicited_response, {}, {}, {"2250002": 1}),
    ("2250002", normal_polling, {}, {}, {}),
    ("2250003", invalid_length_pdu, {}, {}, {"2250003": 1}),
    ("2250003", normal_polling, {}, {}, {}),
    ("2250005", invalid_function_codes, {}, {}, {"2250005": 2}),
    ("2250005", normal_polling, {}, {}, {}),
    ("2250006", bad_coil_value, {}, {}, {"2250006": 1}),
    ("2250006", good_coil_value, {}, {}, {}),
    ("2250007", bad_exception_code, {}, {}, {"2250007": 1}),
    ("2250007", exceptions(2, 1), {}, {}, {}),
    ("2250008", mismatched_echo, {}, {}, {"2250008": 1}),
    ("2250008", matching_echo, {}, {}, {}),
    ("2250009", unanswered(3), {}, {"decode": {"max_pending_requests": 2}}, {"2250009": 1}),
    ("2250009", unanswered(2), {}, {"decode": {"max_pending_requests": 2}}, {}),
    ("2250101", truncated_pdu, {}, {}, {"2250101": 1}),
    ("2250101", write_register, {}, {}, {}),
    ("2250102", user_function, {}, {}, {"2250102": 1}),
    ("2250102", normal_polling, {}, {}, {}),
    ("2250103", reserved_diagnostic, {}, {}, {"2250103": 1}),
    ("2250103", return_query_data, {}, {}, {}),
]


def _case_id(case: tuple) -> str:
    return f"{case[0]}-{'positive' if case[4] else 'negative'}-{case[1].__name__}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_shipped_rule(case: tuple, tmp_path: Path, analyze) -> None:
    _sid, build, conv_options, config_data, expected = case
    c = conv(**conv_options)
    build(c)
    c.close()
    pcap = write(tmp_path / "capture.pcap", c.packets)
    config = Config.model_validate(config_data)
    result = analyze(pcap, config, [RuleDetector(config, include_default=True)])
    alerts: Counter[str] = Counter()
    for f in result.findings:
        alerts[f["rule"]["id"]] += f["sentinel"]["count"]
        assert f["sentinel"]["detector"] == "rules"
        assert f["rule"]["ruleset"] in ("modbus-events.rules", "modbus-catalogue.rules")
        assert f["threat"]["technique"]["id"][0].startswith("T08")
    assert dict(alerts) == expected


def test_every_shipped_rule_has_a_positive_and_a_negative_case() -> None:
    # The DNP3 event rules have theirs in test_dnp3_shipped.py (captures decoded by tshark).
    shipped = {str(r.sid) for r in load_ruleset(Config()).rules if r.app_proto != "dnp3"}
    positive = {c[0] for c in CASES if c[0] in c[4]}
    negative = {c[0] for c in CASES if not c[4]}
    assert shipped == positive == negative


def test_shipped_rule_files_load_without_any_problem() -> None:
    rs = load_ruleset(Config())
    assert rs.problems == []
    assert sorted(Path(f).name for f in rs.files) == [
        "dnp3-events.rules",
        "modbus-catalogue.rules",
        "modbus-events.rules",
    ]
    assert (shipped_dir() / "classification.config").is_file()
    for r in rs.rules:
        sid = r.sid
        assert (
            2250001 <= sid <= 2250199 or 2270000 <= sid <= 2270199 or 9100001 <= sid <= 9100999
        ), sid
        assert r.technique_source == "metadata", sid


def test_a_finding_carries_rule_technique_and_evidence(tmp_path: Path, analyze) -> None:
    c = conv(**OUTSIDER)
    write_register(c)
    c.close()
    pcap = write(tmp_path / "w.pcap", c.packets)
    config = Config()
    [f] = analyze(pcap, config, [RuleDetector(config, include_default=True)]).findings
    assert f["rule"] == {
        "id": "9100013",
        "name": "SENTINEL MODBUS Unauthorized write request",
        "ruleset": "modbus-catalogue.rules",
        "reference": "https://attack.mitre.org/techniques/T0855/",
    }
    assert f["event"]["severity"] == 73  # priority 1 -> high
    assert f["threat"]["technique"] == {
        "id": ["T0855"],
        "name": ["Unauthorized Command Message"],
        "reference": ["https://attack.mitre.org/techniques/T0855/"],
    }
    assert f["threat"]["tactic"] == {"name": ["Impair Process Control"]}
    ev = f["sentinel"]["evidence"]
    assert ev["rule"]["sid"] == 9100013 and ev["rule"]["classtype"] == "ics-unauthorized-command"
    assert ev["direction"] == "to_server" and ev["inspected"] == "transaction"
    assert ev["modbus"] == {
        "tid": 1,
        "unit": 1,
        "fc": 6,
        "func": "WRITE_SINGLE_REGISTER",
        "pdu_type": "REQ",
        "address": 9,
        "values": [100],
    }
    assert f["source"] == {"ip": "203.0.113.50", "port": 40000}
    assert f["network"] == {"transport": "tcp", "protocol": "modbus"}


def test_regression_reused_transaction_ids_are_not_a_value_mismatch(analyze) -> None:
    """modbus_test.pcap: a client sends three pipelined writes with the same transaction id
    (frames 68-69); each echo must pair with its own request (Suricata pairs a response with
    the first open request), so no "value mismatch" is raised."""
    from tests.conftest import ICS_SAMPLES

    config = Config()
    result = analyze(
        ICS_SAMPLES / "modbus_test.pcap", config, [RuleDetector(config, include_default=True)]
    )
    alerts = Counter()
    for f in result.findings:
        alerts[f["rule"]["id"]] += f["sentinel"]["count"]
    assert dict(alerts) == {"2250002": 2}  # the decoder's own pairing: unsolicited responses
