"""Settings of the built-in detectors: ``detectors.policy`` and ``detectors.yara`` in the config.

Every threshold has a documented default chosen so that, with no configuration at all, normal
polling traffic (fixed poll lists, occasional operator writes, start-up device identification,
a misconfigured tag answered with the same exception every cycle) raises no finding, while the
tools attackers actually use (function-code, unit-id and address scanners, device
identification sweeps, floods) cross them by a wide margin. docs/detectors.md explains each
one. All durations are seconds of packet time.

``sentinel.config.Config`` holds them as ``detectors``; ``detector_settings(config)`` also
accepts a config object without that section (then the defaults apply).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentinel.ml.settings import MLSettings
from sentinel.netaddr import IPAddress


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicySettings(_Strict):
    """Thresholds of the OT policy (``modbus_policy``) and reconnaissance (``recon``) detectors."""

    # Learning: what a host does in the first ``learning_seconds`` of traffic is its baseline
    # (writers, device roles, the device inventory, request rates). A run starts learning at
    # its first Modbus message; learned findings (new writer, new device, learned role
    # reversal) are only raised after it.
    learning_seconds: float = Field(600.0, ge=0)
    # Memory bounds: hosts, client/server pairs and flows tracked. Beyond them new entries are
    # not tracked (no finding can be raised about them; nothing is evicted mid-window).
    max_hosts: int = Field(16384, ge=16)
    max_pairs: int = Field(16384, ge=16)
    max_flows: int = Field(16384, ge=16)
    max_pending_per_flow: int = Field(256, ge=1)

    # Request flood: more than max(flood_min_requests, flood_factor x the pair's busiest
    # learning window) requests from one client to one server within flood_window.
    flood_window: float = Field(10.0, gt=0)
    flood_min_requests: int = Field(1000, ge=1)
    flood_factor: float = Field(5.0, ge=1)
    # Connection flood: this many TCP connections that carried no payload to one server's
    # Modbus port within flood_window (a SYN flood; an HMI retrying a dead PLC makes a few).
    connection_flood: int = Field(200, ge=2)

    # Requests without responses: a request is unanswered after response_timeout; a pair is
    # reported when, within unanswered_window, at least unanswered_min of its requests went
    # unanswered and they are at least unanswered_ratio of the requests sent.
    response_timeout: float = Field(5.0, gt=0)
    unanswered_window: float = Field(60.0, gt=0)
    unanswered_min: int = Field(20, ge=1)
    unanswered_ratio: float = Field(0.5, gt=0, le=1)

    # Reconnaissance, counted per client and server within sweep_window.
    sweep_window: float = Field(60.0, gt=0)
    fc_sweep_distinct: int = Field(12, ge=2)  # distinct function codes sent
    fc_sweep_illegal: int = Field(4, ge=1)  # distinct codes answered ILLEGAL_FUNCTION
    unit_sweep_distinct: int = Field(32, ge=2)  # distinct unit ids addressed
    unit_sweep_failed: int = Field(8, ge=1)  # distinct unit ids answered "no such unit"
    address_sweep_distinct: int = Field(64, ge=2)  # distinct read start addresses
    address_sweep_illegal: int = Field(8, ge=1)  # distinct ones answered ILLEGAL_DATA_ADDRESS
    exception_distinct: int = Field(10, ge=1)  # distinct failing requests (unit, fc, address)
    # Service sweep: TCP connections that exchanged no payload, to this many distinct
    # host:port targets (a Modbus port among them), from one client within sweep_window.
    scan_targets: int = Field(10, ge=2)

    # Hosts allowed to identify devices (FC 43/14, FC 17) in addition to the assets declared
    # with role ``engineering``.
    engineering_hosts: list[IPAddress] = []
    # Rule ids (e.g. 9000104) whose findings are dropped, for site tuning.
    disabled_rules: list[int] = []


class YaraSettings(_Strict):
    """The YARA scanner: which rules, and the bounds of stream windows and file reassembly."""

    enabled: bool = True
    builtin: bool = True  # the starter set shipped in sentinel/signatures/*.yar
    rules: list[str] = []  # more .yar files or directories of them
    # Each direction of each flow is scanned in windows of window_bytes; consecutive windows
    # overlap by overlap_bytes so that a match that straddles two windows is still seen
    # (matches longer than the overlap can be missed in streams; files are scanned whole).
    window_bytes: int = Field(32768, ge=1024, le=16 * 1024 * 1024)
    overlap_bytes: int = Field(1024, ge=16)
    # Live, bytes that wait longer than flush_seconds for their window to fill are scanned
    # anyway; reading a capture file they wait for their window or the end of their flow.
    flush_seconds: float = Field(5.0, gt=0)
    max_streams: int = Field(1024, ge=2)  # flow directions buffered at once (LRU, scanned out)
    scan_timeout: int = Field(10, ge=1)  # seconds per scan, yara's own timeout
    # Files carried in clear-text protocols (HTTP/1.x bodies, FTP data connections, TFTP).
    extract_files: bool = True
    max_file_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # larger files: the head is scanned
    max_open_files: int = Field(32, ge=1)
    ftp_ports: list[int] = [21]
    tftp_ports: list[int] = [69]

    @model_validator(mode="after")
    def _overlap(self) -> YaraSettings:
        if self.overlap_bytes * 2 > self.window_bytes:
            raise ValueError("overlap_bytes must be at most half of window_bytes")
        return self


class DetectorSettings(_Strict):
    """The ``detectors`` section of the config."""

    policy: PolicySettings = PolicySettings()
    yara: YaraSettings = YaraSettings()
    ml: MLSettings = MLSettings()


def detector_settings(config: Any) -> DetectorSettings:
    """The config's ``detectors`` section (the defaults for an object that has none)."""
    section = getattr(config, "detectors", None)
    return section if isinstance(section, DetectorSettings) else DetectorSettings()
