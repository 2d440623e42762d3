"""The tier-2 scorer: scikit-learn's estimator contract, calibration, explanations, and the
fast scoring paths (which must agree with scikit-learn exactly)."""

from __future__ import annotations

from array import array

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from sentinel.ml.features import FEATURES
from sentinel.ml.scorer import (
    ESTIMATORS,
    CompiledForest,
    ForestBounds,
    WindowScorer,
    evt_threshold,
    fast_score_samples,
    forest_bounds,
    validate_forest,
)
from sentinel.ml.window import N_EXC, N_REQ, N_RESP, S_LAT

from .test_features import typical


def anomalous(X: np.ndarray) -> np.ndarray:
    """Windows of the same channel under attack: slow answers, many exceptions, a flood."""
    bad = X[:3].copy()
    bad[0, S_LAT] *= 5  # five times slower
    bad[1, N_EXC] = bad[1, N_RESP]  # every answer an exception
    bad[2, N_REQ] *= 40  # a flood
    return bad


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimator_contract(estimator: str) -> None:
    X = typical(400)
    params = {"estimator": estimator, "random_state": 3, "n_estimators": 50}
    scorer = WindowScorer(**params)
    assert scorer.get_params()["estimator"] == estimator
    assert not hasattr(scorer, "estimator_")  # __init__ only stores hyper-parameters
    twin = clone(scorer)
    assert twin.get_params() == scorer.get_params()
    assert scorer.fit(X) is scorer
    scores = scorer.score_samples(X)
    assert scores.shape == (len(X),) and np.all(np.isfinite(scores))
    assert np.allclose(scorer.decision_function(X), scores - scorer.threshold_)
    assert np.array_equal(twin.fit(X).score_samples(X), scores)  # deterministic
    assert scorer.threshold_ == scorer.estimator_.offset_  # scikit-learn's until calibrated
    scorer.calibrate(typical(100, seed=9), target_per_hour=1 / 24, windows_per_hour=360)
    pred = scorer.predict(np.vstack([X, anomalous(X)]))
    assert set(pred) <= {-1, 1}
    assert (pred[: len(X)] == 1).all()
    assert list(pred[len(X) :]) == [-1, -1, -1]
    assert scorer.set_params(margin=1.0).margin == 1.0


def test_unknown_estimator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown estimator"):
        WindowScorer(estimator="svm").fit(typical())


def test_calibration_sets_the_threshold_from_clean_windows() -> None:
    X, C = typical(400, seed=1), typical(300, seed=2)
    scorer = WindowScorer(random_state=0).fit(X)
    scorer.calibrate(C, target_per_hour=1 / 24, windows_per_hour=360)
    strict = scorer.threshold_
    assert scorer.calibration_["method"] == "evt-exponential"
    assert strict < scorer.score_samples(C).min()  # one window a day: beyond an hour's data
    assert (scorer.predict(C) == 1).all()
    scorer.calibrate(C, target_per_hour=60, windows_per_hour=360)  # a sixth of the windows
    assert scorer.threshold_ > strict
    assert scorer.calibration_["method"] == "quantile"
    assert (scorer.score_samples(C) < scorer.threshold_).mean() == pytest.approx(1 / 6, abs=0.02)
    with pytest.raises(ValueError, match="calibration windows"):
        scorer.calibrate(C[:10], 1.0, 360)


def test_evt_extrapolates_an_exponential_tail() -> None:
    rng = np.random.default_rng(0)
    scores = -rng.exponential(1.0, 20000)  # P(s < -y) = exp(-y)
    for p in (1e-3, 1e-5):
        t, info = evt_threshold(scores, p)
        assert t == pytest.approx(np.log(p), rel=0.05), info


def test_explanation_names_the_deviating_feature() -> None:
    X = typical(400)
    scorer = WindowScorer().fit(X)
    w = X[0].copy()
    w[N_EXC] = w[N_RESP]
    first, *rest = scorer.explain(w, top=3)
    assert first["feature"] == "exc_ratio" and first["outside_envelope"] is True
    assert first["observed"] == "100.0 %" and first["baseline"] == "0.0 %"
    assert first["range"] == ["0.0 %", "0.0 %"]
    assert len(rest) == 2 and all(r["feature"] in FEATURES for r in rest)
    slow = X[1].copy()
    slow[S_LAT] *= 4
    top = scorer.explain(slow, top=1)[0]
    assert top["feature"] == "lat_mean" and top["observed"].endswith(" ms")
    assert top["value"] == pytest.approx(np.log(4), abs=0.3)  # four times the baseline


