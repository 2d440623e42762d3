"""The shipped demo capture: small, labelled, reproducible, and Sentinel catches it."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from sentinel.lab.labels import read_labels

from .conftest import analyze, sentinel, sentinel_config

PCAPS = Path(str(resources.files("sentinel.lab") / "pcaps"))
# How lab/pcaps/demo.pcap was made (lab/pcaps/README.md says the same).
DEMO_ARGS = (
    "--site",
    "hospital",
    "--minutes",
    "4",
    "--seed",
    "7",
    "--scenarios",
    "recon-function-code-sweep,write-setpoint-out-of-range,diag-force-listen-only",
)


def test_demo_is_small_and_labelled() -> None:
    assert (PCAPS / "demo.pcap").stat().st_size < 2 * 1024 * 1024
    labels = read_labels(PCAPS / "demo.labels.jsonl")
    assert len(labels) == 3
    run = json.loads((PCAPS / "demo.run.json").read_text())
    assert run["site"] == "hospital" and run["start"] <= labels[0].start


def test_demo_regenerates_identically(tmp_path: Path) -> None:
    sentinel("lab", "synth", *DEMO_ARGS, "--out", str(tmp_path))
    assert (tmp_path / "capture.pcap").read_bytes() == (PCAPS / "demo.pcap").read_bytes()
    assert (tmp_path / "labels.jsonl").read_bytes() == (PCAPS / "demo.labels.jsonl").read_bytes()


def test_demo_attacks_are_detected(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = analyze(PCAPS / "demo.pcap", out, sentinel_config("hospital", tmp_path))
    assert stats["findings"] > 0
    proc = sentinel("lab", "score", str(out), str(PCAPS / "demo.labels.jsonl"), "--json")
    report = json.loads(proc.stdout)
    assert all(s["detected"] for s in report["scenarios"]), report
    assert report["false_positives"] == 0
