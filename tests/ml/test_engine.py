"""Tier-1 checks of the scoring engine, one by one, and the explanations they carry.

A model is learned from four hours of a crafted HMI polling a PLC (``helpers.Poller``); each
test continues that traffic and adds one deviation, then asserts the exact rule, and that the
finding's message and evidence name what was observed against what the baseline holds.
"""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.ml import rules as R
from sentinel.ml.engine import Engine
from sentinel.ml.model import Model
from sentinel.ml.scorer import ForestBounds
from sentinel.ml.settings import MLSettings

from .helpers import (
    ENG,
    HMI,
    PLC,
    ROGUE,
    T0,
    Poller,
    anomaly,
    baseline_model,
    by_rule,
    conn,
    engine,
    feed,
    flow,
    request,
)

START = T0 + 5 * 3600  # scoring starts an hour after training ended


@pytest.fixture(scope="module")
def trained() -> Model:
    return baseline_model()[0]


@pytest.fixture
def learned(trained: Model) -> tuple[Model, Poller]:
    """The model, and a fresh HMI (its own PLC state) to continue the traffic with."""
    return trained, Poller()


def warm(model: Model, poller: Poller, seconds: int = 60) -> Engine:
    """An engine that has seen a minute of normal traffic (and raised nothing)."""
    e = engine(model)
    assert feed(e, poller.run(START, seconds)) == []
    return e


