"""The ``ml_anomaly`` pipeline detector: inert (no subscription) without a model, loads the
config's model, and runs in the real pipeline on a real capture."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import sentinel.detectors  # noqa: F401 - registers the built-in detectors
from sentinel.config import Config
from sentinel.errors import SentinelError
from sentinel.lab.config import load_site
from sentinel.lab.synth import synthesize
from sentinel.ml.detector import MLDetector
from sentinel.ml.persist import save_model
from sentinel.ml.settings import MLSettings, ml_settings
from sentinel.pipeline import Pipeline
from sentinel.pipeline.detector import REGISTRY

from .helpers import baseline_model


def config_with(ml: MLSettings) -> SimpleNamespace:
    """A config whose ``detectors.ml`` section is ``ml`` (what the lead's Config will carry)."""
    return SimpleNamespace(detectors=SimpleNamespace(ml=ml), decode=Config().decode)


def test_registered_and_inert_without_a_model() -> None:
    cls = REGISTRY["ml_anomaly"]
    det = cls(Config())
    assert det.engine is None and det.subscriptions() == []
    assert ml_settings(Config()) == MLSettings()


def test_loads_the_configured_model(tmp_path: Path) -> None:
    model, _ = baseline_model(seconds=1800)
    path = tmp_path / "m.model"
    save_model(model, path)
    det = REGISTRY["ml_anomaly"](config_with(MLSettings(model=str(path))))
    assert det.engine is not None
    assert set(det.subscriptions()) == {"on_modbus", "on_anomaly", "on_flow_end", "on_tick"}
    off = REGISTRY["ml_anomaly"](config_with(MLSettings(model=str(path), enabled=False)))
    assert off.engine is None and off.subscriptions() == []
    with pytest.raises(SentinelError, match="cannot read model"):
        REGISTRY["ml_anomaly"](config_with(MLSettings(model=str(tmp_path / "nope"))))


def test_inert_detector_costs_the_pipeline_nothing(tmp_path: Path) -> None:
    synthesize(load_site("hospital"), 2, [], 5, tmp_path / "cap")
    det = MLDetector(Config())
    pipeline = Pipeline(Config(), tmp_path / "out", [det])
    assert all(not handlers for handlers in pipeline._handlers.values())
    stats = pipeline.run(tmp_path / "cap" / "capture.pcap").stats
    assert stats["modbus_messages"] > 0 and stats["findings"] == 0


def test_settings_validate() -> None:
    with pytest.raises(ValueError, match="whole multiple"):
        MLSettings(train={"window_seconds": 10, "hop_seconds": 3})
    with pytest.raises(ValueError, match="debounce_k"):
        MLSettings(train={"debounce_k": 4, "debounce_n": 3})
    with pytest.raises(ValueError):
        MLSettings(train={"estimator": "svm"})


def test_the_config_section(tmp_path: Path) -> None:
    from sentinel.config import load_config
    from sentinel.errors import ConfigError

    model, _ = baseline_model(seconds=1800)
    save_model(model, tmp_path / "m.model")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"detectors:\n  ml:\n    model: {tmp_path / 'm.model'}\n"
        "    train:\n      false_alarms_per_day: 0.5\n"
    )
    config = load_config(cfg)
    assert ml_settings(config).train.false_alarms_per_day == 0.5
    assert REGISTRY["ml_anomaly"](config).engine is not None
    cfg.write_text("detectors:\n  ml:\n    train:\n      hop_seconds: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml:4:\d+: detectors.ml.train: window_seconds"):
        load_config(cfg)
