"""``model.retrain``: the scheduler's job wired to ``sentinel.ml.retrain.run_retrain``.

Real captures (the lab's synthetic hospital traffic), the real ``sentinel jobs run`` and the
real ``sentinel analyze --model`` that loads what the job wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from sentinel.config import Config
from sentinel.lab.config import load_site
from sentinel.lab.labels import read_labels
from sentinel.lab.scenarios import load_scenarios
from sentinel.lab.synth import DEFAULT_START, synthesize
from sentinel.schedule.jobs import JobContext, run_job
from sentinel.schedule.settings import RetrainJob

WINDOW = {
    "start": "2024-05-06T08:00:00Z",  # DEFAULT_START of the synthetic captures
    "end": "2024-05-06T08:15:00Z",
    "approved_by": "alice (ward engineer)",
}
# A 20-minute capture trains in seconds once calibration may be short.
TRAIN = {"min_calibration_minutes": 0, "min_windows": 10}


def _sentinel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def _site_data() -> dict[str, Any]:
    data = load_site("hospital").config.model_dump(exclude={"lab"}, exclude_defaults=True)
    data.pop("jobs", None)
    return data


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("normal")
    synthesize(load_site("hospital"), 20, [], 5, out)
    return out / "capture.pcap"


def test_retrain_job_writes_a_model_that_analyze_loads(capture: Path, tmp_path: Path) -> None:
    env = {**os.environ, "SENTINEL_STATE": str(tmp_path / "state")}
    model = tmp_path / "models" / "hospital.model"
    data = _site_data()
    data["detectors"] = {"ml": {"model": str(model), "train": TRAIN}}
    # Opt-in: without a model.retrain job in the config, nothing retrains.
    plain = _write(tmp_path / "plain.yaml", data)
    proc = _sentinel("jobs", "run", "retrain", "--config", str(plain), env=env)
    assert proc.returncode == 2 and "no job 'retrain' in the config" in proc.stderr
    data["jobs"] = {
        "retrain": {
            "type": "model.retrain",
            "cron": "0 3 * * 0",
            "windows": [WINDOW],
            "options": {"captures": [str(capture.parent)]},
        }
    }
    config = _write(tmp_path / "config.yaml", data)

    # Dry run: the report of what would be done, and nothing written.
    proc = _sentinel(
        "jobs", "run", "retrain", "--config", str(config), "--dry-run", "--json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    dry = json.loads(proc.stdout)
    assert dry["status"] == "dry_run" and dry["detail"]["dry_run"] is True
    assert not model.parent.exists()
    assert not (tmp_path / "state" / "jobs" / "retrain.last.json").exists()

    proc = _sentinel("jobs", "run", "retrain", "--config", str(config), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    detail = done["detail"]
    assert done["status"] == "ok" and detail["model"] == str(model) and model.exists()
    start, end = DEFAULT_START, DEFAULT_START + 900
    assert detail["windows"] == [
        {"start": start, "end": end, "approved_by": "alice (ward engineer)"}
    ]
    # Only the approved quarter of hour was learned: training and calibration lie inside it,
    # and fewer packets than the capture holds.
    assert start <= detail["training_window"][0] < detail["calibration_window"][1] <= end
    assert 0 < detail["packets"] == dry["detail"]["packets"]
    from sentinel.ml.train import capture_info

    assert detail["packets"] < capture_info(str(capture)).packets
    from sentinel.ml.persist import load_model

    assert load_model(model).metadata["approved_windows"] == [[start, end]]
    last = json.loads((tmp_path / "state" / "jobs" / "retrain.last.json").read_text())
    assert last["status"] == "ok" and last["detail"]["model"] == str(model)

    # `sentinel analyze --model` loads it and scores with it: an unauthorized write in new
    # traffic becomes learned-baseline findings (detector ml_anomaly) about the attacker.
    attack = tmp_path / "attack"
    synthesize(load_site("hospital"), 3, [load_scenarios()["write-setpoint-in-range"]], 7, attack)
    attacker = read_labels(attack / "labels.jsonl")[0].attacker
    del data["detectors"], data["jobs"]
    analyze_config = _write(tmp_path / "analyze.yaml", data)
    out = tmp_path / "analyzed"
    proc = _sentinel(
        "analyze",
        str(attack / "capture.pcap"),
        "--model",
        str(model),
        "--config",
        str(analyze_config),
        "--out",
        str(out),
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    found = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    learned = [f for f in found if f["sentinel"]["detector"] == "ml_anomaly"]
    assert learned and all(9000600 <= int(f["rule"]["id"]) <= 9000699 for f in learned)
    assert any(attacker in f["related"]["ip"] for f in learned)

    # A second run keeps a copy of the model it replaces.
    first = model.read_bytes()
    proc = _sentinel("jobs", "run", "retrain", "--config", str(config), "--json", env=env)
    again = json.loads(proc.stdout)["detail"]
    assert Path(again["previous"]).read_bytes() == first and model.exists()


def _job(windows: list[dict[str, Any]], out: Path, capture: Path, **kw: Any) -> RetrainJob:
    return RetrainJob(
        type="model.retrain",
        windows=windows,
        options={"captures": [str(capture)], "out": str(out)},
        **kw,
    )


def _ctx(tmp_path: Path, **kw: Any) -> JobContext:
    config = Config.model_validate({"detectors": {"ml": {"train": TRAIN}}})
    return JobContext(config, tmp_path / "state", **kw)


def test_retrain_refuses_windows_that_are_not_approved(capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.model"
    # Approval names who approved: missing or blank is an invalid config.
    for who in ({}, {"approved_by": ""}, {"approved_by": "   "}):
        window = {"start": WINDOW["start"], "end": WINDOW["end"], **who}
        with pytest.raises(ValidationError, match="approved_by"):
            _job([window], out, capture)
    with pytest.raises(ValidationError, match="windows"):
        _job([], out, capture)
    # A window still open (it ends after the run) vouches for traffic nobody has seen.
    tomorrow = datetime.fromtimestamp(time.time() + 86400, UTC).isoformat()
    future = {"start": WINDOW["start"], "end": tomorrow, "approved_by": "bob"}
    result = run_job("ml", _job([WINDOW, future], out, capture), _ctx(tmp_path))
    assert result.status == "refused"
    assert "approved window has not ended yet" in result.messages[0]
    # ... and so does one that ends after the job's clock, whatever the wall clock says.
    result = run_job(
        "ml", _job([WINDOW], out, capture), _ctx(tmp_path, now=lambda: DEFAULT_START + 600.0)
    )
    assert result.status == "refused" and "has not ended yet" in result.messages[0]
    # Approved, but no packet of the captures falls inside it.
    old = {"start": "2023-01-01T00:00:00Z", "end": "2023-01-02T00:00:00Z", "approved_by": "bob"}
    result = run_job("ml", _job([old], out, capture), _ctx(tmp_path))
    assert result.status == "refused"
    assert result.messages == ["no captured packet falls inside the approved windows"]
    backwards = {"start": WINDOW["end"], "end": WINDOW["start"], "approved_by": "bob"}
    result = run_job("ml", _job([backwards], out, capture), _ctx(tmp_path))
    assert result.status == "refused" and "ends before it starts" in result.messages[0]
    assert not out.exists()


def test_retrain_dry_run_of_the_job_itself_writes_nothing(capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.model"
    out.write_bytes(b"the current model")
    result = run_job("ml", _job([WINDOW], out, capture, dry_run=True), _ctx(tmp_path))
    assert result.status == "dry_run" and result.detail["dry_run"] is True
    assert result.detail["captures"] == ["capture.pcap"] and result.detail["packets"] > 0
    assert out.read_bytes() == b"the current model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.model"]