def test_normal_traffic_is_silent(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = engine(model)
    assert feed(e, poller.run(START, 3600)) == []
    # every check of the HMI channel was armed by the baseline
    data = model.baseline["channels"][f"{HMI}|{PLC}|1"]
    assert all(data["armed"].values()), data["notes"]


def test_new_talker_is_one_episode_then_another(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    c = conn(ROGUE, PLC, 50000)
    t = START + 61
    found = []
    for i in range(20):  # a rogue master polling for 20 s: one alert
        found += feed(e, [("modbus", request(t + i, c, 3, i, uid="R1", address=0, quantity=4))])
    talkers = by_rule(found)[str(R.NEW_TALKER.sid)]
    assert len(talkers) == 1
    f = talkers[0]
    assert f.detector == "ml_anomaly" and f.technique.id == "T0848"
    assert f.evidence["baseline_clients"] == [HMI]
    assert f.evidence["host_known"] is False
    assert ROGUE in f.message and "never seen before" in f.message
    # back after more than realert_seconds of silence: a new episode
    later = feed(e, [("modbus", request(t + 200, c, 3, 99, uid="R1", address=0, quantity=4))])
    assert [x.rule_id for x in later] == [str(R.NEW_TALKER.sid)]


def test_new_unit(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    msg = request(START + 61, conn(), 3, 500, unit=7, address=0, quantity=1)
    (f,) = feed(e, [("modbus", msg)])
    assert f.rule_id == str(R.NEW_UNIT.sid)
    assert f.evidence["baseline_units"] == [1]
    assert "unit 7" in f.message and "only unit(s) 1" in f.message


def test_unseen_function_names_what_the_channel_uses(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    msg = request(START + 61, conn(), 8, 600, sub_function=4, data=[0])
    found = by_rule(feed(e, [("modbus", msg)]))
    (f,) = found[str(R.NEW_FUNCTION.sid)]
    assert f.evidence["function"] == 8
    assert f.evidence["baseline_functions"] == [1, 3, 4, 6]
    assert f.technique.id == "T0814"  # force listen only: denial of service
    assert "only used 1, 3, 4, 6" in f.message


def test_address_outside_the_learned_set(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    msg = request(START + 61, conn(), 3, 601, address=40, quantity=8)
    found = by_rule(feed(e, [("modbus", msg)]))
    (f,) = found[str(R.NEW_ADDRESS.sid)]
    assert f.evidence["table"] == "holding"
    assert f.evidence["baseline_ranges"] == [[0, 3]]
    assert "holding 40-47" in f.message and "touched 0-3" in f.message
    assert f.technique.id == "T0861"


def test_transition_the_chain_never_saw(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    c, t = conn(), START + 61
    # the usual cycle is input -> holding -> coils; send coils right after input
    events = [
        ("modbus", request(t, c, 4, 700, address=0, quantity=5)),
        ("modbus", request(t + 0.01, c, 1, 701, address=0, quantity=2)),
    ]
    (f,) = feed(e, events)
    assert f.rule_id == str(R.NEW_TRANSITION.sid)
    assert f.evidence["previous"] == "4:0:5" and f.evidence["command"] == "1:0:2"
    assert f.evidence["baseline_successors"] == ["3:0:4"]
    assert f.evidence["command_known"] is True


def test_latency_k_of_n_once_per_episode(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    lat = model.baseline["channels"][f"{HMI}|{PLC}|1"]["latency"]
    slow = Poller(plant=poller.plant, latency=3 * lat["threshold"], tid=poller.tid)
    found = feed(e, slow.run(START + 61, 30))
    latency = by_rule(found)[str(R.LATENCY.sid)]
    assert len(latency) == 1  # one episode while it stays slow
    f = latency[0]
    assert f.technique.id == "T0830"
    assert f.evidence["slow_responses"] >= lat["k"] and f.evidence["of_last"] == lat["n"]
    assert f.evidence["threshold_ms"] == pytest.approx(1000 * lat["threshold"], abs=1e-3)
    assert "longer than" in f.message and "baseline median" in f.message


def test_write_outside_the_safe_envelope_and_unexplained_change(
    learned: tuple[Model, Poller],
) -> None:
    model, poller = learned
    e = warm(model, poller)
    c = conn(ROGUE, PLC, 50001)
    t = START + 61
    write = request(t, c, 6, 1, uid="R2", address=0, values=[300])
    found = by_rule(feed(e, [("modbus", write)]))
    (w,) = found[str(R.WRITE_VALUE.sid)]
    assert w.evidence["value"] == 300 and w.evidence["envelope"] == [180.0, 260.0]
    assert w.evidence["baseline_writer"] is False
    # the HMI then reads the register: the change is attributed to the rogue writer
    poller.plant.holding[0] = 300
    found = by_rule(feed(e, poller.run(t + 1, 3)))
    (p,) = found[str(R.UNEXPLAINED_CHANGE.sid)]
    assert p.evidence["writer"] == ROGUE
    assert p.evidence["baseline_writers"] == [HMI]
    assert "not a baseline writer" in p.message and "to 300" in p.message


def test_changes_by_baseline_writers_are_explained(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = engine(model)
    # the poller writes holding 0 every write_every cycles: 3 writes here, no finding
    quick = Poller(plant=poller.plant, write_every=20, tid=poller.tid)
    assert feed(e, quick.run(START, 70)) == []


def test_change_without_any_write(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    poller.plant.holding[2] = 175  # constant in the baseline, changed behind our back
    found = by_rule(feed(e, poller.run(START + 61, 2)))
    (f,) = found[str(R.UNEXPLAINED_CHANGE.sid)]
    assert f.evidence["register"] == {"server": PLC, "unit": 1, "table": "holding", "address": 2}
    assert f.evidence["writer"] is None and f.evidence["class"] == "constant"
    assert "no write of this value was seen" in f.message
    poller.plant.holding[2] = 150


def test_counter_going_back(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    poller.plant.counter -= 500
    found = by_rule(feed(e, poller.run(START + 61, 2)))
    (f,) = found[str(R.REGISTER_VALUE.sid)]
    assert f.evidence["check"] == "counter" and f.evidence["class"] == "counter"
    assert "went back" in f.message


def test_replay_of_an_identical_write(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    t = START + 61
    first = request(t, conn(), 6, 4242, address=0, values=[200])
    again = request(t + 2, conn(ROGUE, PLC, 50002), 6, 4242, uid="R3", address=0, values=[200])
    assert by_rule(feed(e, [("modbus", first)])).get(str(R.REPLAY.sid)) is None
    found = by_rule(feed(e, [("modbus", again)]))
    (f,) = found[str(R.REPLAY.sid)]
    assert f.evidence["first_sent_by"] == HMI and f.evidence["same_connection"] is False
    assert f.evidence["transaction_id"] == 4242
    assert "identical to one 192.0.2.10 sent 2.0 s earlier" in f.message


def test_anomaly_never_seen_on_the_pair(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    (f,) = e.anomaly(anomaly(START + 61, conn(), "modbus.invalid_length"))
    assert f.rule_id == str(R.NEW_ANOMALY.sid) and f.evidence["anomaly"] == "modbus.invalid_length"
    assert e.anomaly(anomaly(START + 62, conn(), "modbus.invalid_length")) is None  # same episode


def test_connections_new_pair_and_burst(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    t = START + 61
    found = []
    for i in range(40):  # a SYN sweep: 40 connections within a second
        rec = flow(ROGUE, PLC, t + i * 0.01, t + i * 0.01, port=1 + i, sport=60000, state="REJ")
        found += e.flow_end(rec) or []
    rules = by_rule(found)
    (new,) = rules[str(R.NEW_CONNECTION.sid)]
    assert new.evidence["new_pair"] is True and new.evidence["host_known"] is False
    (burst,) = rules[str(R.CONNECTION_BURST.sid)]
    assert burst.evidence["connections"] > burst.evidence["baseline_max_per_window"]
    # the HMI's own connection to the PLC is in the baseline
    assert e.flow_end(flow(HMI, PLC, t, t + 5)) is None
    # a known pair on a port it never used
    (port,) = e.flow_end(flow(ENG, PLC, t, t + 1)) or [None]
    assert port is not None and port.evidence["new_pair"] is True  # ENG never talked to PLC


def test_request_burst_and_server_level_checks(learned: tuple[Model, Poller]) -> None:
    model, poller = learned
    e = warm(model, poller)
    c = conn(ROGUE, PLC, 50003)
    t = START + 61
    events = [
        ("modbus", request(t + i * 0.001, c, 3, i, uid="R4", address=0, quantity=4))
        for i in range(500)
    ]
    events.append(("modbus", request(t + 0.6, c, 43, 600, uid="R4", mei_type=14)))
    rules = by_rule(feed(e, events))
    (burst,) = rules[str(R.REQUEST_BURST.sid)]
    assert burst.evidence["requests"] > 2 * burst.evidence["baseline_max_per_window"] / 10 * 10
    (fn,) = rules[str(R.NEW_FUNCTION.sid)]  # no baseline client ever used FC 43 there
    assert fn.evidence["scope"] == "server" and fn.technique.id == "T0888"
    assert "baseline clients of 192.0.2.20 unit 1 together only used" in fn.message


def test_declared_master_is_no_new_talker_but_is_still_checked() -> None:
    """The config's allowed masters are known talkers even if training never saw them; their
    traffic is checked against the device's clients and their own habits elsewhere."""
    from sentinel.ml.baseline import Learner
    from sentinel.ml.settings import MLTrainSettings

    from .helpers import PLC as PLC1

    plc2 = "192.0.2.21"
    learner = Learner(MLTrainSettings(), T0 + 1800)
    feed(learner, Poller().run(T0, 3600))
    # the engineering workstation worked on the other PLC only: FC 3 reads, FC 16 writes
    c2 = conn(ENG, plc2, 45000)
    for i in range(40):
        t = T0 + 10 + i * 60
        feed(
            learner,
            [
                ("modbus", request(t, c2, 3, 2 * i, uid="E", address=0, quantity=16)),
                (
                    "modbus",
                    request(t + 1, c2, 16, 2 * i + 1, uid="E", address=4, quantity=1, values=[100]),
                ),
            ],
        )
    baseline = learner.build({}, declared={(ENG, PLC1)})
    model, _ = baseline_model(seconds=60)
    model.baseline = baseline
    e = engine(model)
    c = conn(ENG, PLC1, 46000)
    t = START
    ok = [
        ("modbus", request(t, c, 3, 1, uid="E2", address=0, quantity=16)),
        ("modbus", request(t + 1, c, 16, 2, uid="E2", address=4, quantity=1, values=[100])),
    ]
    assert feed(e, ok) == []  # declared, and within what it and the PLC's clients did
    odd = [("modbus", request(t + 2, c, 8, 3, uid="E2", sub_function=1, data=[0]))]
    (f,) = feed(e, odd)
    assert f.rule_id == str(R.NEW_FUNCTION.sid) and f.evidence["scope"] == "server"
    # an undeclared host is still a new talker
    (t2,) = by_rule(
        feed(
            e,
            [
                (
                    "modbus",
                    request(t + 3, conn(ROGUE, PLC1, 1), 3, 1, uid="R", address=0, quantity=16),
                )
            ],
        )
    )[str(R.NEW_TALKER.sid)]
    assert t2.evidence["baseline_clients"] == [HMI]


@pytest.mark.parametrize("hours", [0.5, 24.0])
def test_process_data_constant_needs_a_day_of_training(hours: float) -> None:
    """An input register constant in training (a gas bank selector) that changes: a process
    event worth reporting only once the baseline covers a day; never a provenance finding
    (nobody writes process data)."""
    from sentinel.ml.settings import MLTrainSettings

    s = MLTrainSettings(min_sensor_hours=hours)
    model, poller = baseline_model(seconds=3600, settings=s, poller=Poller(inputs=6))
    spec = model.baseline["registers"][f"{PLC}|1|input|5"]
    assert spec["class"] == "constant" and spec["sensor"] is True
    e = engine(model)
    poller.plant.bank = 2
    found = feed(e, poller.run(START, 5))
    if hours > 1.0:
        assert spec["constant_armed"] is False and "24 h" in spec["note"]
        assert found == []
    else:
        (f,) = found
        assert f.rule_id == str(R.REGISTER_VALUE.sid) and f.evidence["check"] == "constant"
        assert f.evidence["baseline_value"] == 1 and f.evidence["value"] == 2


def test_verified_traffic_takes_the_inline_path_with_the_same_results(
    learned: tuple[Model, Poller],
) -> None:
    """Requests whose transition was verified skip the hooks (the inline path of
    ``Tracker.modbus``): the same findings and windows as when every request goes through
    them (``verify`` disabled): the same counters in the channels' buckets and windows; most
    requests take it."""
    model, poller = learned
    c, t = conn(), START + 301
    threshold = model.baseline["channels"][f"{HMI}|{PLC}|1"]["latency"]["threshold"]
    events = list(poller.run(START, 300))
    events += [  # a transition the chain never saw
        ("modbus", request(t, c, 4, 700, address=0, quantity=5)),
        ("modbus", request(t + 0.01, c, 1, 701, address=0, quantity=2)),
    ]
    events += Poller(plant=poller.plant, latency=3 * threshold, tid=poller.tid).run(t + 1, 30)
    events += Poller(plant=poller.plant, client=ROGUE, uid="C2").run(t + 40, 20)
    events += poller.run(t + 60, 60)
    requests = sum(1 for kind, x in events if kind == "modbus" and x.is_orig)

    class Recording(Engine):
        """Records the windows and counts the requests that go through ``_request`` (a
        subclass: the compiled engine's methods cannot be replaced on an instance)."""

        def __init__(self, verify: bool) -> None:
            super().__init__(model, MLSettings())
            self.verifies = verify
            self.recorded: list[Any] = []
            self.general = 0

        def windows(self, closed: list[Any], t_end: float) -> Any:
            self.recorded.append([(ch.key, list(raw)) for ch, raw in closed])
            return super().windows(closed, t_end)

        def _request(self, *args: Any) -> Any:
            self.general += 1
            return super()._request(*args)

        def verify(self, c: Any) -> None:
            if self.verifies:
                super().verify(c)

    def run(verify: bool) -> tuple[list[Any], list[Any], dict[Any, list[float]], int]:
        e = Recording(verify)
        found = [(f.ts, f.rule_id, f.message, f.evidence) for f in feed(e, events)]
        buckets = {key: ch.bucket.counters() for key, ch in e.channels.items()}
        return found, e.recorded, buckets, e.general

    found, windows, buckets, general = run(verify=True)
    found_all, windows_all, buckets_all, general_all = run(verify=False)
    assert {f[1] for f in found} >= {
        str(R.NEW_TRANSITION.sid),
        str(R.LATENCY.sid),
        str(R.NEW_TALKER.sid),
    }
    assert found == found_all
    assert windows == windows_all and buckets == buckets_all
    assert general_all == requests and general < requests / 10


def test_bounded_channels(learned: tuple[Model, Poller]) -> None:
    model, _ = learned
    e = engine(model, max_channels=16)
    for i in range(40):
        c = conn(f"198.51.100.{i}", PLC, 40000 + i)
        e.modbus(request(START + i, c, 3, 1, uid=f"X{i}", address=0, quantity=1))
    assert len(e.channels) == 16
    assert e.stats["channels_untracked"] == 24


@pytest.mark.parametrize("margin", [-0.01, 0.046, None])
def test_windows_decided_by_the_bounds_as_by_the_scores(margin: float | None) -> None:
    """Windows are decided without the isolation forest when its threshold is below every
    score it can give (``ForestBounds.floor``) or below the bound of the window's score
    (``ForestBounds.lower``), and scored only to explain a finding: same findings, same
    evidence, as scoring every window."""
    model, poller = baseline_model(seconds=2 * 3600, scorers=True)
    if margin is not None:  # the threshold this far above the lowest score possible
        for scorer in model.scorers.values():
            scorer.threshold_ = ForestBounds(scorer.estimator_).floor + margin
    fast, full = engine(model), engine(model)
    assert fast.runtimes
    assert all(rt.decides is (margin != -0.01) for rt in fast.runtimes.values())
    for rt in full.runtimes.values():
        rt.decides, rt.bounds = True, None
    events = list(poller.run(START, 300))
    poller.latency *= 20  # a man in the middle: every answer twenty times slower
    events += list(poller.run(START + 300, 300))
    found = feed(fast, events)
    assert [(f.rule_id, f.ts, f.message, f.evidence) for f in found] == [
        (f.rule_id, f.ts, f.message, f.evidence) for f in feed(full, events)
    ]
    assert by_rule(found)[str(R.WINDOW.sid)]
    windows = full.stats["windows_scored"]
    assert full.stats["windows_bounded"] == 0 and windows > 50
    if margin == 0.046:  # the windows' bounds are 0.038-0.049 above the floor: some, not all
        assert 0 < fast.stats["windows_scored"] < windows
    else:
        assert fast.stats["windows_scored"] == (0 if margin == -0.01 else windows)
    assert fast.stats["windows_scored"] + fast.stats["windows_bounded"] == windows
