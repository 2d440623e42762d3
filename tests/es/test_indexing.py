"""Captures through ``sentinel analyze --es`` into the real node: counts, contents, no doubles."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from sentinel.es.documents import DocumentBuilder
from sentinel.es.setup import setup
from sentinel.es.sink import ElasticsearchSink
from tests.es_support import DATA, Node, index_capture, run_sentinel

CAPTURES = [
    "modbus-and-non-modbus-p502",
    "fuzz-72",
    "modbus-eit",
    "4SICS-GeekLounge-151022-min",
    "modbusSmall",
]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _all(es: Elasticsearch, index: str) -> dict[str, dict[str, Any]]:
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    return {
        hit["_id"]: hit["_source"]
        for hit in helpers.scan(
            es, index=index, query={"query": {"match_all": {}}}, ignore_unavailable=True
        )
    }


def _analyze(node: Node, tmp: Path, capture: str, spool: Path) -> Path:
    out = tmp / capture
    proc = run_sentinel(
        "analyze",
        "-q",
        "--out",
        str(out),
        "--es",
        node.info.url,
        "--es-spool",
        str(spool),
        str(DATA / f"{capture}.pcap"),
        env=node.env(),
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_capture_indexed_equals_jsonl_and_resending_does_not_duplicate(
    es_node: Node, clean_es: Elasticsearch, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    outs = [_analyze(es_node, tmp_path, c, spool) for c in CAPTURES]
    findings = [d for o in outs for d in _jsonl(o / "findings.jsonl")]
    modbus = [(o, r) for o in outs for r in _jsonl(o / "modbus.jsonl")]
    flows = [r for o in outs for r in _jsonl(o / "flows.jsonl")]
    assert len(findings) >= 10 and len(modbus) >= 40  # the captures give known findings

    es_findings = _all(clean_es, "sentinel-findings-*")
    assert len(es_findings) == len(findings)
    assert es_findings == {d["event"]["id"]: d for d in findings}  # the very same documents

    es_modbus = _all(clean_es, "sentinel-modbus-*")
    assert len(es_modbus) == len(modbus)
    expected: dict[str, Any] = {}
    for out in outs:  # one builder per run, as the sink has
        builder = DocumentBuilder("sentinel")
        for rec in _jsonl(out / "modbus.jsonl"):
            _, doc_id, doc = builder.modbus(rec)
            expected[doc_id] = doc
    assert es_modbus == expected
    # and the other way round: every modbus.jsonl record is found with its own values
    by_frame = {(d["sentinel"]["flow_uid"], d["sentinel"]["frame"]) for d in es_modbus.values()}
    assert {(r["uid"], r["frame"]) for _, r in modbus} == by_frame

    es_flows = _all(clean_es, "sentinel-flows-*")
    assert set(es_flows) == {r["uid"] for r in flows}
    assets = _all(clean_es, "sentinel-assets")
    assert {a["host"]["ip"][0] for a in assets.values()} == {
        r["ip"] for o in outs for r in _jsonl(o / "assets.jsonl")
    }

    # re-running the same captures sends everything again: nothing is duplicated
    for c in CAPTURES[:2]:
        _analyze(es_node, tmp_path / "again", c, spool)
    assert len(_all(clean_es, "sentinel-findings-*")) == len(findings)
    assert len(_all(clean_es, "sentinel-modbus-*")) == len(modbus)
    assert len(_all(clean_es, "sentinel-flows-*")) == len(flows)


def test_templates_applied_to_the_indices(
    es_node: Node, clean_es: Elasticsearch, tmp_path: Path
) -> None:
    index_capture(es_node, "modbus-eit", tmp_path / "out", tmp_path / "spool")
    expect = {
        "sentinel-findings-*": {},
        "sentinel-modbus-*": {
            "@timestamp": "date",
            "source.ip": "ip",
            "destination.ip": "ip",
            "source.port": "long",
            "related.ip": "ip",
            "event.kind": "keyword",
            "event.duration": "long",
            "sentinel.modbus.fc": "long",
            "sentinel.modbus.func": "keyword",
            "sentinel.modbus.objects": "flattened",
            "sentinel.modbus.is_orig": "boolean",
            "message": "text",
            "labels.site": "keyword",
        },
        "sentinel-flows-*": {
            "source.bytes": "long",
            "network.community_id": "keyword",
            "event.end": "date",
        },
        "sentinel-assets": {
            "host.ip": "ip",
            "sentinel.asset.peers": "ip",
            "sentinel.asset.first_seen": "date",
            "sentinel.asset.identity": "flattened",
        },
    }
    for pattern, fields in expect.items():
        if not fields:
            continue
        got = clean_es.indices.get_field_mapping(index=pattern, fields=list(fields))
        for _index, body in got.items():
            types = {
                f: next(iter(m["mapping"].values()))["type"] for f, m in body["mappings"].items()
            }
            assert types == fields, pattern


def test_findings_carry_the_ecs_alert_shape(
    es_node: Node, clean_es: Elasticsearch, tmp_path: Path
) -> None:
    out = index_capture(es_node, "modbus-and-non-modbus-p502", tmp_path / "out", tmp_path / "spool")
    expected = [
        d
        for d in _jsonl(out / "findings.jsonl")
        if "T0885" in d["threat"]["technique"]["id"] and d["destination"]["port"] == 502
    ]
    assert len(expected) >= 6  # TLS on the Modbus port: six non-Modbus-traffic findings
    clean_es.indices.refresh(index="sentinel-findings-*")
    resp = clean_es.search(
        index="sentinel-findings-*",
        query={
            "bool": {
                "filter": [
                    {"term": {"event.kind": "alert"}},
                    {"term": {"threat.technique.id": "T0885"}},
                    {"term": {"destination.port": 502}},
                    {"range": {"@timestamp": {"gte": "2000-01-01"}}},
                ]
            }
        },
        aggs={"rules": {"terms": {"field": "rule.id"}}},
    )
    assert resp["hits"]["total"]["value"] == len(expected)
    rules = {b["key"]: b["doc_count"] for b in resp["aggregations"]["rules"]["buckets"]}
    assert rules == {r: sum(d["rule"]["id"] == r for d in expected) for r in rules}


def test_refused_document_is_reported_not_swallowed(
    es_node: Node, clean_es: Elasticsearch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup(clean_es)
    good = json.loads((Path(__file__).parent / "data" / "finding.json").read_text())
    bad = json.loads(json.dumps(good))
    bad["event"]["id"] = "bad-finding"
    bad["source"]["ip"] = "not-an-address"  # a mapping conflict: source.ip is an ip field
    sink = ElasticsearchSink(es_node.settings(), spool_dir=tmp_path / "spool")
    with caplog.at_level(logging.ERROR, logger="sentinel.es"):
        sink.finding(good)
        sink.finding(bad)
        sink.close()
    assert sink.stats["sent"] == 1 and sink.stats["rejected"] == 1
    message = caplog.text
    assert "bad-finding" in message
    assert "failed to parse field [source.ip] of type [ip]" in message
    kept = [
        json.loads(line)
        for line in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()
    ]
    assert kept[0]["id"] == "bad-finding" and kept[0]["source"] == bad  # kept to send again
    proc = run_sentinel("es", "status", "--spool", str(tmp_path / "spool"), env=es_node.env())
    assert proc.returncode == 0, proc.stderr
    assert "1 documents" in proc.stdout and "rejected.jsonl" in proc.stdout
    assert "source.ip" in proc.stdout  # the last error
