"""Scoring findings against labels."""

from __future__ import annotations

import json
from pathlib import Path

from sentinel.lab.labels import Label, write_labels
from sentinel.lab.score import FindingTime, score

from .conftest import sentinel

A, T, OTHER = "198.51.100.45", "198.51.100.20", "198.51.100.99"


def _f(start: float, *ips: str) -> FindingTime:
    return FindingTime(start, frozenset(ips), "1")


def test_detection_time_and_false_positives() -> None:
    labels = [
        Label("one", 1000.0, 1010.0, A, T, "T0855"),
        Label("two", 2000.0, 2005.0, A, T, "T0814"),
        Label("three", 3000.0, 3001.0, A, T, "T0846"),
    ]
    found = [
        _f(500.0, OTHER),  # before any attack: false positive
        _f(1002.5, A, T),  # detects one after 2.5 s
        _f(1003.0, T),
        _f(2004.0, OTHER),  # inside two's interval but about other hosts: false positive
        _f(2050.0, A),  # detects two within the grace period
        _f(3200.0, A),  # long after three: false positive
    ]
    report = score(found, labels, (0.0, 7200.0), grace=60.0)
    assert report["scenarios"] == [
        {"name": "one", "detected": True, "time_to_detect_s": 2.5},
        {"name": "two", "detected": True, "time_to_detect_s": 50.0},
        {"name": "three", "detected": False, "time_to_detect_s": None},
    ]
    assert report["false_positives"] == 3
    attack_seconds = 70.0 + 65.0 + 61.0
    assert report["normal_hours"] == round((7200.0 - attack_seconds) / 3600.0, 6)
    assert report["false_positives_per_hour"] == round(3 / report["normal_hours"], 3)


def test_folded_findings() -> None:
    """A finding repeating across attacks counts for the attack where it began or ended,
    not for one it merely spans."""
    labels = [
        Label("a", 100.0, 110.0, A, T, "T0846"),
        Label("b", 120.0, 125.0, A, T, "T0814"),
        Label("c", 130.0, 140.0, A, T, "T0855"),
    ]
    found = [FindingTime(105.0, frozenset({A, T}), "1", end=135.0)]
    report = score(found, labels, None)
    assert [s["detected"] for s in report["scenarios"]] == [True, False, True]
    assert report["scenarios"][2]["time_to_detect_s"] == 0.0
    assert report["false_positives"] == 0


def test_no_span_no_rate() -> None:
    report = score([], [Label("x", 1.0, 2.0, A, T, "T0855")], None)
    assert report["normal_hours"] is None and report["false_positives_per_hour"] is None


def test_cli_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    doc = {
        "@timestamp": "2024-05-06T08:00:10.500000Z",
        "event": {"start": "2024-05-06T08:00:10.500000Z"},
        "rule": {"id": "9000101"},
        "source": {"ip": A},
        "destination": {"ip": T},
        "related": {"ip": [A, T]},
    }
    (out / "findings.jsonl").write_text(json.dumps(doc) + "\n")
    start = 1714982400.0
    write_labels(
        tmp_path / "labels.jsonl", [Label("write-coil", start + 10, start + 12, A, T, "T0855")]
    )
    (tmp_path / "run.json").write_text(json.dumps({"start": start, "end": start + 3600}))
    proc = sentinel("lab", "score", str(out), str(tmp_path / "labels.jsonl"), "--json")
    report = json.loads(proc.stdout)
    assert list(report) == [
        "scenarios",
        "false_positives",
        "false_positives_per_hour",
        "normal_hours",
    ]
    assert report["scenarios"] == [
        {"name": "write-coil", "detected": True, "time_to_detect_s": 0.5}
    ]
    assert report["false_positives"] == 0
    assert report["normal_hours"] == round((3600 - 62) / 3600, 6)
    table = sentinel("lab", "score", str(out), str(tmp_path / "labels.jsonl")).stdout
    assert "write-coil" in table and "0.500 s" in table
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"scenario": "x"}\n')
    proc = sentinel("lab", "score", str(out), str(bad), check=False)
    assert proc.returncode == 2 and "bad.jsonl:1" in proc.stderr
