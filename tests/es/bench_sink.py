"""Benchmark: Sentinel's Elasticsearch sink against a bare ``helpers.bulk`` of the same documents.

    python tests/es/bench_sink.py [--docs 50000] [--rounds 5] [--es URL]

Without ``--es`` (and ``SENTINEL_ES_URL``) a local node is started as ``sentinel es dev start``
does, and stopped at the end. Each round indexes the same documents into empty indices twice:
once with ``helpers.bulk`` (documents rendered beforehand, 1,000 per request, the sink's own
client) and once through the sink, from the modbus.jsonl-shaped records, rendering included,
until everything is acknowledged (``close``). Findings go through the spool (fsync'd write-
ahead log) and are measured apart. Prints documents per second and the ratio (target >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch, helpers

from sentinel.es.client import connect
from sentinel.es.config import ElasticsearchSink as SinkConfig
from sentinel.es.config import EsSettings, resolve
from sentinel.es.documents import DocumentBuilder
from sentinel.es.setup import setup
from sentinel.es.sink import ElasticsearchSink
from sentinel.events import ConnId
from sentinel.findings import Finding, Technique

BATCH = 1000
T0 = 1_700_000_000.0  # two days of packet time: several daily indices
TECH = Technique("T0855", "Unauthorized Command Message", "Impair Process Control")


def modbus_record(i: int) -> dict[str, Any]:
    """A record shaped like the pipeline's modbus.jsonl (write single register request)."""
    return {
        "ts": T0 + i * 1.5,
        "uid": f"C{i // 50:08d}",
        "orig_h": "10.1.0.5",
        "orig_p": 40000 + i % 1000,
        "resp_h": f"10.1.1.{i % 200}",
        "resp_p": 502,
        "is_orig": True,
        "tid": i & 0xFFFF,
        "pid": 0,
        "unit": 1,
        "fc": 6,
        "func": "WRITE_SINGLE_REGISTER",
        "pdu_type": "REQ",
        "exception": None,
        "len": 6,
        "frame": i,
        "address": i % 100,
        "values": [i % 4000],
    }


def finding(i: int) -> dict[str, Any]:
    conn = ConnId(f"10.1.0.{i % 7}", 40000 + i % 1000, f"10.1.1.{i % 200}", 502)
    return Finding(
        ts=T0 + i * 1.5,
        rule_id="9990001",
        rule_name="Unexpected register write",
        ruleset="fault-test",
        severity="high",
        technique=TECH,
        message=f"write #{i}",
        detector="fault-test",
        conn=conn,
        uid=f"C{i // 50:08d}",
        frame=i,
        evidence={"address": i % 100, "value": i % 4000},
    ).to_ecs("sensor-fault", {"site": "plant-1", "sector": "energy"})


def _reset(es: Elasticsearch) -> None:
    es.options(ignore_status=404).indices.delete(index="sentinel-*", expand_wildcards="all")


def _count(es: Elasticsearch, pattern: str) -> int:
    es.indices.refresh(index=pattern)
    return int(es.count(index=pattern)["count"])


