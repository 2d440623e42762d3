"""``Pipeline.emit_finding``: findings raised by other threads (scheduler jobs, failed playbook
steps) reach the same sinks as packet findings, written by the pipeline's thread, each once,
counted in the run's stats; ``skip`` keeps a finding from one sink (the playbook runner does
not see its own failures again). A real pipeline over live-style heartbeats; the second sink
records what it gets (it stands for Elasticsearch, whose sink receives the same calls)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.config import Config
from sentinel.pipeline import Pipeline
from sentinel.pipeline.engine import HEARTBEAT
from sentinel.sinks.base import Sink

THREADS, EACH = 4, 50


class Recorder(Sink):
    id = "recorder"

    def __init__(self) -> None:
        self.findings: list[dict[str, Any]] = []
        self.thread_ids: set[int] = set()

    def finding(self, document: dict[str, Any]) -> None:
        self.thread_ids.add(threading.get_ident())
        self.findings.append(document)


def _doc(n: int, severity: str = "high") -> dict[str, Any]:
    return {
        "event": {"id": f"ext-{n}", "kind": "alert"},
        "rule": {"id": "9000401", "name": "playbook step failed"},
        "sentinel": {"severity_label": severity},
    }


def test_findings_from_other_threads_reach_every_sink_once(tmp_path: Path) -> None:
    recorder, skipped = Recorder(), Recorder()
    pipeline = Pipeline(Config(), tmp_path, detectors=[], sinks=[recorder, skipped], live=True)
    pipeline.emit_finding(_doc(-1, "medium"))  # before the run: waits for the first drain
    assert pipeline.drain_findings() == 0  # not running: nothing written yet
    go = threading.Event()
    done: list[threading.Thread] = []

    def producer(t: int) -> None:
        go.wait()
        for i in range(EACH):
            n = t * EACH + i
            # Odd ones skip ``skipped`` (as the runner's own failure findings skip the runner).
            pipeline.emit_finding(_doc(n), skip=(skipped,) if n % 2 else ())

    def packets() -> Iterator[tuple[float, int, bytes]]:
        # The pipeline's thread: heartbeats, draining between them, as sentinel run does.
        for t in range(THREADS):
            thread = threading.Thread(target=producer, args=(t,))
            thread.start()
            done.append(thread)
        go.set()
        deadline = time.monotonic() + 30
        while any(t.is_alive() for t in done) or pipeline.findings_waiting:
            assert time.monotonic() < deadline, "producers did not finish"
            pipeline.drain_findings()
            yield time.time(), HEARTBEAT, b""

    stats = pipeline.run_packets(packets())
    total = THREADS * EACH + 1
    written = [json.loads(line) for line in (tmp_path / "findings.jsonl").read_text().splitlines()]
    ids = [d["event"]["id"] for d in written]
    assert len(ids) == total and len(set(ids)) == total
    assert sorted(d["event"]["id"] for d in recorder.findings) == sorted(ids)
    assert recorder.thread_ids == {threading.get_ident()}  # written by the pipeline's thread
    expected_skipped = {f"ext-{n}" for n in range(THREADS * EACH) if n % 2}
    assert {d["event"]["id"] for d in skipped.findings} == set(ids) - expected_skipped
    assert stats["findings"] == total
    assert stats["findings_by_severity"] == {"high": total - 1, "medium": 1}


def test_findings_after_the_run_are_handed_back(tmp_path: Path) -> None:
    pipeline = Pipeline(Config(), tmp_path, detectors=[], live=True)
    pipeline.run_packets([(time.time(), HEARTBEAT, b"")])
    pipeline.emit_finding(_doc(1))
    pipeline.emit_finding(_doc(2))
    assert pipeline.findings_waiting
    assert [d["event"]["id"] for d in pipeline.take_findings()] == ["ext-1", "ext-2"]
    assert not pipeline.findings_waiting
    assert (tmp_path / "findings.jsonl").read_text() == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture and netns need root")
def test_service_writes_findings_emitted_before_its_pipeline_existed(tmp_path: Path) -> None:
    """A job caught up at start-up can raise a finding before the pipeline is built: it is
    written to findings.jsonl while the service runs, not held back until the end."""
    from sentinel.config import load_config
    from sentinel.service import Service
    from tests.service.support import Veth, jsonl, wait

    config_path = tmp_path / "sentinel.yaml"
    config_path.write_text(
        f"playbooks: {{state_dir: {tmp_path / 'state'}}}\n"
        "service: {metrics: {enabled: false}}\not: {enabled: false}\n"
    )
    config = load_config(config_path)
    out = tmp_path / "out"
    with Veth() as veth:
        sensor = config.sensor.model_copy(update={"interfaces": [veth.host], "out_dir": str(out)})
        service = Service(config, sensor)
        service._emit(_doc(7), to_runner=True)  # as the scheduler's emit does, before run()
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(service.run()), daemon=True)
        thread.start()
        try:
            written = wait(
                lambda: [f["event"]["id"] for f in jsonl(out / "findings.jsonl")] == ["ext-7"],
                30,
            )
            assert written and thread.is_alive()  # while running
        finally:
            service.request_stop()
            thread.join(60)
    assert not thread.is_alive()
    assert result["findings"] == 1 and result["service"]["late_findings"] == 0
    assert [f["event"]["id"] for f in jsonl(out / "findings.jsonl")] == ["ext-7"]
