"""Against a real Elasticsearch node (the pinned integ-test distribution that ``sentinel es dev
start`` runs, with security and TLS; started once for this module; it has no ILM): the
documents of a pseudonymized run hold no clear address, identifier or payload and are all
accepted by the ``ip``-typed fields; retention deletes expired indices and documents and
nothing else."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch, helpers

from sentinel.config import Config
from sentinel.es.client import connect
from sentinel.es.config import ElasticsearchSink as SinkSection
from sentinel.es.config import resolve
from sentinel.es.dev import DevNode
from sentinel.es.setup import setup
from sentinel.es.sink import ElasticsearchSink
from sentinel.pipeline.engine import SiteLabels
from sentinel.privacy.keys import Key, parse_time
from sentinel.privacy.retention import run_retention
from sentinel.privacy.settings import PrivacySettings
from tests.privacy import traffic
from tests.privacy.conftest import pseudonymizer, run
from tests.privacy.test_outputs import assert_private

DAY = 86400.0


@pytest.fixture(scope="module")
def es_node() -> Iterator[tuple[DevNode, dict[str, str]]]:
    base = Path(tempfile.mkdtemp(prefix="sentinel-privacy-es-"))
    base.chmod(0o755)  # the node's unprivileged user must enter it
    dev = DevNode(base / "node", data_dir=base / "data")
    try:
        info = dev.start()
        env = {
            "SENTINEL_ES_URL": info.url,
            "SENTINEL_ES_USERNAME": info.username or "",
            "SENTINEL_ES_PASSWORD": info.password or "",
            "SENTINEL_ES_CA_CERTS": info.ca_certs or "",
        }
        yield dev, env
    finally:
        dev.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def es(es_node: tuple[DevNode, dict[str, str]]) -> Elasticsearch:
    client = connect(resolve(SinkSection(), None, es_node[1]))
    client.options(ignore_status=404).indices.delete(index="sentinel-*", expand_wildcards="all")
    return client


def test_pseudonymized_documents_hold_nothing_in_clear_and_are_all_accepted(
    es_node: tuple[DevNode, dict[str, str]],
    es: Elasticsearch,
    site_capture: Path,
    key: Key,
    tmp_path: Path,
) -> None:
    config = Config.model_validate(traffic.SITE_CONFIG)
    settings = resolve(SinkSection(), None, es_node[1])
    p = pseudonymizer(config, key)
    sink = ElasticsearchSink(
        settings, "privacy-test", SiteLabels(config).lookup, spool_dir=tmp_path / "spool"
    )
    result = run(site_capture, tmp_path / "out", config, p, [sink])
    assert sink.stats["rejected"] == 0 and sink.pending() == 0, sink.stats
    es.indices.refresh(index="sentinel-*")
    docs = [
        h["_source"]
        for h in helpers.scan(es, index="sentinel-*", query={"query": {"match_all": {}}})
    ]
    assert len(docs) == sum(sink.counts.values()) > 20
    assert_private(json.dumps(docs).encode(), traffic.OUTSIDE, key)
    # The pseudonyms are real ``ip`` values: a CIDR query over the pseudonym space finds them.
    hits = es.count(index="sentinel-flows-*", query={"term": {"source.ip": "240.0.0.0/4"}})
    outside_clients = {f["orig_h"] for f in result.records("flows") if p.is_pseudonym(f["orig_h"])}
    assert hits["count"] > 0 and outside_clients
    v6 = es.count(index="sentinel-*", query={"term": {"source.ip": p.ipv6_prefix}})
    assert v6["count"] > 0
    # Site labels still come from the clear address (detections and labels unchanged).
    finding = next(d for d in docs if d.get("event", {}).get("kind") == "alert")
    assert finding["labels"]["site"] == "clinic"


def _index(es: Elasticsearch, index: str, stamps: list[float]) -> None:
    ops: list[dict] = []
    for i, ts in enumerate(stamps):
        ops += [{"index": {"_index": index, "_id": f"d{i}"}}, {"@timestamp": iso(ts), "n": i}]
    es.bulk(operations=ops, refresh=True)


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def test_retention_deletes_expired_indices_and_documents_only(es: Elasticsearch) -> None:
    setup(es)  # the real templates: @timestamp is a date
    now = parse_time("2026-06-01T12:00:00Z")
    cut_flows = now - 30 * DAY  # 2026-05-02T12:00Z
    _index(es, "sentinel-flows-2026.04.20", [now - 42 * DAY])  # wholly expired
    _index(es, "sentinel-flows-2026.05.02", [cut_flows - 3600, cut_flows + 3600])  # boundary
    _index(es, "sentinel-flows-2026.05.20", [now - 12 * DAY])
    _index(es, "sentinel-modbus-2026.05.01", [now - 31 * DAY])  # transactions: 30d
    _index(es, "sentinel-findings-2026.05.01", [now - 31 * DAY])  # findings: 365d
    _index(es, "sentinel-findings-2025.05.01", [now - 396 * DAY])
    _index(es, "sentinel-assets", [now - 400 * DAY, now - 5 * DAY])  # by last seen
    _index(es, "unrelated-2020.01.01", [now - 2000 * DAY])  # not Sentinel's
    _index(es, "sentinel-playbook-runs-2024.05.01", [now - 760 * DAY])  # audit: 730d
    _index(es, "sentinel-playbook-runs-2026.05.01", [now - 31 * DAY])
    # cases (findings, 365d) by when they were last updated, not when they were opened
    cases = [(now - 400 * DAY, now - 390 * DAY), (now - 400 * DAY, now - 3 * DAY)]
    ops: list[dict] = []
    for i, (opened, updated) in enumerate(cases):
        doc = {"@timestamp": iso(opened), "case": {"id": f"c{i}", "updated": iso(updated)}}
        ops += [{"index": {"_index": "sentinel-cases", "_id": f"d{i}"}}, doc]
    es.bulk(operations=ops, refresh=True)

    settings = PrivacySettings.model_validate({"retention": {"spool": False}})
    dry = run_retention(Config(), now, dry_run=True, settings=settings, es_client=es)
    assert len(_indices(es)) == 11
    report = run_retention(Config(), now, settings=settings, es_client=es)
    assert [a.line(False) for a in report.actions] == [a.line(False) for a in dry.actions]
    assert _indices(es) == {
        "sentinel-flows-2026.05.02": ["d1"],
        "sentinel-flows-2026.05.20": ["d0"],
        "sentinel-findings-2026.05.01": ["d0"],
        "sentinel-assets": ["d1"],
        "sentinel-cases": ["d1"],
        "sentinel-playbook-runs-2026.05.01": ["d0"],
        "unrelated-2020.01.01": ["d0"],
    }
    counts = {"flows": 2, "transactions": 1, "findings": 1 + 1, "assets": 1, "audit": 1}
    assert report.counts() == counts
    assert any("ILM" in n for n in report.notes) is False  # this node has no ILM
    again = run_retention(Config(), now, settings=settings, es_client=es)
    assert again.actions == []


def _indices(es: Elasticsearch) -> dict[str, list[str]]:
    names = sorted(es.indices.get(index="sentinel-*,unrelated-*", expand_wildcards="all"))
    es.indices.refresh(index=",".join(names))
    return {
        n: sorted(h["_id"] for h in helpers.scan(es, index=n, query={"query": {"match_all": {}}}))
        for n in names
    }
