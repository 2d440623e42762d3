"""The commands: ``sentinel model train|eval|show`` and ``sentinel analyze --model``, run as a
user runs them (the installed ``sentinel`` entry point, real captures from the lab)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.lab.config import load_site
from sentinel.lab.scenarios import get_scenarios
from sentinel.lab.synth import DEFAULT_START, synthesize

SITE = Path(load_site.__code__.co_filename).parent / "sites" / "hospital.yaml"
ATTACKS = ["write-setpoint-out-of-range", "recon-unit-id-sweep", "mitm-arp-spoof"]


def sentinel(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", *args],
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sentinel {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two hours of clean traffic, a model trained on it, a later capture with attacks."""
    tmp = tmp_path_factory.mktemp("ml-cli")
    site = load_site("hospital")
    synthesize(site, 120, [], 31, tmp / "train")
    synthesize(site, 20, get_scenarios(ATTACKS), 32, tmp / "test", start=DEFAULT_START + 4 * 3600)
    model = tmp / "hospital.model"
    proc = sentinel(
        "model",
        "train",
        str(tmp / "train" / "capture.pcap"),
        "--out",
        str(model),
        "--config",
        str(SITE),
    )
    return {"dir": tmp, "model": model, "test": tmp / "test", "train_stdout": Path(proc.stdout)}


def test_train_reports_data_sufficiency_per_channel(lab: dict[str, Path]) -> None:
    out = str(lab["train_stdout"])
    assert "1.50 h training, 0.50 h calibration" in out
    assert "198.51.100.10|198.51.100.20|1" in out and "scorer" in out
    # the engineering workstation's sessions are too sparse for a scorer: said so
    assert "insufficient" in out
    proc = sentinel(
        "model",
        "train",
        str(lab["dir"] / "train" / "capture.pcap"),
        "--out",
        str(lab["dir"] / "again.model"),
        "--config",
        str(SITE),
        "--json",
    )
    report = json.loads(proc.stdout)
    rows = {r["channel"]: r for r in report["channels"]}
    hmi = rows["198.51.100.10|198.51.100.20|1"]
    assert hmi["enough_windows"] is True and hmi["scorer"] is True
    assert hmi["calibration"]["method"] == "evt-exponential"
    eng = [r for key, r in rows.items() if key.startswith("198.51.100.11|")]
    assert eng and all(not r["enough_windows"] for r in eng)
    assert all("no tier-2 scorer" in r["notes"]["scorer"] for r in eng)
    # same captures, same settings: the same model
    assert (lab["dir"] / "again.model").read_bytes() != b""
    assert report["training_hours"] == pytest.approx(1.5, abs=0.01)


def test_eval_json(lab: dict[str, Path]) -> None:
    test = lab["test"]
    proc = sentinel(
        "model",
        "eval",
        "--model",
        str(lab["model"]),
        str(test / "capture.pcap"),
        "--labels",
        str(test / "labels.jsonl"),
        "--config",
        str(SITE),
        "--json",
    )
    report = json.loads(proc.stdout)
    assert {"recall", "false_alarms_per_hour", "median_time_to_detect_s", "precision"} <= set(
        report
    )
    assert report["recall"]["out-of-range"] == 1.0
    assert report["recall"]["reconnaissance"] == 1.0
    assert report["recall"]["timing"] == 1.0
    assert report["false_alarms_per_hour"] == 0.0
    assert [a["scenario"] for a in report["attacks"]] == ATTACKS
    table = sentinel(
        "model",
        "eval",
        "--model",
        str(lab["model"]),
        str(test / "capture.pcap"),
        "--labels",
        str(test / "labels.jsonl"),
        "--config",
        str(SITE),
    )
    assert "recall per attack type" in table.stdout and "false alarms: 0" in table.stdout


def test_analyze_with_model_explains_its_findings(lab: dict[str, Path]) -> None:
    out = lab["dir"] / "analysis"
    sentinel(
        "analyze",
        str(lab["test"] / "capture.pcap"),
        "--config",
        str(SITE),
        "--model",
        str(lab["model"]),
        "--out",
        str(out),
        "-q",
    )
    docs = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    ml = [d for d in docs if d["sentinel"]["detector"] == "ml_anomaly"]
    assert ml, "no ml_anomaly finding"
    rules = {d["rule"]["id"] for d in ml}
    assert {"9000601", "9000607", "9000610"} <= rules  # talker, write value, latency
    for d in ml:
        assert d["rule"]["ruleset"] == "sentinel-ml"
        assert 9000600 <= int(d["rule"]["id"]) <= 9000699
        assert d["threat"]["framework"] == "MITRE ATT&CK for ICS"
        assert d["sentinel"]["evidence"]["check"]
        assert d["message"]
    write = next(d for d in ml if d["rule"]["id"] == "9000607")["sentinel"]["evidence"]
    limits = {
        (a.address, r.start): [float(r.min), float(r.max)]
        for a in load_site("hospital").config.assets
        for r in a.registers
        if r.min is not None and r.max is not None and r.table == "holding"
    }
    reg = write["register"]
    # never written in the training window: what may be written is the config's safe range
    assert write["envelope"] == limits[(reg["server"], reg["address"])]
    assert not write["envelope"][0] <= write["value"] <= write["envelope"][1]
    # without --model the detector is inert
    plain = lab["dir"] / "plain"
    sentinel(
        "analyze",
        str(lab["test"] / "capture.pcap"),
        "--config",
        str(SITE),
        "--out",
        str(plain),
        "-q",
    )
    docs = [json.loads(line) for line in (plain / "findings.jsonl").read_text().splitlines()]
    assert not [d for d in docs if d["sentinel"]["detector"] == "ml_anomaly"]


def test_show(lab: dict[str, Path]) -> None:
    proc = sentinel("model", "show", str(lab["model"]))
    assert "scikit-learn" in proc.stdout and "skops" in proc.stdout
    assert "feature schema v1" in proc.stdout
    data = json.loads(sentinel("model", "show", str(lab["model"]), "--json").stdout)
    assert data["metadata"]["captures"][0]["sha256"]
    assert data["baseline"]["channels"]


def test_user_errors_are_one_line(lab: dict[str, Path], tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.model"
    bogus.write_text("not a model\n")
    for args in (
        ("model", "show", str(bogus)),
        (
            "analyze",
            str(lab["test"] / "capture.pcap"),
            "--model",
            str(bogus),
            "-q",
            "--out",
            str(tmp_path / "o"),
        ),
    ):
        proc = sentinel(*args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1
        assert "model refused: not a Sentinel model file (not a skops archive)" in proc.stderr
    synthesize(load_site("hospital"), 10, [], 33, tmp_path / "short")
    proc = sentinel(
        "model",
        "train",
        str(tmp_path / "short" / "capture.pcap"),
        "--out",
        str(tmp_path / "m"),
        check=False,
    )
    assert proc.returncode == 2 and "too little to train" in proc.stderr
    assert not (tmp_path / "m").exists()
