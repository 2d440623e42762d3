"""Training: the time-ordered split, and calibration disarming what fires on clean data."""

from __future__ import annotations

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
