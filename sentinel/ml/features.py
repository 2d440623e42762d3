"""Per-window features of a channel: the ``WindowFeatures`` transformer.

A *channel* is a (client, server, unit id) triple. While traffic flows, the tracker adds each
Modbus message of a channel to raw window counters (``sentinel.ml.window.RAW``: requests,
responses, writes, exceptions, inter-arrival and latency sums, address span, reads whose
values changed). They need no baseline, so training computes them in the same single pass
that learns the baseline.

``WindowFeatures`` (a scikit-learn transformer) turns raw windows into the features the
scorer sees (``FEATURES``). ``fit`` learns what the features are relative to from the
training windows of one channel: its typical inter-arrival time of repeated requests and its
typical response latency, and the median of each feature (used where a window has no value:
no responses, no repeated requests). Features that compare with the baseline are log ratios,
so 0 is "as usual", +0.69 twice as much, -0.69 half.

The feature schema (``SCHEMA``) is stored with every model; a model whose schema differs from
the code's is refused at load.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from sentinel.ml.window import (
    ADDR_HI,
    ADDR_LO,
    MAX_IA,
    MAX_LAT,
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
)

FEATURES = (
    "req_rate",  # requests per second
    "resp_ratio",  # responses / requests
    "write_ratio",  # write requests / requests
    "other_ratio",  # requests neither read nor write / requests
    "exc_ratio",  # exception responses / responses
    "ia_mean",  # log(mean inter-arrival / baseline inter-arrival)
    "ia_cv",  # coefficient of variation of inter-arrivals
    "ia_max",  # log(longest inter-arrival / baseline inter-arrival)
    "lat_mean",  # log(mean latency / baseline latency)
    "lat_max",  # log(largest latency / baseline latency)
    "addr_span",  # log(1 + addresses between the lowest and highest touched)
    "change_ratio",  # reads whose values changed since the previous read / reads
)
NFEAT = len(FEATURES)
SCHEMA_VERSION = 1
SCHEMA: dict[str, Any] = {"version": SCHEMA_VERSION, "raw": list(RAW), "features": list(FEATURES)}

# Half-width added around a feature's learned range at the least (feature units), so that a
# feature constant in training (exception ratio 0) still has a tolerance.
MIN_MARGIN = np.array(
    [
        0.0,
        0.1,
        0.1,
        0.1,
        0.1,
        math.log(1.5),
        0.25,
        math.log(1.5),
        math.log(1.5),
        math.log(1.5),
        math.log(2.0),
        0.1,
    ]
)
# req_rate gets 10 % of its median plus 0.05/s instead (its scale is the channel's own).


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


class WindowFeatures(TransformerMixin, BaseEstimator):
    """Raw window counters (``RAW`` columns) -> features (``FEATURES`` columns).

    Parameters
    ----------
    window_seconds : float
        Length of the windows the counters were taken over (for rates).
    """

    def __init__(self, window_seconds: float = 10.0) -> None:
        self.window_seconds = window_seconds

    def _check(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != NRAW:
            raise ValueError(f"expected raw window counters of shape (n, {NRAW}), got {X.shape}")
        return X

    def _raw_features(self, X: np.ndarray, ref_ia: float, ref_lat: float) -> np.ndarray:
        n_req = X[:, N_REQ]
        F = np.empty((X.shape[0], NFEAT))
        F[:, 0] = n_req / self.window_seconds
        F[:, 1] = _ratio(X[:, N_RESP], n_req)
        F[:, 2] = _ratio(X[:, N_WRITE], n_req)
        F[:, 3] = _ratio(X[:, N_OTHER], n_req)
        F[:, 4] = _ratio(X[:, N_EXC], X[:, N_RESP])
        n_ia = X[:, N_IA]
        mean_ia = _ratio(X[:, S_IA], n_ia)
        with np.errstate(divide="ignore", invalid="ignore"):
            F[:, 5] = np.log(np.maximum(mean_ia, 1e-6) / ref_ia)
            var = _ratio(X[:, S_IA2], n_ia) - mean_ia**2
            cv = np.sqrt(np.maximum(var, 0.0)) / np.maximum(mean_ia, 1e-6)
            F[:, 6] = np.where(n_ia > 1, cv, np.nan)
            F[:, 7] = np.where(n_ia > 0, np.log(np.maximum(X[:, MAX_IA], 1e-6) / ref_ia), np.nan)
            mean_lat = _ratio(X[:, S_LAT], X[:, N_LAT])
            F[:, 8] = np.log(np.maximum(mean_lat, 1e-7) / ref_lat)
            F[:, 9] = np.where(
                X[:, N_LAT] > 0, np.log(np.maximum(X[:, MAX_LAT], 1e-7) / ref_lat), np.nan
            )
        span = X[:, ADDR_HI] - X[:, ADDR_LO]
        F[:, 10] = np.where(span >= 0, np.log1p(np.maximum(span, 0.0)), np.nan)
        F[:, 11] = _ratio(X[:, N_CHG], X[:, N_VAL])
        return F

    def fit(self, X: Any, y: Any = None) -> WindowFeatures:
        X = self._check(X)
        if X.shape[0] == 0:
            raise ValueError("no windows to learn from")
        mean_ia = _ratio(X[:, S_IA], X[:, N_IA])
        mean_lat = _ratio(X[:, S_LAT], X[:, N_LAT])
        self.ref_ia_ = _positive_median(mean_ia, 1.0)
        self.ref_lat_ = _positive_median(mean_lat, 1e-3)
        F = self._raw_features(X, self.ref_ia_, self.ref_lat_)
        # Where a window has no value (no responses, no repeated requests): "as usual".
        fill = np.zeros(NFEAT)
        for j in range(NFEAT):
            col = F[:, j]
            col = col[np.isfinite(col)]
            if len(col):
                fill[j] = float(np.median(col))
        self.fill_ = fill
        self.n_features_in_ = NRAW
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "fill_")
        X = self._check(X)
        F = self._raw_features(X, self.ref_ia_, self.ref_lat_)
        bad = ~np.isfinite(F)
        if bad.any():
            F[bad] = np.broadcast_to(self.fill_, F.shape)[bad]
        return F

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array(FEATURES, dtype=object)

    def describe(self, index: int, value: float) -> str:
        """A feature value in the operator's units (``lat_mean`` 0.69 -> "1.26 ms")."""
        name = FEATURES[index]
        if name == "req_rate":
            return f"{value:.2f} requests/s"
        if name in ("resp_ratio", "write_ratio", "other_ratio", "exc_ratio", "change_ratio"):
            return f"{100 * value:.1f} %"
        if name in ("ia_mean", "ia_max"):
            return f"{self.ref_ia_ * math.exp(min(value, 50.0)):.3f} s"
        if name in ("lat_mean", "lat_max"):
            return f"{1000 * self.ref_lat_ * math.exp(min(value, 50.0)):.3f} ms"
        if name == "addr_span":
            return f"{math.expm1(min(value, 50.0)):.0f} addresses"
        return f"{value:.3f}"


def _positive_median(values: np.ndarray, default: float) -> float:
    v = values[np.isfinite(values) & (values > 0)]
    return float(np.median(v)) if len(v) else default
