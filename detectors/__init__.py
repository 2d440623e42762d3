"""Built-in detection plugins (installed as ``sentinel.detectors``).

Importing this package registers every built-in detector.
"""

from . import (  # noqa: F401
    modbus_policy,
    recon,
    suricata,
    yara_scan,
)
