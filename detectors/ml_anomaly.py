"""Learned baselines: per-channel anomaly detection with a trained model (``sentinel.ml``).

The detector does nothing, and costs nothing, unless a model is given: by the config
(``detectors.ml.model``) or by ``sentinel analyze --model MODEL``. Without a model it
subscribes to no event. With one, every Modbus message, decoder anomaly, flow end and tick
goes to ``sentinel.ml.engine.Engine``, which checks them against the model's baseline
(tier 1: talkers, functions, addresses, command sequences, latency, register values) and
scores windows of each channel (tier 2: a calibrated scikit-learn scorer). Rule ids
9000600-9000699; docs/ml.md explains each finding and how models are trained and calibrated.
"""

from __future__ import annotations

from sentinel.ml.detector import MLDetector
from sentinel.pipeline.detector import register


@register
class MLAnomaly(MLDetector):
    """The registered ``ml_anomaly`` detector (inert without a model)."""
