"""Built-in detection plugins (installed as ``sentinel.detectors``).

Importing this package registers every built-in detector.
"""

from . import (  # noqa: F401
    arp_spoof,
    ml_anomaly,  # inert without a model: docs/ml.md
    modbus_policy,
    ot_policy,
    recon,
    suricata,
    yara_scan,
)
