"""Feature extraction: the raw window counters, the ``WindowFeatures`` transformer, and the
per-window fast path of the engine that must compute exactly the same features."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sklearn.base import clone

from sentinel.ml.baseline import Learner
from sentinel.ml.engine import Engine, ScorerRuntime
from sentinel.ml.features import FEATURES, NFEAT, SCHEMA, WindowFeatures
from sentinel.ml.scorer import WindowScorer
from sentinel.ml.settings import MLTrainSettings
from sentinel.ml.window import (
    ADDR_HI,
    ADDR_LO,
    MAX_IA,
    N_CHG,
    N_EXC,
    N_IA,
    N_LAT,
    N_OTHER,
    N_REQ,
    N_RESP,
    N_VAL,
    N_WRITE,
    NRAW,
    RAW,
    S_IA,
    S_IA2,
    S_LAT,
    Bucket,
    combine,
)

from .helpers import T0, Poller, baseline_model, feed


def raw(**values: float) -> list[float]:
    b = Bucket().counters()
    for name, v in values.items():
        b[RAW.index(name)] = v
    return b


def typical(n: int = 50, seed: int = 0) -> np.ndarray:
    """Windows of an HMI polling 4 commands a second for 10 s."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ia = [1.0 + rng.gauss(0, 0.003) for _ in range(36)]
        lat = [0.0006 + rng.gauss(0, 0.0001) for _ in range(40)]
        rows.append(
            raw(
                n_req=40,
                n_resp=40,
                n_ia=36,
                sum_ia=sum(ia),
                sum_ia2=sum(x * x for x in ia),
                max_ia=max(ia),
                n_lat=40,
                sum_lat=sum(lat),
                max_lat=max(lat),
                addr_lo=0,
                addr_hi=8,
                n_reads=30,
                n_changed=rng.randint(8, 12),
            )
        )
    return np.array(rows)


def test_schema_lists_every_column() -> None:
    assert SCHEMA["raw"] == list(RAW) and len(RAW) == NRAW
    assert SCHEMA["features"] == list(FEATURES) and len(FEATURES) == NFEAT


def test_bucket_counters_follow_raw_order_and_complete_the_counts() -> None:
    b = Bucket()
    for i, name in enumerate(RAW):  # every column of RAW is a counter of the open bucket
        setattr(b, name, float(i + 1))
    expected = [float(i + 1) for i in range(NRAW)]
    # what the hot path leaves to the close: requests (not writes) and responses added
    expected[N_IA] += expected[N_REQ] - expected[N_WRITE]
    expected[N_LAT] += expected[N_RESP]
    expected[N_VAL] += expected[N_RESP]
    assert b.counters() == expected
    empty = Bucket().counters()
    assert empty[N_REQ] == 0 and empty[ADDR_LO] > empty[ADDR_HI]  # no address seen yet


def test_combine_sums_counts_and_keeps_extremes() -> None:
    a = raw(n_req=3, max_ia=1.0, addr_lo=10, addr_hi=12, sum_lat=0.1)
    b = raw(n_req=4, max_ia=2.0, addr_lo=5, addr_hi=8, sum_lat=0.2)
    w = combine([a, b])
    assert w[N_REQ] == 7 and w[MAX_IA] == 2.0 and w[ADDR_LO] == 5 and w[ADDR_HI] == 12
    assert w[S_LAT] == pytest.approx(0.3)


