"""Tier 2: the scikit-learn scorer of a channel's windows, its calibration and explanations.

``WindowScorer`` follows scikit-learn's estimator contract: hyper-parameters in ``__init__``,
``fit(X)``, ``score_samples(X)`` (higher is more normal), ``decision_function(X)`` (negative is
anomalous) and ``predict(X)`` (-1 anomalous, 1 normal). ``X`` holds raw window counters (see
``sentinel.ml.window``); the scorer's own ``WindowFeatures`` turns them into features, a
``RobustScaler`` centres them on the channel's median, and the estimator scores them:
IsolationForest (default), LocalOutlierFactor(novelty=True) or EllipticEnvelope (robust
covariance, MCD).

A window is anomalous when its score is below ``threshold_`` *or* a feature leaves its
*envelope* (the learned range widened by ``margin`` times its width, at least ``MIN_MARGIN``):
an isolation forest never splits on a feature that was constant in training, so a window
whose exception ratio jumps from a constant 0 would otherwise go unseen.

``calibrate(X, target_per_hour, windows_per_hour)`` sets ``threshold_`` from a *separate clean*
window, never from attacks: the lower tail of the calibration scores is modelled as
exponential (peaks over threshold, the Gumbel domain, as in SPOT, Siffer et al., KDD 2017),
and the threshold is the score that one window in ``windows_per_hour / target_per_hour``
falls below. Envelopes are widened to contain every calibration window.

``CompiledForest`` evaluates the isolation forests of many channels in one vectorised pass
with numpy; it gives exactly ``IsolationForest.score_samples`` (tested) at a fraction of the
cost, which is what keeps scoring inside the pipeline's budget.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import RobustScaler
from sklearn.utils.validation import check_is_fitted

from sentinel.ml.features import FEATURES, MIN_MARGIN, NFEAT, WindowFeatures
from sentinel.ml.window import N_REQ

ESTIMATORS = ("isolation_forest", "local_outlier_factor", "robust_covariance")
EVT_TAIL = 0.1  # fraction of calibration scores whose tail is modelled
MIN_CALIBRATION_WINDOWS = 50


class WindowScorer(OutlierMixin, BaseEstimator):
    """Anomaly scorer of one channel's windows.

    Parameters
    ----------
    estimator : {"isolation_forest", "local_outlier_factor", "robust_covariance"}
    n_estimators, max_samples : IsolationForest's.
    n_neighbors : LocalOutlierFactor's.
    random_state : int
    window_seconds : float
        The windows' length (rates are per second).
    margin : float
        Envelopes are the learned range of each feature widened by ``margin`` times its width
        on each side (at least ``MIN_MARGIN``).
    """

    def __init__(
        self,
        estimator: str = "isolation_forest",
        n_estimators: int = 100,
        max_samples: int = 256,
        n_neighbors: int = 20,
        random_state: int = 0,
        window_seconds: float = 10.0,
        margin: float = 0.5,
    ) -> None:
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.n_neighbors = n_neighbors
        self.random_state = random_state
        self.window_seconds = window_seconds
        self.margin = margin

    # ------------------------------------------------------------------ fitting
    def _make_estimator(self, n: int) -> Any:
        if self.estimator == "isolation_forest":
            return IsolationForest(
                n_estimators=self.n_estimators,
                max_samples=min(self.max_samples, n),
                random_state=self.random_state,
            )
        if self.estimator == "local_outlier_factor":
            # brute force: no KD/ball tree in the model file (skops would not trust it)
            return LocalOutlierFactor(
                n_neighbors=min(self.n_neighbors, n - 1), novelty=True, algorithm="brute"
            )
        if self.estimator == "robust_covariance":
            return EllipticEnvelope(random_state=self.random_state)
        raise ValueError(f"unknown estimator {self.estimator!r} (known: {', '.join(ESTIMATORS)})")

    def fit(self, X: Any, y: Any = None) -> WindowScorer:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError("a scorer needs at least two windows")
        self.features_ = WindowFeatures(self.window_seconds).fit(X)
        F = self.features_.transform(X)
        self.scaler_ = RobustScaler().fit(F)
        S = self.scaler_.transform(F)
        if self.estimator == "robust_covariance":
            # MCD needs some spread in every direction: tiny deterministic jitter on
            # constant features (their envelope still guards them).
            S = S + _jitter(S, self.random_state)
        self.estimator_ = self._make_estimator(len(S)).fit(S)
        self.threshold_ = float(self.estimator_.offset_)
        self.median_ = np.median(F, axis=0)
        self.q_lo_ = np.quantile(F, 0.01, axis=0)
        self.q_hi_ = np.quantile(F, 0.99, axis=0)
        lo, hi = F.min(axis=0), F.max(axis=0)
        self.low_, self.high_ = self._widen(lo, hi)
        self.n_windows_ = int(X.shape[0])
        self.n_features_in_ = X.shape[1]
        self.calibration_: dict[str, Any] = {}
        return self

    def _widen(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pad = np.maximum(self.margin * (hi - lo), MIN_MARGIN)
        pad[0] = max(pad[0], 0.1 * abs(float(self.median_[0])) + 0.05)
        return lo - pad, hi + pad

    # ------------------------------------------------------------------ scoring
    def transform_features(self, X: Any) -> np.ndarray:
        """Raw windows -> features (the operator's view, before scaling)."""
        check_is_fitted(self, "estimator_")
        return self.features_.transform(X)

    def score_samples(self, X: Any) -> np.ndarray:
        """The estimator's score of each window: the lower, the more abnormal."""
        S = self.scaler_.transform(self.transform_features(X))
        return np.asarray(self.estimator_.score_samples(S), dtype=np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        return self.score_samples(X) - self.threshold_

    def outside_envelope(self, F: np.ndarray) -> np.ndarray:
        """Boolean matrix: which features of which windows (features, not raw) are outside."""
        return np.less(F, self.low_) | np.greater(F, self.high_)

    def predict(self, X: Any) -> np.ndarray:
        """-1 for an anomalous window (score below the threshold or a feature outside its
        envelope), 1 otherwise."""
        F = self.transform_features(X)
        score = np.asarray(
            self.estimator_.score_samples(self.scaler_.transform(F)), dtype=np.float64
        )
        bad = (score < self.threshold_) | self.outside_envelope(F).any(axis=1)
        return np.where(bad, -1, 1)

    # ------------------------------------------------------------------ calibration
    def calibrate(self, X: Any, target_per_hour: float, windows_per_hour: float) -> WindowScorer:
        """Set ``threshold_`` so that about ``target_per_hour`` clean windows an hour score
        below it, from the clean calibration windows ``X``; widen the envelopes to hold them."""
        check_is_fitted(self, "estimator_")
        X = np.asarray(X, dtype=np.float64)
        if len(X) < MIN_CALIBRATION_WINDOWS:
            raise ValueError(
                f"{len(X)} calibration windows; at least {MIN_CALIBRATION_WINDOWS} are needed"
            )
        scores = self.score_samples(X)
        p_star = min(target_per_hour / windows_per_hour, 0.5)
        self.threshold_, tail = evt_threshold(scores, p_star)
        F = self.transform_features(X)
        lo = np.minimum(self.low_, F.min(axis=0))
        hi = np.maximum(self.high_, F.max(axis=0))
        grew = (lo < self.low_) | (hi > self.high_)
        if grew.any():  # a clean window was outside: widen as at fit, around the new range
            new_lo, new_hi = self._widen(lo, hi)
            self.low_ = np.where(grew, new_lo, self.low_)
            self.high_ = np.where(grew, new_hi, self.high_)
        self.calibration_ = {
            "windows": len(X),
            "p_window": p_star,
            "score_min": float(scores.min()),
            "score_median": float(np.median(scores)),
            "widened_features": [FEATURES[i] for i in np.flatnonzero(grew)],
            **tail,
        }
        return self

    # ------------------------------------------------------------------ explanation
    def explain(self, x: Any, top: int = 3) -> list[dict[str, Any]]:
        """The features that deviate most in one raw window, worst first: features outside
        their envelope, then by robust distance from the median."""
        F = self.transform_features(np.asarray(x, dtype=np.float64).reshape(1, -1))[0]
        out = np.less(F, self.low_) | np.greater(F, self.high_)
        scale = np.maximum(self.q_hi_ - self.q_lo_, MIN_MARGIN)
        scale[0] = max(scale[0], 0.1 * abs(float(self.median_[0])) + 0.05)
        z = (F - self.median_) / scale
        order = sorted(range(NFEAT), key=lambda i: (not out[i], -abs(z[i])))
        d = self.features_.describe
        items = []
        for i in order[:top]:
            items.append(
                {
                    "feature": FEATURES[i],
                    "observed": d(i, float(F[i])),
                    "baseline": d(i, float(self.median_[i])),
                    "range": [d(i, float(self.q_lo_[i])), d(i, float(self.q_hi_[i]))],
                    "envelope": [round(float(self.low_[i]), 4), round(float(self.high_[i]), 4)],
                    "value": round(float(F[i]), 4),
                    "deviation": round(float(z[i]), 2),
                    "outside_envelope": bool(out[i]),
                }
            )
        return items


def evt_threshold(scores: np.ndarray, p_star: float) -> tuple[float, dict[str, Any]]:
    """The score that a clean window falls below with probability ``p_star``.

    Beyond the data (``p_star`` below the tail fraction) the lower tail is modelled as
    exponential over its ``EVT_TAIL`` quantile ``u``: P(s < u - y) = EVT_TAIL exp(-y / beta)
    with beta the mean excess (maximum likelihood), so the threshold is
    ``u - beta ln(EVT_TAIL / p_star)``.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if p_star >= EVT_TAIL:
        return float(np.quantile(s, p_star)), {"method": "quantile"}
    u = float(np.quantile(s, EVT_TAIL))
    excess = u - s[s < u]
    beta = float(excess.mean()) if len(excess) else 0.0
    # a degenerate tail (all scores equal) still gets a small distance below them
    beta = max(beta, 1e-3 * max(abs(u), 1e-3))
    return u - beta * math.log(EVT_TAIL / p_star), {
        "method": "evt-exponential",
        "tail_u": u,
        "tail_beta": beta,
    }


def _jitter(S: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    const = S.std(axis=0) == 0
    noise = np.zeros_like(S)
    noise[:, const] = rng.normal(0.0, 1e-3, size=(S.shape[0], int(const.sum())))
    return noise


def active(X: np.ndarray) -> np.ndarray:
    """Rows of raw windows with at least one request."""
    return np.asarray(X)[:, N_REQ] > 0


# ---------------------------------------------------------------------------- fast path
class CompiledForest:
    """The isolation forests of several scorers, flattened for vectorised, cache-friendly
    scoring.

    Every tree is laid out as a complete binary tree of the forests' largest depth ``D`` (a
    leaf above depth ``D`` becomes a chain of "always left" nodes, ``+inf`` thresholds, ending
    in its own value), so a row descends every tree of its forest in exactly ``D`` steps of a
    few numpy operations, with no branching. Nodes are stored level by level across all
    trees (the first levels of every tree share a few cache lines) as 8-byte records: the
    threshold as the largest float32 not above scikit-learn's float64 one (scikit-learn
    compares float32 features, so the decision is the same) and the feature index. Scoring
    runs once per window hop, after the cache has gone cold: the memory touched is what it
    costs. ``score(rows, S)`` scores scaled feature rows ``S`` (shape (m, n_features)), row i
    with the forest of scorer ``rows[i]``; the result equals each forest's ``score_samples``
    (tested).
    """

    NODE = np.dtype([("thr", "<f4"), ("feat", "u1"), ("pad", "V3")])

    def __init__(self, forests: list[IsolationForest]) -> None:
        if not forests:
            raise ValueError("no forest to compile")
        ntrees = {len(f.estimators_) for f in forests}
        if len(ntrees) > 1:
            raise ValueError("compiled forests must have the same number of trees")
        T = ntrees.pop()
        if max(int(f.n_features_in_) for f in forests) > 255:
            raise ValueError("too many features to compile")
        D = max(1, max(int(t.tree_.max_depth) for f in forests for t in f.estimators_))
        n_int = 2**D - 1
        rows = len(forests) * T
        feat = np.zeros((rows, n_int), dtype=np.uint8)
        thr = np.full((rows, n_int), np.inf)
        leaf = np.zeros((rows, 2**D))
        for fi, forest in enumerate(forests):
            for ti, (tree, features) in enumerate(
                zip(forest.estimators_, forest.estimators_features_, strict=True)
            ):
                t = tree.tree_
                cl, cr = t.children_left, t.children_right
                value = (
                    np.asarray(forest._decision_path_lengths[ti], dtype=np.float64)
                    + np.asarray(forest._average_path_length_per_tree[ti], dtype=np.float64)
                    - 1.0
                )
                row = fi * T + ti
                stack = [(0, 0, 0)]  # (node, index in the complete tree, depth)
                while stack:
                    node, ci, depth = stack.pop()
                    if cl[node] == -1:
                        for _ in range(D - depth):  # always left, down to depth D
                            ci = 2 * ci + 1
                        leaf[row, ci - n_int] = value[node]
                    else:
                        feat[row, ci] = features[t.feature[node]]
                        thr[row, ci] = t.threshold[node]
                        stack.append((int(cl[node]), 2 * ci + 1, depth + 1))
                        stack.append((int(cr[node]), 2 * ci + 2, depth + 1))
        # level-major: level d of every tree, one after the other
        levels = []
        self.offsets = []
        offset = 0
        for d in range(D):
            lo, n = 2**d - 1, 2**d
            block = np.zeros(rows * n, dtype=self.NODE)
            t64 = thr[:, lo : lo + n].reshape(-1)
            t32 = t64.astype(np.float32)
            down = t32.astype(np.float64) > t64  # rounded up: take the float32 below
            t32[down] = np.nextafter(t32[down], np.float32(-np.inf))
            block["thr"] = t32
            block["feat"] = feat[:, lo : lo + n].reshape(-1)
            levels.append(block)
            self.offsets.append(offset)
            offset += rows * n
        self.nodes = np.concatenate(levels)
        self.thr = self.nodes["thr"]
        self.feat = self.nodes["feat"]
        self.leaf = leaf.reshape(-1)
        self.depth = D
        self.trees = T
        self.denominator = np.array(
            [T * float(_average_path_length([f._max_samples])[0]) for f in forests]
        )
        self._bases: dict[tuple[int, ...], tuple[list[Any], Any, Any]] = {}

    def _base(self, rows: np.ndarray) -> tuple[list[Any], Any, Any]:
        key = tuple(rows.tolist())
        cached = self._bases.get(key)
        if cached is None:
            tree_rows = rows[:, None] * self.trees + np.arange(self.trees)[None, :]
            bases = [self.offsets[d] + tree_rows * 2**d for d in range(self.depth)]
            cached = (bases, tree_rows * 2**self.depth, np.arange(len(rows))[:, None])
            if len(self._bases) < 256:
                self._bases[key] = cached
        return cached

    def score(self, rows: np.ndarray, S: np.ndarray) -> np.ndarray:
        X = np.asarray(S, dtype=np.float32)  # scikit-learn's comparisons are on float32
        rows = np.asarray(rows, dtype=np.intp)
        bases, leaf_base, r = self._base(rows)
        li = np.zeros(leaf_base.shape, dtype=np.intp)
        nodes = self.nodes
        for base in bases:
            node = nodes[base + li]
            li *= 2
            li += X[r, node["feat"]] > node["thr"]
        depths = self.leaf[leaf_base + li].sum(axis=1)
        den = self.denominator[rows]
        return -np.power(2.0, -np.divide(depths, den, out=np.ones_like(depths), where=den != 0))


class ForestBounds:
    """Lower bounds of an isolation forest's ``score_samples``, to decide most windows
    without evaluating the forest.

    Scores fall with path length, so a row scores at least as if it reached, in every tree,
    the leaf of lowest value (path length plus average path length, as scikit-learn adds
    them): ``floor`` bounds every row; ``lower(x)`` bounds row ``x`` once the root of every
    tree has sent it left or right (the lowest leaf of that side). A window whose bound is
    above the channel's threshold is not anomalous by its score, whatever the rest of the
    trees say; calibration to a false alarm a day often leaves the threshold below ``floor``
    itself. Tested against scikit-learn.
    """

    __slots__ = ("base", "by_feature", "denominator", "floor", "roots")

    def __init__(self, forest: IsolationForest) -> None:
        n = int(forest.n_features_in_)
        subset = forest._max_features != n  # as ``score_samples``: X[:, features] only then
        self.roots: list[tuple[int, float, float, float]] = []
        depth = 0.0
        for ti, (tree, features) in enumerate(
            zip(forest.estimators_, forest.estimators_features_, strict=True)
        ):
            t = tree.tree_
            cl = t.children_left.tolist()
            cr = t.children_right.tolist()
            # the lowest leaf value under each node (children come after their parent)
            low = (
                np.asarray(forest._decision_path_lengths[ti], dtype=np.float64)
                + np.asarray(forest._average_path_length_per_tree[ti], dtype=np.float64)
                - 1.0
            ).tolist()
            for node in range(len(cl) - 1, -1, -1):
                if cl[node] != -1:
                    low[node] = min(low[cl[node]], low[cr[node]])
            depth += low[0]
            if cl[0] == -1:
                self.roots.append((0, math.inf, low[0], low[0]))
            else:
                f = int(t.feature[0])
                feature = int(features[f]) if subset else f
                self.roots.append((feature, float(t.threshold[0]), low[cl[0]], low[cr[0]]))
        self.denominator = len(self.roots) * float(_average_path_length([forest._max_samples])[0])
        self.floor = self._score(depth)
        # ``lower`` by feature: the roots' thresholds in order, with the sums of the right
        # sides' leaves below each threshold and of the left sides' from it on
        self.base = 0.0  # trees that are a single leaf
        groups: dict[int, list[tuple[float, float, float]]] = {}
        for f, t, lo, hi in self.roots:
            if t == math.inf:
                self.base += lo
            else:
                groups.setdefault(f, []).append((t, lo, hi))
        self.by_feature: list[tuple[int, list[float], list[float]]] = []
        for f, items in sorted(groups.items()):
            items.sort()
            n = len(items)
            right = [0.0] * (n + 1)
            left = [0.0] * (n + 1)
            for i in range(n):
                right[i + 1] = right[i] + items[i][2]
                left[n - 1 - i] = left[n - i] + items[n - 1 - i][1]
            self.by_feature.append(
                (f, [t for t, _lo, _hi in items], [a + b for a, b in zip(right, left, strict=True)])
            )

    def _score(self, depth: float) -> float:
        den = self.denominator
        return -(2.0 ** -(depth / den if den != 0 else 1.0))

    def lower(self, x: list[float]) -> float:
        """A lower bound of the score of scaled row ``x`` (compared as float32, as
        scikit-learn: left when ``x[feature] <= threshold``)."""
        x = array("f", x).tolist()
        depth = self.base
        for f, thresholds, sums in self.by_feature:
            v = x[f]
            # trees whose threshold is below v send it right, the others left (NaN: right)
            depth += sums[bisect_left(thresholds, v) if v == v else len(thresholds)]
        return self._score(depth)


def forest_bounds(estimator: Any) -> ForestBounds | None:
    """The ``ForestBounds`` of an isolation forest; None for the other estimators."""
    return ForestBounds(estimator) if isinstance(estimator, IsolationForest) else None


def fast_score_samples(estimator: Any, S: np.ndarray) -> np.ndarray:
    """``score_samples`` of a fitted LocalOutlierFactor (novelty, brute force) or
    EllipticEnvelope on scaled rows ``S``, in plain numpy: scikit-learn's own call costs
    milliseconds of validation per window. Equal to scikit-learn's result (tested), up to
    tie-breaking among equidistant neighbours for LOF."""
    S = np.asarray(S, dtype=np.float64)
    if isinstance(estimator, EllipticEnvelope):
        d = S - estimator.location_
        return -np.einsum("ij,jk,ik->i", d, estimator.get_precision(), d)
    if isinstance(estimator, LocalOutlierFactor):
        fit = estimator._fit_X
        d2 = (
            np.einsum("ij,ij->i", S, S)[:, None]
            - 2.0 * S @ fit.T
            + np.einsum("ij,ij->i", fit, fit)[None, :]
        )
        dist = np.sqrt(np.maximum(d2, 0.0))
        k = estimator.n_neighbors_
        idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
        dk = np.take_along_axis(dist, idx, axis=1)
        reach = np.maximum(dk, estimator._distances_fit_X_[idx, k - 1])
        lrd = 1.0 / (reach.mean(axis=1) + 1e-10)
        return -(estimator._lrd[idx] / lrd[:, None]).mean(axis=1)
    return np.asarray(estimator.score_samples(S), dtype=np.float64)


def validate_forest(forest: IsolationForest) -> None:
    """Refuse an isolation forest whose trees could make scikit-learn read out of bounds.

    skops does not trust ``sklearn.tree._tree.Tree`` by default because scikit-learn indexes
    node arrays without bounds checks. A loaded forest is only used after this check: every
    internal node's children come after it and inside the tree, leaves have no children, and
    every feature index is inside the data."""
    n_in = int(getattr(forest, "n_features_in_", -1))
    estimators = getattr(forest, "estimators_", None)
    features = getattr(forest, "estimators_features_", None)
    dpl = getattr(forest, "_decision_path_lengths", None)
    apl = getattr(forest, "_average_path_length_per_tree", None)
    if not estimators or features is None or dpl is None or apl is None or n_in < 1:
        raise ValueError("isolation forest is incomplete")
    if not (len(estimators) == len(features) == len(dpl) == len(apl)):
        raise ValueError("isolation forest arrays disagree in length")
    for i, tree in enumerate(estimators):
        t = tree.tree_
        n = int(t.node_count)
        feats = np.asarray(features[i])
        if feats.ndim != 1 or len(feats) == 0 or feats.min() < 0 or feats.max() >= n_in:
            raise ValueError(f"tree {i}: feature subset outside the data")
        cl = np.asarray(t.children_left)
        cr = np.asarray(t.children_right)
        f = np.asarray(t.feature)
        th = np.asarray(t.threshold)
        if n < 1 or not (len(cl) == len(cr) == len(f) == len(th) == n):
            raise ValueError(f"tree {i}: node arrays disagree in length")
        if len(np.asarray(dpl[i])) != n or len(np.asarray(apl[i])) != n:
            raise ValueError(f"tree {i}: path length arrays disagree with the tree")
        leaf = cl == -1
        if not np.array_equal(leaf, cr == -1):
            raise ValueError(f"tree {i}: a node has exactly one child")
        nodes = np.arange(n)
        internal = ~leaf
        if (
            np.any(cl[internal] <= nodes[internal])
            or np.any(cr[internal] <= nodes[internal])
            or np.any(cl[internal] >= n)
            or np.any(cr[internal] >= n)
        ):
            raise ValueError(f"tree {i}: child index out of order or out of range")
        if np.any(f[internal] < 0) or np.any(f[internal] >= len(feats)):
            raise ValueError(f"tree {i}: feature index out of range")
        if not np.all(np.isfinite(th[internal])):
            raise ValueError(f"tree {i}: threshold not finite")