def test_compiled_forest_equals_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    forests = []
    for seed, samples in ((0, 256), (1, 64), (2, 100)):
        X = np.round(rng.normal(size=(500, 12)), 1)
        X[:, 3] = 0.0  # a constant feature, and many duplicates
        forests.append(
            IsolationForest(n_estimators=40, max_samples=samples, random_state=seed).fit(X)
        )
    compiled = CompiledForest(forests)
    T = np.vstack([np.round(rng.normal(size=(200, 12)) * 2, 1), np.zeros((5, 12))])
    rows = rng.integers(0, 3, len(T))
    expected = np.array([forests[r].score_samples(T[i : i + 1])[0] for i, r in enumerate(rows)])
    assert np.allclose(compiled.score(rows, T), expected, rtol=0, atol=1e-12)


def test_forest_bounds_are_lower_bounds_of_scikit_learn() -> None:
    rng = np.random.default_rng(7)
    for seed, samples, features in ((0, 256, 1.0), (1, 64, 1.0), (2, 16, 1.0), (3, 100, 0.5)):
        X = np.round(rng.normal(size=(400, 12)), 1)
        X[:, 3] = 0.0
        forest = IsolationForest(
            n_estimators=50, max_samples=samples, max_features=features, random_state=seed
        ).fit(X)
        bounds = ForestBounds(forest)
        T = np.vstack(
            [
                rng.normal(size=(500, 12)) * 3,
                rng.normal(size=(50, 12)) * 1e3,  # far outside: the shortest paths
                np.eye(12) * -1e6,
                np.eye(12) * 1e6,
                X[:50],
            ]
        )
        scores = forest.score_samples(T)
        lower = np.array([bounds.lower(row) for row in T.tolist()])
        assert -1.0 <= bounds.floor <= lower.min()
        assert np.all(lower <= scores)
        assert bounds.floor > scores.min() - 0.1  # bounds that are not vacuous
        assert np.mean(scores - lower) < np.mean(scores - bounds.floor)
        # ``lower`` by feature (bisection of the sorted thresholds) is the roots' sum, tree by
        # tree, also at the thresholds themselves and for NaN (right, as a failed <=)
        T[:20, :] = np.nan
        for i, (f, t, _lo, _hi) in enumerate(bounds.roots[:100]):
            if t != np.inf:
                T[20 + i, f] = t
        for row in T.tolist():
            x = array("f", row).tolist()
            depth = sum(lo if x[f] <= t else hi for f, t, lo, hi in bounds.roots)
            assert bounds.lower(row) == pytest.approx(bounds._score(depth), rel=0, abs=1e-12)


def test_fast_paths_of_the_other_estimators() -> None:
    rng = np.random.default_rng(5)
    X = np.round(rng.normal(size=(600, 12)), 2)
    T = rng.normal(size=(40, 12)) * 1.5
    lof = LocalOutlierFactor(n_neighbors=20, novelty=True, algorithm="brute").fit(X)
    ee = EllipticEnvelope(random_state=0).fit(X)
    for est in (lof, ee):
        assert np.allclose(fast_score_samples(est, T), est.score_samples(T), atol=1e-9)
        assert forest_bounds(est) is None  # no bounds: their windows are always scored


def test_corrupted_trees_are_refused() -> None:
    X = np.random.default_rng(6).normal(size=(300, 12))
    forest = IsolationForest(n_estimators=5, random_state=0).fit(X)
    validate_forest(forest)
    tree = forest.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    internal = np.flatnonzero(nodes["left_child"] != -1)[0]
    nodes["left_child"][internal] = 10_000_000  # points far outside the node array
    state["nodes"] = nodes
    tree.__setstate__(state)
    with pytest.raises(ValueError, match="child index"):
        validate_forest(forest)
    forest = IsolationForest(n_estimators=5, random_state=0).fit(X)
    tree = forest.estimators_[1].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["feature"][np.flatnonzero(nodes["left_child"] != -1)[0]] = 99
    state["nodes"] = nodes
    tree.__setstate__(state)
    with pytest.raises(ValueError, match="feature index"):
        validate_forest(forest)
