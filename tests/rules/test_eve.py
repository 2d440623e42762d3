"""The EVE sink: one alert record per alert (not aggregated), one modbus record per
transaction, Suricata's field names and formats (spec section 5)."""

from __future__ import annotations

import json
import re
import struct
from datetime import datetime
from pathlib import Path

from sentinel.config import Config
from sentinel.detectors.suricata import RuleDetector
from sentinel.pipeline import Pipeline
from sentinel.rules.loader import load_ruleset
from sentinel.sinks.eve import EveSink, eve_bytes, flow_id
from tests.craft import Conversation, adu, write

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d{4}$")


def run(
    tmp_path: Path,
    conversation: Conversation,
    rules_text: str | None = None,
    include_default: bool = True,
) -> tuple[list[dict], list[dict]]:
    conversation.close()
    pcap = write(tmp_path / "c.pcap", conversation.packets)
    config = Config()
    paths: tuple[str, ...] = ()
    if rules_text is not None:
        f = tmp_path / "local.rules"
        f.write_text(rules_text)
        paths = (str(f),)
    eve = EveSink(tmp_path / "out")
    det = RuleDetector(config, load_ruleset(config, paths, include_default), eve=eve)
    Pipeline(config, tmp_path / "out", [det], [eve]).run(pcap)
    records = [json.loads(line) for line in (tmp_path / "out" / "eve.json").open()]
    findings = [json.loads(line) for line in (tmp_path / "out" / "findings.jsonl").open()]
    return records, findings


def test_alert_records_are_not_aggregated_but_findings_are(tmp_path: Path) -> None:
    c = Conversation()
    for tid in range(1, 4):
        c.exchange(adu(tid, 1, b"\x11"), adu(tid, 1, b"\x11\x03\x2a\xff\x00"))
    records, findings = run(tmp_path, c)
    alerts = [r for r in records if r["event_type"] == "alert"]
    assert [a["alert"]["signature_id"] for a in alerts] == [9100005] * 3
    assert [a["tx_id"] for a in alerts] == [0, 1, 2]
    assert len(findings) == 1 and findings[0]["sentinel"]["count"] == 3
    modbus = [r for r in records if r["event_type"] == "modbus"]
    assert [m["modbus"]["id"] for m in modbus] == [1, 2, 3]


def test_alert_record_fields(tmp_path: Path) -> None:
    c = Conversation(client="203.0.113.50", server="10.0.0.2")
    c.exchange(adu(7, 1, struct.pack(">BHH", 6, 9, 100)), adu(7, 1, struct.pack(">BHH", 6, 9, 100)))
    records, _ = run(tmp_path, c)
    alert = next(r for r in records if r["event_type"] == "alert")
    assert TS_RE.match(alert["timestamp"])
    parsed = datetime.strptime(alert["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert abs(parsed.timestamp() - float(c.packets[3].time)) < 1e-6
    uid_flow = alert["flow_id"]
    assert 0 < uid_flow < 2**51
    assert {k: alert[k] for k in ("event_type", "src_ip", "src_port", "dest_ip", "dest_port",
                                  "proto", "pcap_cnt", "tx_id", "app_proto", "direction")} == {
        "event_type": "alert", "src_ip": "203.0.113.50", "src_port": 40000,
        "dest_ip": "10.0.0.2", "dest_port": 502, "proto": "TCP", "pcap_cnt": 4, "tx_id": 0,
        "app_proto": "modbus", "direction": "to_server",
    }  # fmt: skip
    assert alert["alert"] == {
        "action": "allowed",
        "gid": 1,
        "signature_id": 9100013,
        "rev": 1,
        "signature": "SENTINEL MODBUS Unauthorized write request",
        "category": "Unauthorized ICS Command",
        "severity": 1,
        "metadata": {
            "mitre_technique_id": ["T0855"],
            "mitre_technique_name": ["Unauthorized_Command_Message"],
            "mitre_tactic_name": ["Impair_Process_Control"],
        },
    }
    # at alert time (the request), the transaction has no response yet
    assert alert["modbus"] == {
        "id": 1,
        "request": {
            "transaction_id": 7, "protocol_id": 0, "unit_id": 1, "function_raw": 6,
            "function_code": "WrSingleReg", "access_type": "WRITE | HOLDING | SINGLE | "
            "WRITE_SINGLE", "category": "PUBLIC_ASSIGNED", "error_flags": "NONE",
            "write": {"address": 9, "data": 100},
        },
    }  # fmt: skip
    tx = next(r for r in records if r["event_type"] == "modbus")
    assert tx["flow_id"] == uid_flow and tx["modbus"]["response"]["write"] == {
        "address": 9,
        "data": 100,
    }
    assert (tx["src_ip"], tx["dest_ip"]) == ("203.0.113.50", "10.0.0.2")


def test_to_client_alerts_use_the_packet_direction(tmp_path: Path) -> None:
    c = Conversation()
    for tid in range(1, 4):
        c.exchange(adu(tid, 1, b"\x07"), adu(tid, 1, b"\x87\x01"), dt=1.0)
    records, _ = run(tmp_path, c)
    [alert] = [r for r in records if r["event_type"] == "alert"]
    assert alert["alert"]["signature_id"] == 9100006
    assert (alert["src_ip"], alert["src_port"], alert["direction"]) == (
        "192.0.2.20",
        502,
        "to_client",
    )
    assert "tx_id" not in alert  # a payload rule: no transaction
    ex = next(r for r in records if r["event_type"] == "modbus")["modbus"]["response"]
    assert ex["exception"] == {"raw": 1, "code": "IllegalFunction"}
    assert ex["access_type"] == "NONE" and ex["function_raw"] == 0x87


def test_modbus_records_for_reads_and_errors(tmp_path: Path) -> None:
    c = Conversation()
    c.exchange(adu(1, 1, struct.pack(">BHH", 3, 8, 2)), adu(1, 1, b"\x03\x04\x00\x41\x00\x42"))
    c.exchange(adu(2, 1, struct.pack(">BHH", 5, 0, 0x1234)), adu(2, 1, b"\x85\x03"))
    c.send(True, adu(3, 1, struct.pack(">BHH", 1, 0, 10)))  # never answered
    records, _ = run(tmp_path, c, include_default=True)
    txs = [r["modbus"] for r in records if r["event_type"] == "modbus"]
    assert txs[0]["request"]["read"] == {"address": 8, "quantity": 2}
    assert txs[0]["request"]["access_type"] == "READ | HOLDING"
    assert txs[0]["response"]["read"] == {"data": "\x00A\x00B"}
    assert txs[1]["request"]["error_flags"] == "DATA_VALUE"
    assert txs[2] == {"id": 3, "request": {
        "transaction_id": 3, "protocol_id": 0, "unit_id": 1, "function_raw": 1,
        "function_code": "RdCoils", "access_type": "READ | COILS",
        "category": "PUBLIC_ASSIGNED", "error_flags": "NONE",
        "read": {"address": 0, "quantity": 10}}}  # fmt: skip


def test_eve_bytes_and_flow_id() -> None:
    assert eve_bytes(b"abc") == "abc"
    assert eve_bytes(b"a\xff") == "a\\xff"
    assert flow_id("C123") == flow_id("C123") != flow_id("C124")


def test_a_run_without_events_leaves_an_empty_eve_file(tmp_path: Path) -> None:
    EveSink(tmp_path / "a").close()
    assert (tmp_path / "a" / "eve.json").read_text() == ""
