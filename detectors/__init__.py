"""Built-in detection plugins (installed as ``sentinel.detectors``).

Importing this package registers every built-in detector.
"""

from . import protocol_anomalies  # noqa: F401
