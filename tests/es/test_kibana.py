"""The Kibana saved objects: structure, fields against the templates, queries on the real node.

Kibana itself cannot run here, so what it would do is done by hand: saved-search queries are
Lucene, which Kibana sends as a ``query_string`` query; that exact query runs against the node
after a capture with known findings is indexed. Visualisation aggregations are translated the
way Kibana builds them and run too. The import command is tested against a small local HTTP
server standing in for Kibana (the test asserts the exact request it receives).
"""

from __future__ import annotations

import json
import re
import threading
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from elasticsearch import Elasticsearch, helpers

from sentinel.es.documents import INDEX_PATTERNS
from sentinel.es.kibana import ndjson_bytes, saved_objects
from sentinel.es.setup import field_types, load_bundle, merged_mappings
from sentinel.es.sink import ElasticsearchSink
from sentinel.events import ConnId
from sentinel.findings import Finding, Technique
from tests.es_support import Node, index_capture, run_sentinel

AGGREGATABLE = {"keyword", "ip", "long", "float", "boolean", "date", "flattened"}
AGG_TYPES = {
    "terms": AGGREGATABLE,
    "cardinality": AGGREGATABLE,
    "date_histogram": {"date"},
    "sum": {"long", "float"},
    "avg": {"long", "float"},
    "max": {"long", "float", "date"},
    "min": {"long", "float", "date"},
}
WRITE_FCS = {5, 6, 15, 16, 21, 22, 23}
PROCESS_TACTICS = {"Impair Process Control", "Inhibit Response Function"}
# What each saved search must return, as a predicate on the JSONL record or ECS document.
EXPECTED = {
    "sentinel-findings-all": ("findings", lambda d: d["event"]["kind"] == "alert"),
    "sentinel-findings-high": ("findings", lambda d: d["event"]["severity"] >= 73),
    "sentinel-findings-process": (
        "findings",
        lambda d: bool(PROCESS_TACTICS & set(d["threat"]["tactic"]["name"])),
    ),
    "sentinel-modbus-writes": ("modbus", lambda r: r["pdu_type"] == "REQ" and r["fc"] in WRITE_FCS),
    "sentinel-modbus-exceptions": ("modbus", lambda r: r["exception"] is not None),
    "sentinel-assets-table": ("assets", lambda r: True),
}


def _objects() -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in saved_objects()}


def _types_by_view() -> dict[str, dict[str, str]]:
    bundle = load_bundle()
    out = {}
    for kind, pattern in INDEX_PATTERNS.items():
        types = field_types(merged_mappings(bundle, f"sentinel-{kind}"))
        types["_id"] = "keyword"
        out[pattern] = types
    return out


