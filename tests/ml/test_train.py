"""Training: the time-ordered split, and calibration disarming what fires on clean data."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.errors import SentinelError
from sentinel.ml import rules as R
from sentinel.ml.settings import MLTrainSettings
from sentinel.ml.train import CaptureInfo, disarm, plan

from .helpers import ENG, HMI, PLC, ROGUE, T0, Poller, baseline_model, by_rule, conn, engine, feed
from .helpers import request as req


def info(path: str, first: float, last: float) -> CaptureInfo:
    return CaptureInfo(path, first, last, 100, "0" * 64)


def test_time_ordered_split() -> None:
    s = MLTrainSettings()
    start, split, end = plan([info("b", T0 + 3600, T0 + 5 * 3600), info("a", T0, T0 + 3600)], s)
    assert (start, end) == (T0, T0 + 5 * 3600)
    assert split == pytest.approx(T0 + 4 * 3600)  # the last fifth calibrates
    # at least min_calibration_minutes
    _, split, end = plan([info("a", T0, T0 + 7200)], s)
    assert end - split == 1800
    with pytest.raises(SentinelError, match="overlap in time"):
        plan([info("a", T0, T0 + 3600), info("b", T0 + 1800, T0 + 7200)], s)
    with pytest.raises(SentinelError, match="too little to train"):
        plan([info("a", T0, T0 + 1200)], s)


def test_calibration_disarms_what_fires_on_clean_traffic() -> None:
    model, _ = baseline_model(seconds=3600)
    model.baseline["declared"] = [f"{ENG}|{PLC}"]  # the config allows the workstation
    e = engine(model)
    t = T0 + 4000
    c, eng = conn(), conn(ENG, PLC, 41000)
    events = list(Poller().run(t, 30))
    events += [
        # on the HMI channel: a function it never used (and so a new transition)
        ("modbus", req(t + 31, c, 8, 900, sub_function=0, data=[0])),
        # a declared master the training never saw, with a function no client used there
        ("modbus", req(t + 32, eng, 43, 1, uid="E1", mei_type=14)),
        # and a host nobody declared
        ("modbus", req(t + 33, conn(ROGUE, PLC, 1), 3, 1, uid="R1", address=0, quantity=4)),
    ]
    found = feed(e, events)
    assert {R.NEW_FUNCTION.rule_id, R.NEW_TALKER.rule_id} <= set(by_rule(found))
    disarmed, warnings = disarm(model, found)
    scopes = {(d["scope"], d["check"]) for d in disarmed}
    assert ("channel", "function") in scopes and ("server", "function") in scopes
    assert any("never seen with this server" in w for w in warnings)  # the new talker
    hmi = model.baseline["channels"][f"{HMI}|{PLC}|1"]
    assert hmi["armed"]["function"] is False
    assert hmi["notes"]["function"].startswith("disarmed by calibration: 1 alarm")
    assert model.baseline["servers"][f"{PLC}|1"]["armed"]["function"] is False
    # a fresh engine on the disarmed model no longer raises those checks
    again = by_rule(feed(engine(model), events))
    assert R.NEW_FUNCTION.rule_id not in again


def test_retrain_from_approved_windows_only(tmp_path: Path) -> None:
    """The scheduler's ``model.retrain``: only traffic inside approved windows is learned."""
    from sentinel.lab.config import load_site
    from sentinel.lab.synth import DEFAULT_START, synthesize
    from sentinel.ml.persist import load_model
    from sentinel.ml.retrain import run_retrain

    site = load_site("hospital")
    synthesize(site, 150, [], 41, tmp_path / "cap")
    # two approved slices of the capture; the 5 minutes between them are never learned
    approved = [
        {"start": DEFAULT_START, "end": DEFAULT_START + 4200, "approved_by": "ops"},
        {"start": "2024-05-06T09:15:00Z", "end": "2024-05-06T10:30:00Z", "approved_by": "ops"},
    ]
    out = tmp_path / "m.model"
    dry = run_retrain(
        site.config, approved, {"captures": [str(tmp_path / "cap")], "out": out}, dry_run=True
    )
    assert dry["dry_run"] is True and not out.exists()
    assert dry["captures"] == ["capture.pcap"] and dry["windows"][1]["approved_by"] == "ops"
    done = run_retrain(site.config, approved, {"captures": [str(tmp_path / "cap")], "out": out})
    assert out.exists() and done["scorers"] >= 1 and "previous" not in done
    model = load_model(out)
    assert model.metadata["approved_windows"][0] == [DEFAULT_START, DEFAULT_START + 4200]
    again = run_retrain(site.config, approved, {"captures": [str(tmp_path / "cap")], "out": out})
    assert Path(again["previous"]).exists()
    with pytest.raises(SentinelError, match="no captured packet"):
        run_retrain(
            site.config,
            [{"start": 0, "end": 10, "approved_by": "x"}],
            {"captures": [str(tmp_path / "cap")], "out": out},
        )
