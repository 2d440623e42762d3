"""A trained model: the tier-1 baseline, the tier-2 scorers, and what describes them.

``Model`` is what ``sentinel model train`` writes and the ``ml_anomaly`` detector loads
(``sentinel.ml.persist`` turns it into a skops file and back):

- ``metadata``: format version, library versions, feature schema, the training settings,
  the training and calibration windows (packet time), the captures and a SHA-256 of their
  bytes;
- ``baseline``: plain data (``sentinel.ml.baseline``), readable in the file;
- ``scorers``: channel key (``client|server|unit``) -> fitted and calibrated ``WindowScorer``;
- ``report``: the data-sufficiency report (per channel: enough windows or not, which checks
  are armed and why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sentinel.ml.settings import MLTrainSettings

FORMAT = "sentinel-ml-model"
FORMAT_VERSION = 1


@dataclass
class Model:
    metadata: dict[str, Any]
    baseline: dict[str, Any]
    scorers: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> MLTrainSettings:
        return MLTrainSettings.model_validate(self.metadata["settings"])

    @property
    def channels(self) -> dict[str, Any]:
        return self.baseline["channels"]  # type: ignore[no-any-return]
