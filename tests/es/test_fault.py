"""kill -9 of the node in the middle of a large ingest: every finding arrives exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from elasticsearch import Elasticsearch, helpers

from sentinel.es.setup import setup
from sentinel.es.sink import ElasticsearchSink
from sentinel.es.spool import inspect
from tests.es_support import Node

from .bench_sink import finding, modbus_record

N_MODBUS = 80_000
EVERY = 8  # one finding per EVERY Modbus messages: 10,000 findings


def test_kill_9_mid_ingest(es_node: Node, clean_es: Elasticsearch, tmp_path: Path) -> None:
    setup(clean_es)
    settings = es_node.settings(
        batch_size=1000,
        initial_backoff=0.2,
        max_backoff=2.0,
        max_retries=2,
        close_timeout=240,
        request_timeout=20,
    )
    spool = tmp_path / "spool"
    sink = ElasticsearchSink(settings, "sensor-fault", spool_dir=spool)
    expected_ids: list[str] = []
    done = threading.Event()

    def feed() -> None:
        for i in range(N_MODBUS):
            sink.modbus(modbus_record(i))
            if i % EVERY == 0:
                doc = finding(i)
                expected_ids.append(doc["event"]["id"])
                sink.finding(doc)
        done.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    # kill the node once a good part has been acknowledged, well before the end
    deadline = time.monotonic() + 300
    while sink.stats["sent"] < N_MODBUS // 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not done.is_set(), "the ingest finished before the node could be killed"
    sent_before = sink.stats["sent"]
    es_node.dev.kill()  # SIGKILL
    while es_node.dev.pid is not None:
        time.sleep(0.1)
    time.sleep(1.0)  # the sensor keeps going meanwhile and spools
    es_node.dev.start()  # same data, same port
    feeder.join()
    sink.close()  # drains the spool (findings first) now that the node is back
    left = inspect(spool)
    assert (left["findings"], left["bulk"]) == (0, 0), left
    assert sink.stats["spooled"] > 0  # the outage was seen and bridged by the spool
    assert sink.stats["rejected"] == 0
    assert sent_before < sink.stats["sent"]

    clean_es.indices.refresh(index="sentinel-*")
    n_findings = clean_es.count(index="sentinel-findings-*")["count"]
    assert n_findings == len(expected_ids) == N_MODBUS // EVERY  # each finding exactly once
    # ... and they are the ones that were sent (all distinct ids, none missing)
    ids = [hit["_id"] for hit in helpers.scan(clean_es, index="sentinel-findings-*", _source=False)]
    assert len(ids) == len(set(ids)) and set(ids) == set(expected_ids)
    assert clean_es.count(index="sentinel-modbus-*")["count"] == N_MODBUS
    assert inspect(spool)["state"].get("dropped", 0) == 0
