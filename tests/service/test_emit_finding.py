"""``Pipeline.emit_finding``: findings raised by other threads (scheduler jobs, failed playbook
steps) reach the same sinks as packet findings, written by the pipeline's thread, each once,
counted in the run's stats; ``skip`` keeps a finding from one sink (the playbook runner does
not see its own failures again). A real pipeline over live-style heartbeats; the second sink
records what it gets (it stands for Elasticsearch, whose sink receives the same calls)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
