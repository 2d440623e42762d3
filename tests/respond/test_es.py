"""``case.open``, ``asset.tag`` and the audit trail against a real Elasticsearch node (the one
``tests/es/conftest.py`` starts), and the JSONL fallback without one."""

from __future__ import annotations

from sentinel.respond.audit import AuditLog
from sentinel.respond.records import EsDocumentStore, JsonlDocumentStore

from .conftest import make_finding, playbook_from_text

CASES = """
id: cases
name: cases
trigger: {}
steps:
  - id: case
    action: case.open
    with:
      title: "{{ rule.name }} on {{ destination.ip }}"
      group_by: [rule.id, destination.ip]
  - id: tag
    action: asset.tag
    with: {address: "{{ destination.ip }}", tags: [attacked, "rule-{{ rule.id }}"]}
"""


def test_cases_tags_and_audit_in_elasticsearch(harness, clean_es) -> None:
    store = EsDocumentStore(clean_es, refresh=True)
    h = harness([playbook_from_text(CASES)])
    h.services.documents = store
    h.audit.store = store
    first = make_finding(ts=1_700_000_000.0, uid="a")
    second = make_finding(ts=1_700_000_100.0, uid="b")
    other = make_finding(ts=1_700_000_200.0, uid="c", dst="198.51.100.21")
    for doc in (first, second, other):
        h.runner.finding(doc)
    runs = h.audit_records()
    assert [[s["status"] for s in r["steps"]] for r in runs] == [["ok", "ok"]] * 3
    case_id = runs[0]["steps"][0]["detail"]["case_id"]
    assert runs[1]["steps"][0]["detail"] == {"case_id": case_id, "created": False, "count": 2}
    clean_es.indices.refresh(index="sentinel-cases")
    case = clean_es.get(index="sentinel-cases", id=case_id)["_source"]
    assert case["case"]["status"] == "open"
    assert case["case"]["count"] == 2
    assert case["case"]["findings"] == [first["event"]["id"], second["event"]["id"]]
    assert case["case"]["title"] == (
        "Modbus write of a value outside the safe limits on 198.51.100.20"
    )
    assert case["destination"]["ip"] == "198.51.100.20"
    assert clean_es.count(index="sentinel-cases")["count"] == 2
    asset = clean_es.get(index="sentinel-assets", id="198.51.100.20")["_source"]
    assert asset["tags"] == ["attacked", "rule-9000106"]
    # The audit is in Elasticsearch too, one document per run, id = run id.
    clean_es.indices.refresh(index="sentinel-playbook-runs-*")
    hits = clean_es.search(index="sentinel-playbook-runs-*", size=10)["hits"]["hits"]
    assert sorted(hit["_id"] for hit in hits) == sorted(r["audit"]["id"] for r in runs)
    assert h.audit.es_failures == 0


def test_case_store_falls_back_to_jsonl(harness) -> None:
    h = harness([playbook_from_text(CASES)])
    assert isinstance(h.services.documents, JsonlDocumentStore)
    h.runner.finding(make_finding(uid="a"))
    h.runner.finding(make_finding(uid="b", ts=1_700_000_001.0))
    case_id = h.audit_records()[0]["steps"][0]["detail"]["case_id"]
    case = h.services.documents.get("sentinel-cases", case_id)
    assert case["case"]["count"] == 2
    assert h.services.documents.get("sentinel-assets", "198.51.100.20")["tags"] == [
        "attacked",
        "rule-9000106",
    ]


def test_unreachable_elasticsearch_fails_the_step_and_keeps_the_audit(harness, tmp_path) -> None:
    from elasticsearch import Elasticsearch

    dead = Elasticsearch("http://127.0.0.1:9", request_timeout=1, max_retries=0)
    store = EsDocumentStore(dead)
    h = harness([playbook_from_text(CASES)])
    h.services.documents = store
    h.audit.store = store
    h.runner.finding(make_finding())
    record = h.audit_records()[0]
    assert [s["status"] for s in record["steps"]] == ["failed", "failed"]
    assert (
        "ConnectionError" in record["steps"][0]["error"] or "refused" in record["steps"][0]["error"]
    )
    assert h.audit.es_failures >= 1
    assert {f["sentinel"]["evidence"]["step"] for f in h.emitted} == {"case", "tag"}
    assert isinstance(h.audit, AuditLog)