def test_transformer_contract_and_values() -> None:
    X = typical()
    wf = WindowFeatures(window_seconds=10.0)
    assert wf.get_params() == {"window_seconds": 10.0}
    assert clone(wf).get_params() == wf.get_params()
    assert wf.fit(X) is wf
    assert wf.ref_ia_ == pytest.approx(1.0, abs=0.01)
    assert wf.ref_lat_ == pytest.approx(0.0006, rel=0.1)
    F = wf.transform(X)
    assert F.shape == (len(X), NFEAT) and np.all(np.isfinite(F))
    assert list(wf.get_feature_names_out()) == list(FEATURES)
    # a hand-computed window
    w = raw(
        n_req=20,
        n_resp=10,
        n_write=2,
        n_other=4,
        n_exc=5,
        n_ia=2,
        sum_ia=4.0,
        sum_ia2=10.0,
        max_ia=3.0,
        n_lat=10,
        sum_lat=10 * 2 * wf.ref_lat_,
        max_lat=4 * wf.ref_lat_,
        addr_lo=100,
        addr_hi=103,
        n_reads=8,
        n_changed=2,
    )
    f = dict(zip(FEATURES, wf.transform([w])[0], strict=True))
    assert f["req_rate"] == 2.0
    assert (f["resp_ratio"], f["write_ratio"], f["other_ratio"]) == (0.5, 0.1, 0.2)
    assert f["exc_ratio"] == 0.5
    assert f["ia_mean"] == pytest.approx(math.log(2.0 / wf.ref_ia_))
    assert f["ia_cv"] == pytest.approx(math.sqrt(5.0 - 4.0) / 2.0)
    assert f["ia_max"] == pytest.approx(math.log(3.0 / wf.ref_ia_))
    assert f["lat_mean"] == pytest.approx(math.log(2.0))
    assert f["lat_max"] == pytest.approx(math.log(4.0))
    assert f["addr_span"] == pytest.approx(math.log1p(3))
    assert f["change_ratio"] == 0.25


def test_empty_window_is_as_usual_but_for_its_rate() -> None:
    wf = WindowFeatures(10.0).fit(typical())
    F = wf.transform([Bucket().counters()])[0]
    assert F[0] == 0.0  # no requests
    assert np.allclose(F[1:], wf.fill_[1:])  # everything undefined takes the median
    assert wf.describe(0, 4.0) == "4.00 requests/s"
    assert wf.describe(FEATURES.index("lat_mean"), 0.0).endswith(" ms")
    assert wf.describe(FEATURES.index("exc_ratio"), 0.25) == "25.0 %"


def test_transformer_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="raw window counters"):
        WindowFeatures().fit(np.zeros((3, NRAW + 1)))


def test_engine_fast_path_computes_the_same_features() -> None:
    X = typical(200, seed=1)
    scorer = WindowScorer(window_seconds=10.0).fit(X)
    rt = ScorerRuntime("a|b|1", scorer, 0, 10.0, 2)
    rng = random.Random(5)
    cases = [Bucket().counters(), raw(n_req=5), raw(n_req=1, n_ia=1, sum_ia=0.5, sum_ia2=0.25)]
    for _ in range(300):
        w = list(X[rng.randrange(len(X))])
        for i in (N_REQ, N_RESP, N_WRITE, N_OTHER, N_EXC, N_IA, N_LAT, N_VAL, N_CHG):
            if rng.random() < 0.2:
                w[i] = float(rng.randint(0, 60))
        w[S_IA] *= rng.uniform(0.1, 10)
        w[S_IA2] *= rng.uniform(0.1, 10)
        w[S_LAT] *= rng.uniform(0.1, 10)
        cases.append(w)
    expected = scorer.transform_features(np.array(cases))
    for w, e in zip(cases, expected, strict=True):
        assert rt.features(w) == pytest.approx(list(e), rel=1e-12, abs=1e-12)


def test_training_and_scoring_count_the_same_windows() -> None:
    """Learner and Engine share the tracker: the same traffic, the same raw windows."""
    model, _ = baseline_model(seconds=1800, scorers=True)
    s = MLTrainSettings()
    learner = Learner(s, T0)
    seen: list[tuple[float, list[float]]] = []

    class Spy(Engine):
        def windows(self, closed, t_end):  # type: ignore[no-untyped-def]
            seen.extend((t_end, list(raw)) for _ch, raw in closed)
            return None

    engine = Spy(model)
    events = list(Poller(write_every=7).run(T0 + 7200, 600))
    feed(learner, events)
    feed(engine, events)
    (lc,) = learner.learn.values()
    assert len(seen) == len(lc.windows) > 50
    assert [w for _t, w in seen] == lc.windows
    assert [t for t, _w in seen] == lc.window_ends
