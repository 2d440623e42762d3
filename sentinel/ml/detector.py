"""The pipeline detector of learned baselines (registered as ``ml_anomaly`` by
``detectors/ml_anomaly.py``; used unregistered by ``sentinel model eval``).

It does nothing, and costs nothing, unless a model is given: by the config
(``detectors.ml.model``), by ``sentinel analyze --model MODEL``, or as ``model=``. Without a
model it subscribes to no event. With one, it hands every Modbus message, decoder anomaly,
flow end and tick to ``sentinel.ml.engine.Engine``.

Heavy imports (numpy, scikit-learn, skops) happen only when a model is loaded, so
``sentinel`` starts as fast without one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sentinel.config import Config
from sentinel.events import Anomaly, ModbusMessage
from sentinel.findings import Finding
from sentinel.ml.rules import DETECTOR_ID
from sentinel.ml.settings import MLSettings, ml_settings
from sentinel.pipeline.detector import EVENT_METHODS, Detector

if TYPE_CHECKING:
    from sentinel.ml.model import Model

_EVENTS = ("on_modbus", "on_anomaly", "on_flow_end", "on_tick")


class MLDetector(Detector):
    """Scores traffic with a trained model (see the module docstring)."""

    id = DETECTOR_ID
    description = "Learned per-channel baselines and window scoring (needs a trained model)"

    def __init__(
        self,
        config: Config,
        model: Model | None = None,
        settings: MLSettings | None = None,
    ) -> None:
        super().__init__(config)
        self.settings = settings or ml_settings(config)
        self.engine: Any = None
        if model is None and self.settings.enabled and self.settings.model:
            from sentinel.ml.persist import load_model

            model = load_model(self.settings.model)
        if model is not None and self.settings.enabled:
            from sentinel.ml.engine import Engine

            self.engine = Engine(model, self.settings)
            # The pipeline looks the handlers up on the instance once: hand it the engine's
            # own methods, one Python call less per event.
            self.on_modbus = self.engine.modbus  # type: ignore[method-assign]
            self.on_anomaly = self.engine.anomaly  # type: ignore[method-assign]
            self.on_flow_end = self.engine.flow_end  # type: ignore[method-assign]
            self.on_tick = self.engine.tick  # type: ignore[method-assign]

    def subscriptions(self) -> list[str]:
        """The events this instance needs: none without a model."""
        if self.engine is None:
            return []
        return [m for m in EVENT_METHODS if m in _EVENTS]

    def on_modbus(self, msg: ModbusMessage) -> Iterable[Finding] | None:
        return self.engine.modbus(msg)  # type: ignore[no-any-return]

    def on_anomaly(self, event: Anomaly) -> Iterable[Finding] | None:
        return self.engine.anomaly(event)  # type: ignore[no-any-return]

    def on_flow_end(self, flow: dict) -> Iterable[Finding] | None:
        return self.engine.flow_end(flow)  # type: ignore[no-any-return]

    def on_tick(self, now: float) -> Iterable[Finding] | None:
        return self.engine.tick(now)  # type: ignore[no-any-return]