def bare(es: Elasticsearch, actions: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    ok, errors = helpers.bulk(es, actions, chunk_size=BATCH, max_chunk_bytes=16 << 20)
    elapsed = time.perf_counter() - started
    assert ok == len(actions) and not errors
    return elapsed


def through_sink(
    settings: EsSettings, kind: str, items: list[dict[str, Any]], spool: Path
) -> float:
    sink = ElasticsearchSink(settings, spool_dir=spool)
    feed = sink.modbus if kind == "modbus" else sink.finding
    started = time.perf_counter()
    for item in items:
        feed(item)
    sink.close()
    elapsed = time.perf_counter() - started
    assert sink.stats["sent"] == len(items), sink.stats
    return elapsed


def run(settings: EsSettings, n_docs: int, rounds: int, out: Any = sys.stdout) -> dict[str, float]:
    es = connect(settings)
    settings = EsSettings(**{**settings.__dict__, "sink": SinkConfig(batch_size=BATCH)})
    _reset(es)
    setup(es)
    records = [modbus_record(i) for i in range(n_docs)]
    findings = [finding(i) for i in range(max(1, n_docs // 4))]
    builder = DocumentBuilder("sentinel")
    modbus_actions = []
    for rec in records:
        index, doc_id, doc = builder.modbus(rec)
        modbus_actions.append({"_index": index, "_id": doc_id, "_source": doc})
    finding_actions = []
    for doc in findings:
        index, doc_id, _ = builder.finding(doc)
        finding_actions.append({"_index": index, "_id": doc_id, "_source": doc})
    results: dict[str, list[float]] = {k: [] for k in ("bare", "sink", "bare_f", "sink_f")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name in ("bare", "sink") if r % 2 == 0 else ("sink", "bare"):
                _reset(es)
                if name == "bare":
                    results["bare"].append(len(records) / bare(es, modbus_actions))
                else:
                    spool = Path(tmp) / f"spool-{r}"
                    results["sink"].append(
                        len(records) / through_sink(settings, "modbus", records, spool)
                    )
                assert _count(es, "sentinel-modbus-*") == len(records)
            for name in ("bare_f", "sink_f") if r % 2 == 0 else ("sink_f", "bare_f"):
                _reset(es)
                if name == "bare_f":
                    results["bare_f"].append(len(findings) / bare(es, finding_actions))
                else:
                    spool = Path(tmp) / f"spool-f{r}"
                    results["sink_f"].append(
                        len(findings) / through_sink(settings, "findings", findings, spool)
                    )
                assert _count(es, "sentinel-findings-*") == len(findings)
    _reset(es)
    med = {k: statistics.median(v) for k, v in results.items()}
    pairs = [s / b for s, b in zip(results["sink"], results["bare"], strict=True)]
    pairs_f = [s / b for s, b in zip(results["sink_f"], results["bare_f"], strict=True)]
    med["ratio"] = statistics.median(pairs)
    med["ratio_findings"] = statistics.median(pairs_f)
    print(f"Modbus messages: {n_docs:,} documents per run, {rounds} rounds", file=out)
    print(
        f"  bare helpers.bulk  median {med['bare']:8,.0f} docs/s  runs {_r(results['bare'])}",
        file=out,
    )
    print(
        f"  Sentinel sink      median {med['sink']:8,.0f} docs/s  runs {_r(results['sink'])}",
        file=out,
    )
    print(f"  sink / bare        median {med['ratio']:8.2f}         rounds {_f(pairs)}", file=out)
    print(f"Findings (through the fsync'd spool): {len(findings):,} per run", file=out)
    print(
        f"  bare helpers.bulk  median {med['bare_f']:8,.0f} docs/s  runs {_r(results['bare_f'])}",
        file=out,
    )
    print(
        f"  Sentinel sink      median {med['sink_f']:8,.0f} docs/s  runs {_r(results['sink_f'])}",
        file=out,
    )
    print(
        f"  sink / bare        median {med['ratio_findings']:8.2f}         rounds {_f(pairs_f)}",
        file=out,
    )
    return med


def _r(values: list[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)


def _f(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--es", default=None, help="URL (credentials from SENTINEL_ES_*)")
    args = parser.parse_args()
    node = None
    if args.es or os.environ.get("SENTINEL_ES_URL"):
        settings = resolve(None, args.es)
    else:
        from sentinel.es.dev import DevNode

        base = Path(tempfile.mkdtemp(prefix="sentinel-es-bench-"))
        base.chmod(0o755)
        node = DevNode(base / "node")
        info = node.start()
        env = {
            "SENTINEL_ES_USERNAME": info.username or "",
            "SENTINEL_ES_PASSWORD": info.password or "",
            "SENTINEL_ES_CA_CERTS": info.ca_certs or "",
        }
        settings = resolve(None, info.url, env)
    try:
        run(settings, args.docs, args.rounds)
    finally:
        if node is not None:
            node.stop()
            import shutil

            shutil.rmtree(node.dir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
