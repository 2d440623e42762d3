"""Settings of the learned-baseline detector: ``detectors.ml`` in the config.

``MLSettings`` is the section the pipeline reads (which model, memory bounds, how often a
finding repeats); ``MLSettings.train`` holds what ``sentinel model train`` uses (estimator and
its hyper-parameters, windows, calibration target). Training settings are stored in the model
file, and scoring always uses the model's own windows, debounce and thresholds, so a model
behaves the same whatever config it is later loaded with.

``sentinel.detector_settings.DetectorSettings.ml`` holds it; ``ml_settings(config)`` also
accepts an object without that section (then the defaults apply).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Estimator = Literal["isolation_forest", "local_outlier_factor", "robust_covariance"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MLTrainSettings(_Strict):
    """How a model is trained and calibrated (``detectors.ml.train``)."""

    # Tier 2: the scikit-learn scorer of per-window features.
    estimator: Estimator = "isolation_forest"
    n_estimators: int = Field(100, ge=10, le=1000)  # isolation_forest
    max_samples: int = Field(256, ge=16, le=65536)  # isolation_forest
    n_neighbors: int = Field(20, ge=2, le=1000)  # local_outlier_factor
    random_state: int = 0
    # Windows: features over window_seconds, one window every hop_seconds (window_seconds a
    # whole multiple of it; equal by default: tumbling windows, which halve the scoring cost
    # of 5-second hops and, with the tier-1 checks in front, cost no detection in the lab).
    window_seconds: float = Field(10.0, gt=0, le=3600)
    hop_seconds: float = Field(10.0, gt=0, le=3600)
    # Alert when debounce_k of the last debounce_n windows of a channel are anomalous.
    debounce_k: int = Field(2, ge=1)
    debounce_n: int = Field(3, ge=1)
    # The last calibration_fraction of the training captures' time (at least
    # min_calibration_minutes) is the clean calibration window; the rest trains.
    calibration_fraction: float = Field(0.2, gt=0, lt=1)
    min_calibration_minutes: float = Field(30.0, ge=0)
    # A channel needs min_windows active training windows for a tier-2 scorer.
    min_windows: int = Field(360, ge=10)
    # Target false alarms per channel and per check, per day of normal traffic; thresholds
    # are calibrated to it and deterministic checks are only armed when the baseline says
    # they can keep it (see docs/ml.md, "Calibration").
    false_alarms_per_day: float = Field(1.0, gt=0)
    # Written values: a register's learned envelope (what was read or written there, widened
    # by value_margin times its span, never beyond the config's safe limits) is used once
    # it was written min_writes times and its second half of training stayed in the
    # envelope of the first; before that the config's safe limits are, if it has any.
    value_margin: float = Field(0.5, ge=0)
    min_writes: int = Field(10, ge=1)
    # Sensors (analog registers): the learned range widened by sensor_margin times its span;
    # a sensor may move step_factor times its largest learned rate of change. Both checks
    # need min_sensor_hours of training: a process visits its operating points (setpoints
    # moved by operators, daily cycles) over a day, not over a few hours.
    sensor_margin: float = Field(1.0, ge=0)
    step_factor: float = Field(3.0, ge=1)
    min_sensor_hours: float = Field(24.0, ge=0)
    # Latency: a response is slow above this quantile of the training latencies; an alert
    # needs k (calibrated) of the last latency_n responses slow.
    latency_quantile: float = Field(0.999, gt=0.5, lt=1)
    latency_n: int = Field(8, ge=1, le=64)
    min_latency_samples: int = Field(1000, ge=10)

    @model_validator(mode="after")
    def _check(self) -> MLTrainSettings:
        ratio = self.window_seconds / self.hop_seconds
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError("window_seconds must be a whole multiple of hop_seconds")
        if self.debounce_k > self.debounce_n:
            raise ValueError("debounce_k must be at most debounce_n")
        return self


class MLSettings(_Strict):
    """The ``detectors.ml`` section: scoring in the pipeline."""

    # The model file (``sentinel model train --out``). Without one the detector does nothing.
    model: str | None = None
    enabled: bool = True
    # Memory bounds: channels tracked at once, and entries of each other table (reported
    # pairs, last writes per register, replay fingerprints, pending requests).
    max_channels: int = Field(4096, ge=16)
    max_entries: int = Field(65536, ge=64)
    # A novelty (new talker, new function, value out of its envelope...) is reported when it
    # first occurs, and again only after it was absent for realert_seconds: a rogue master
    # that keeps polling is one alert, the same host back after a pause is another.
    realert_seconds: float = Field(60.0, ge=0)
    # A write identical to one seen on another connection within replay_seconds is a replay.
    replay_seconds: float = Field(600.0, gt=0)
    train: MLTrainSettings = MLTrainSettings()


def ml_settings(config: Any) -> MLSettings:
    """The config's ``detectors.ml`` section, or the defaults when the config has none."""
    section = getattr(config, "detectors", None)
    ml = getattr(section, "ml", None) if section is not None else None
    if isinstance(ml, MLSettings):
        return ml
    if isinstance(ml, dict):
        return MLSettings.model_validate(ml)
    return MLSettings()
