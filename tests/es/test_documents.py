"""ECS rendering of records, deterministic ids, and documents against the index templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sentinel.config import Config
from sentinel.es.documents import DocumentBuilder, asset_update, community_id
from sentinel.es.setup import field_types, load_bundle, merged_mappings
from sentinel.pipeline import Pipeline

DATA = Path(__file__).parent / "data"
CAPTURES = sorted(DATA.glob("*.pcap"))
# What each field type accepts from JSON (numbers in a float field, ints in a date are fine).
ACCEPTS = {
    "keyword": (str,),
    "text": (str,),
    "ip": (str,),
    "date": (str,),
    "long": (int,),
    "float": (int, float),
    "boolean": (bool,),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for capture in CAPTURES:
        d = tmp_path_factory.mktemp(capture.stem)
        Pipeline(Config(), d).run(capture)
        out[capture.stem] = d
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _leaves(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(doc, dict):
        out = []
        for k, v in doc.items():
            out += _leaves(v, f"{prefix}{k}.")
        return out
    if isinstance(doc, list):
        return [leaf for item in doc for leaf in _leaves(item, prefix)]
    return [(prefix[:-1], doc)]


def _check_mapped(doc: dict[str, Any], types: dict[str, str], problems: set[str]) -> None:
    for path, value in _leaves(doc):
        if value is None:
            continue
        parts = path.split(".")
        flat = next(
            (
                ".".join(parts[:i])
                for i in range(1, len(parts))
                if types.get(".".join(parts[:i])) == "flattened"
            ),
            None,
        )
        if flat or (parts[0] == "labels" and isinstance(value, str)):
            continue  # inside a flattened field / the labels object (dynamic keyword)
        kind = types.get(path)
        if kind is None:
            problems.add(f"{path} is not mapped")
        elif kind in ACCEPTS and not (
            isinstance(value, ACCEPTS[kind]) and not (kind == "long" and isinstance(value, bool))
        ):
            problems.add(f"{path}={value!r} does not fit {kind}")


def test_every_field_written_is_mapped_with_a_fitting_type(runs: dict[str, Path]) -> None:
    bundle = load_bundle()
    types = {
        k: field_types(merged_mappings(bundle, f"sentinel-{k}"))
        for k in ("findings", "modbus", "flows", "assets")
    }
    builder = DocumentBuilder("sensor-1", lambda ip: {"site": "plant", "sector": "energy"})
    problems: set[str] = set()
    seen = {"findings": 0, "modbus": 0, "flows": 0, "assets": 0}
    for out in runs.values():
        for rec in _jsonl(out / "findings.jsonl"):
            _check_mapped(builder.finding(rec)[2], types["findings"], problems)
            seen["findings"] += 1
        for rec in _jsonl(out / "modbus.jsonl"):
            _check_mapped(builder.modbus(rec)[2], types["modbus"], problems)
            seen["modbus"] += 1
        for rec in _jsonl(out / "flows.jsonl"):
            _check_mapped(builder.flow(rec)[2], types["flows"], problems)
            seen["flows"] += 1
        for rec in _jsonl(out / "assets.jsonl"):
            _check_mapped(builder.asset(rec)[2], types["assets"], problems)
            seen["assets"] += 1
    assert all(seen.values()), seen
    assert not problems, sorted(problems)


def test_sentinel_fields_are_documented() -> None:
    """Every sentinel.* field of the templates has a row in docs/elasticsearch.md."""
    doc = (Path(__file__).parents[2] / "docs" / "elasticsearch.md").read_text()
    bundle = load_bundle()
    missing = set()
    for name in bundle.index_templates:
        for path in field_types(merged_mappings(bundle, name)):
            if path.startswith("sentinel.") and f"`{path}`" not in doc:
                missing.add(path)
    assert not missing, sorted(missing)


def test_templates_are_versioned_and_consistent() -> None:
    bundle = load_bundle()
    for name, body in {**bundle.components, **bundle.index_templates}.items():
        assert isinstance(body.get("version"), int), name
        assert body["_meta"]["managed_by"] == "sentinel", name
    for name, body in bundle.index_templates.items():
        for comp in body["composed_of"]:
            assert comp in bundle.components, (name, comp)
        optional = set(body.get("ignore_missing_component_templates", []))
        assert optional <= {"sentinel-findings@ilm", "sentinel-events@ilm"}
    for name, policy in bundle.policies.items():
        assert policy["_meta"]["version"] >= 1
        assert set(policy["phases"]) >= {"hot", "delete"}, name
        # no write block: a finding that waited in a spool may still arrive late
        for phase in policy["phases"].values():
            assert not {"readonly", "forcemerge", "shrink"} & set(phase["actions"]), name


def test_modbus_document() -> None:
    builder = DocumentBuilder(
        "sensor-1", lambda ip: {"site": "plant", "sector": "energy"} if ip == "10.0.0.2" else None
    )
    rec = {
        "ts": 1445507400.25,
        "uid": "Cabc",
        "orig_h": "10.0.0.1",
        "orig_p": 50000,
        "resp_h": "10.0.0.2",
        "resp_p": 502,
        "is_orig": False,
        "tid": 7,
        "pid": 0,
        "unit": 1,
        "fc": 1,
        "func": "READ_COILS",
        "pdu_type": "RESP",
        "exception": None,
        "len": 4,
        "frame": 12,
        "values": [True, False],
        "latency": 0.0015,
    }
    index, doc_id, doc = builder.modbus(rec)
    assert index == "sentinel-modbus-2015.10.22"
    assert doc_id == "Cabc.12.0"
    assert builder.modbus(rec)[1] == "Cabc.12.1"  # a second message in the same frame
    assert doc["@timestamp"] == "2015-10-22T09:50:00.250000Z"
    assert doc["source"] == {"ip": "10.0.0.1", "port": 50000}
    assert doc["destination"] == {"ip": "10.0.0.2", "port": 502}
    assert doc["event"]["duration"] == 1_500_000
    assert doc["event"]["kind"] == "event" and doc["event"]["dataset"] == "sentinel.modbus"
    assert doc["labels"] == {"site": "plant", "sector": "energy"}
    mb = doc["sentinel"]["modbus"]
    assert mb["coils"] == [True, False] and "values" not in mb  # booleans apart from numbers
    assert mb["fc"] == 1 and mb["latency"] == 0.0015 and mb["exception"] is None
    rec2 = {**rec, "fc": 3, "func": "READ_HOLDING_REGISTERS", "values": [1, 2], "frame": 13}
    assert builder.modbus(rec2)[2]["sentinel"]["modbus"]["values"] == [1, 2]
    assert DocumentBuilder().modbus(rec)[1] == "Cabc.12.0"  # deterministic across runs


def test_flow_and_asset_documents() -> None:
    builder = DocumentBuilder("sensor-1")
    flow = {
        "ts": 1.5,
        "uid": "Cflow",
        "orig_h": "10.0.0.1",
        "orig_p": 40000,
        "resp_h": "10.0.0.2",
        "resp_p": 502,
        "proto": "tcp",
        "service": "modbus",
        "last_ts": 3.0,
        "duration": 1.5,
        "orig_pkts": 3,
        "orig_bytes": 12,
        "orig_ip_bytes": 132,
        "resp_pkts": 2,
        "resp_bytes": 8,
        "resp_ip_bytes": 88,
        "conn_state": "SF",
        "history": "ShADadFf",
        "missed_bytes": 0,
    }
    index, doc_id, doc = builder.flow(flow)
    assert (index, doc_id) == ("sentinel-flows-1970.01.01", "Cflow")
    assert doc["source"]["bytes"] == 132 and doc["destination"]["packets"] == 2
    assert doc["network"] | {"community_id": None} == {
        "transport": "tcp",
        "protocol": "modbus",
        "bytes": 220,
        "packets": 5,
        "community_id": None,
    }
    assert doc["event"]["duration"] == 1_500_000_000
    asset = {
        "ip": "10.0.0.2",
        "first_seen": 1.0,
        "last_seen": 9.0,
        "roles": ["modbus_server"],
        "unit_ids": [1],
        "function_codes": [1, 3],
        "peers": ["10.0.0.1"],
        "identity": None,
        "server_id": None,
        "declared": False,
    }
    index, doc_id, doc = builder.asset(asset)
    assert (index, doc_id) == ("sentinel-assets", "10.0.0.2")
    assert doc["host"] == {"ip": ["10.0.0.2"], "type": "modbus_server"}
    body = asset_update(doc)
    assert "first_seen" not in body["doc"]["sentinel"]["asset"]
    assert body["upsert"]["sentinel"]["asset"]["first_seen"] == "1970-01-01T00:00:01.000000Z"


def test_community_id_matches_the_spec() -> None:
    # test vector of the Community ID specification (tcp, seed 0)
    assert (
        community_id("128.232.110.120", 34855, "66.35.250.204", 80, "tcp")
        == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    )
    assert community_id("66.35.250.204", 80, "128.232.110.120", 34855, "tcp") == (
        "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    )
    assert community_id("not-an-ip", 1, "10.0.0.1", 2, "tcp") is None