def _view_of(obj: dict[str, Any], objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ref = next(r for r in obj["references"] if r["type"] == "index-pattern")
    return objects[ref["id"]]


def _query(obj: dict[str, Any]) -> str:
    source = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["query"]["language"] == "lucene"
    assert source["indexRefName"] == "kibanaSavedObjectMeta.searchSourceJSON.index"
    return source["query"]["query"]


def _query_fields(query: str) -> set[str]:
    fields = set(re.findall(r"_exists_:([\w.@]+)", query))
    fields |= {f for f in re.findall(r"([\w.@]+):", query) if f != "_exists_"}
    return fields


def _field_ok(types: dict[str, str], field: str) -> str | None:
    if field in types:
        return types[field]
    parts = field.split(".")
    for i in range(1, len(parts)):
        if types.get(".".join(parts[:i])) == "flattened":
            return "keyword"
    return None


def test_saved_objects_are_complete_and_consistent() -> None:
    objects = _objects()
    assert len(objects) == len(saved_objects())  # ids are unique
    by_type: dict[str, list[str]] = {}
    for obj in objects.values():
        by_type.setdefault(obj["type"], []).append(obj["id"])
        assert obj["migrationVersion"] == {obj["type"]: "8.0.0"}
        assert obj["attributes"]["title"]
        for ref in obj["references"]:
            assert ref["id"] in objects and objects[ref["id"]]["type"] == ref["type"], ref
    views = {objects[i]["attributes"]["title"] for i in by_type["index-pattern"]}
    assert views == set(INDEX_PATTERNS.values())
    assert set(by_type["search"]) == set(EXPECTED)  # every saved search has its test
    dashboards = [objects[i] for i in by_type["dashboard"]]
    assert [d["attributes"]["title"] for d in dashboards] == ["Sentinel OT overview"]
    panels = json.loads(dashboards[0]["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dashboards[0]["references"]}
    assert {p["panelRefName"] for p in panels} == set(refs)
    shown = {refs[p["panelRefName"]]["id"] for p in panels}
    assert set(by_type["visualization"]) <= shown and "sentinel-assets-table" in shown
    titles = " ".join(objects[i]["attributes"]["title"].lower() for i in shown)
    for topic in (
        "sector and site",
        "top rules",
        "att&ck",
        "top talkers",
        "modbus writes",
        "asset",
    ):
        assert topic in titles, topic
    grid = [(p["gridData"]["x"], p["gridData"]["y"]) for p in panels]
    assert len(set(grid)) == len(grid)


def test_every_field_referenced_exists_with_a_fitting_type() -> None:
    objects = _objects()
    types_by_view = _types_by_view()
    problems = []
    for obj in objects.values():
        attrs = obj["attributes"]
        if obj["type"] == "index-pattern":
            if types_by_view[attrs["title"]].get(attrs["timeFieldName"]) != "date":
                problems.append(f"{obj['id']}: time field {attrs['timeFieldName']}")
            for field in json.loads(attrs.get("fieldFormatMap") or "{}"):
                if _field_ok(types_by_view[attrs["title"]], field) is None:
                    problems.append(f"{obj['id']}: field format for unknown {field}")
            continue
        if obj["type"] not in ("search", "visualization"):
            continue
        types = types_by_view[_view_of(obj, objects)["attributes"]["title"]]
        for field in _query_fields(_query(obj)):
            if _field_ok(types, field) is None:
                problems.append(f"{obj['id']}: query field {field} is not mapped")
        if obj["type"] == "search":
            for field in attrs["columns"] + [s[0] for s in attrs["sort"]]:
                if _field_ok(types, field) is None:
                    problems.append(f"{obj['id']}: column {field} is not mapped")
            continue
        vis = json.loads(attrs["visState"])
        assert vis["title"] == attrs["title"]
        for agg in vis["aggs"]:
            field = agg["params"].get("field")
            if agg["type"] == "count":
                continue
            kind = _field_ok(types, field)
            if kind is None:
                problems.append(f"{obj['id']}: {agg['type']} on unmapped {field}")
            elif kind not in AGG_TYPES[agg["type"]]:
                problems.append(f"{obj['id']}: {agg['type']} on {field} of type {kind}")
    assert not problems, problems


# -- against the real node


def _critical_finding() -> dict[str, Any]:
    """A known finding for the searches the captures alone would leave empty."""
    technique = Technique("T0836", "Modify Parameter", "Impair Process Control")
    return Finding(
        ts=1_688_347_000.0,
        rule_id="9990002",
        rule_name="Setpoint outside the safe range",
        ruleset="test",
        severity="critical",
        technique=technique,
        message="setpoint 9000",
        detector="test",
        conn=ConnId("192.168.1.10", 50211, "192.168.1.20", 502),
        frame=3,
        evidence={"address": 40001, "value": 9000},
    ).to_ecs("sensor-1", {"site": "plant-1", "sector": "energy"})


@pytest.fixture(scope="module")
def indexed(
    es_node: Node, es: Elasticsearch, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    es.options(ignore_status=404).indices.delete(index="sentinel-*", expand_wildcards="all")
    tmp = tmp_path_factory.mktemp("kibana")
    data: dict[str, list[dict[str, Any]]] = {"findings": [], "modbus": [], "assets": []}
    for capture in ("modbus-and-non-modbus-p502", "fuzz-72", "modbus-eit"):
        out = index_capture(es_node, capture, tmp / capture, tmp / "spool")
        for kind in data:
            data[kind] += [json.loads(x) for x in (out / f"{kind}.jsonl").read_text().splitlines()]
    extra = _critical_finding()
    sink = ElasticsearchSink(es_node.settings(), spool_dir=tmp / "spool")
    sink.finding(extra)
    sink.close()
    data["findings"].append(extra)
    es.indices.refresh(index="sentinel-*")
    return data


def _doc_id(kind: str, record: dict[str, Any], counters: dict[tuple[str, int], int]) -> str:
    if kind == "findings":
        return record["event"]["id"]
    if kind == "assets":
        return record["ip"]
    key = (record["uid"], record["frame"])
    counters[key] = counters.get(key, -1) + 1
    return f"{record['uid']}.{record['frame']}.{counters[key]}"


def test_each_saved_search_returns_its_findings(
    indexed: dict[str, list[dict[str, Any]]], es: Elasticsearch
) -> None:
    objects = _objects()
    for search_id, (kind, predicate) in EXPECTED.items():
        obj = objects[search_id]
        pattern = _view_of(obj, objects)["attributes"]["title"]
        counters: dict[tuple[str, int], int] = {}
        ids = [_doc_id(kind, r, counters) for r in indexed[kind]]
        want = {i for i, r in zip(ids, indexed[kind], strict=True) if predicate(r)}
        assert want, f"{search_id}: the test data must give it something to find"
        query = {"query_string": {"query": _query(obj), "analyze_wildcard": True}}  # as Kibana
        got = {h["_id"] for h in helpers.scan(es, index=pattern, query={"query": query})}
        assert got == want, search_id


def _es_aggs(vis: dict[str, Any]) -> dict[str, Any]:
    order = {"split": 0, "bucket": 1, "segment": 1, "group": 2}
    buckets = sorted(
        (a for a in vis["aggs"] if a["schema"] in order), key=lambda a: order[a["schema"]]
    )
    metrics = {a["id"]: a for a in vis["aggs"] if a["schema"] == "metric"}
    inner = {
        i: {a["type"]: {"field": a["params"]["field"]}}
        for i, a in metrics.items()
        if a["type"] != "count"
    }
    for agg in reversed(buckets):
        p = agg["params"]
        if agg["type"] == "terms":
            by = p["orderBy"]
            order_key = "_count" if metrics[by]["type"] == "count" else by
            body = {"field": p["field"], "size": p["size"], "order": {order_key: p["order"]}}
        else:  # date_histogram with an "auto" interval: Kibana picks one; an hour does here
            body = {"field": p["field"], "fixed_interval": "1h", "min_doc_count": 1}
        inner = {agg["id"]: {agg["type"]: body, **({"aggs": inner} if inner else {})}}
    return inner


def test_each_visualisation_aggregates_on_the_node(
    indexed: dict[str, list[dict[str, Any]]], es: Elasticsearch
) -> None:
    objects = _objects()
    for obj in objects.values():
        if obj["type"] != "visualization":
            continue
        vis = json.loads(obj["attributes"]["visState"])
        pattern = _view_of(obj, objects)["attributes"]["title"]
        query = {"query_string": {"query": _query(obj) or "*", "analyze_wildcard": True}}
        resp = es.search(index=pattern, size=0, query=query, aggs=_es_aggs(vis))
        top = next(iter(resp["aggregations"].values()))
        assert top["buckets"], obj["id"]


# -- the import command, against a stand-in for Kibana


class _FakeKibana(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    answer: ClassVar[tuple[int, dict[str, Any]]] = (200, {})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, payload = type(self).answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kibana() -> Any:
    server = HTTPServer(("127.0.0.1", 0), _FakeKibana)
    _FakeKibana.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_import_posts_the_ndjson_with_auth(kibana: HTTPServer, tmp_path: Path) -> None:
    n = len(saved_objects())
    _FakeKibana.answer = (200, {"success": True, "successCount": n, "successResults": []})
    url = f"http://127.0.0.1:{kibana.server_address[1]}"
    env = {
        "SENTINEL_KIBANA_USERNAME": "analyst",
        "SENTINEL_KIBANA_PASSWORD": "s3cret-pass",
        "PATH": "/usr/bin:/bin",
    }
    proc = run_sentinel("kibana", "import", "--url", url, "--space", "soc", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"imported {n} saved objects" in proc.stdout
    (req,) = _FakeKibana.requests
    assert req["path"] == "/s/soc/api/saved_objects/_import?overwrite=true"
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["kbn-xsrf"] == "true"
    assert headers["authorization"] == "Basic " + b64encode(b"analyst:s3cret-pass").decode()
    boundary = headers["content-type"].split("boundary=")[1]
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    expected = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="sentinel-ot.ndjson"\r\n'
            "Content-Type: application/ndjson\r\n\r\n"
        ).encode()
        + ndjson_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    assert req["body"] == expected


def test_import_reports_refusals_clearly(kibana: HTTPServer) -> None:
    url = f"http://127.0.0.1:{kibana.server_address[1]}"
    env = {"SENTINEL_KIBANA_API_KEY": "a2V5OnNlY3JldA==", "PATH": "/usr/bin:/bin"}
    _FakeKibana.answer = (
        200,
        {
            "success": False,
            "successCount": 15,
            "errors": [
                {
                    "id": "sentinel-ot-overview",
                    "type": "dashboard",
                    "title": "Sentinel OT overview",
                    "error": {"type": "missing_references"},
                }
            ],
        },
    )
    proc = run_sentinel("kibana", "import", "--url", url, env=env)
    assert proc.returncode == 2
    assert (
        "dashboard sentinel-ot-overview (Sentinel OT overview): missing_references" in proc.stderr
    )
    req = _FakeKibana.requests[-1]
    assert req["path"] == "/api/saved_objects/_import?overwrite=true"
    assert req["headers"]["Authorization"] == "ApiKey a2V5OnNlY3JldA=="
    _FakeKibana.answer = (401, {"statusCode": 401, "error": "Unauthorized"})
    proc = run_sentinel("kibana", "import", "--url", url, env=env)
    assert proc.returncode == 2 and "refused the credentials (HTTP 401)" in proc.stderr
    assert "a2V5OnNlY3JldA==" not in proc.stderr + proc.stdout
