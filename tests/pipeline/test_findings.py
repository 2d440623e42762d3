"""Findings: deterministic ids, ECS shape, aggregation offline and live."""

from __future__ import annotations

from sentinel.events import ConnId
from sentinel.findings import Aggregator, Finding, Technique

T = Technique("T0846", "Remote System Discovery", "Discovery")
C = ConnId("192.0.2.1", 40000, "192.0.2.2", 502)


def finding(ts: float, rule: str = "1") -> Finding:
    return Finding(ts=ts, rule_id=rule, rule_name="r", ruleset="s", severity="high", technique=T,
                   message="m", detector="d", conn=C, uid="Cx", frame=int(ts))


def test_offline_emits_once_per_window_with_the_count():
    out: list[Finding] = []
    agg = Aggregator(out.append, window=60)
    for ts in (0, 10, 20):
        agg.add(finding(ts))
    agg.add(finding(100))  # a new window
    agg.flush()
    assert [(f.ts, f.count, f.last_ts) for f in out] == [(0, 3, 20), (100, 1, None)]


def test_live_emits_the_first_occurrence_at_once_then_the_count():
    out: list[Finding] = []
    agg = Aggregator(out.append, window=60, immediate=True)
    agg.add(finding(0))
    assert [(f.ts, f.count) for f in out] == [(0, 1)]
    agg.add(finding(5))
    agg.expire(61)
    assert [(f.ts, f.count) for f in out] == [(0, 1), (0, 2)]
    assert out[0].id == out[1].id  # an update of the same finding
    agg.add(finding(70))
    agg.flush()
    assert [(f.ts, f.count) for f in out][-1] == (70, 1) and len(out) == 3


def test_ids_are_deterministic_and_ecs_fields_present():
    doc = finding(1.5).to_ecs("sensor-1", {"site": "a", "sector": "energy"})
    assert doc["event"]["id"] == finding(1.5).to_ecs("x")["event"]["id"]
    assert doc["event"]["id"] != finding(2.5).to_ecs("x")["event"]["id"]
    assert doc["event"]["kind"] == "alert" and doc["event"]["severity"] == 73
    assert doc["threat"]["framework"] == "MITRE ATT&CK for ICS"
    assert doc["threat"]["technique"]["id"] == ["T0846"]
    assert doc["labels"] == {"site": "a", "sector": "energy"}
    assert doc["source"] == {"ip": "192.0.2.1", "port": 40000}
    assert doc["@timestamp"] == "1970-01-01T00:00:01.500000Z"
