"""The ``privacy`` section of the config: pseudonymization, minimization, retention, audit.

Example (every key optional; the values shown are the defaults unless marked)::

    privacy:
      pseudonymization:
        enabled: true                      # default false; --pseudonymize KEYFILE turns it on
        key_file: /var/lib/sentinel/privacy-keys/   # a key file or key-ring directory (example)
        # key_env: SENTINEL_PRIVACY_KEY    # or the key in an environment variable
        rotation: 30d                      # key ring only: a new key when the active one is
                                           # this old (default: null, never)
        keep_network: true                 # the pseudonym says which declared network it is in
        networks: []                       # more networks to tag besides sites[].networks
        clear: []                          # more addresses/networks kept in clear
        identifiers: pseudonymize          # pseudonymize | drop | keep: what devices outside
                                           # the inventory say about themselves
        identity_objects_in_clear: [...]   # DEFAULT_CLEAR_OBJECTS: product names, not units
        cache_size: 65536                  # addresses remembered (pseudonym cache, LRU)
        reveal_table: null                 # encrypted re-identification table (SQLite path)
      minimization:
        payload: {}                        # protocol -> bytes that may be stored; {} = never
      retention:                           # how long each data class is kept; null = forever
        findings: 365d
        transactions: 30d
        flows: 30d
        assets: 365d
        captures: 7d
        audit: 730d
        reveal_table: 365d
        output_dirs: []                    # roots of `sentinel analyze --out` directories
                                           # (the service's sensor.out_dir is always covered)
        capture_dirs: []                   # where pcap snapshots are kept
        spool: true                        # the Elasticsearch spool (sinks.elasticsearch)
        elasticsearch: true                # the Elasticsearch indices (sinks.elasticsearch)
      snapshots:                           # capture.snapshot while pseudonymization is on
        allow: false                       # refused unless true (a pcap is raw traffic)
        max_seconds: 60                    # time span of one snapshot, at most
        max_bytes: 1048576                 # size of one snapshot file, at most
        frame_bytes: null                  # bytes kept of each frame (null: whole frames)
      audit_log: null                      # default $SENTINEL_STATE/privacy-audit.jsonl

docs/privacy.md explains each setting for a data-protection officer. The lead wires
``PrivacySettings`` into ``sentinel.config.Config`` as ``privacy``; ``privacy_settings(config)``
returns the defaults for a config that has no such section.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sentinel.decode.modbus_codes import DEVICE_ID_OBJECTS

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PROTOCOL = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Identity fields that name a product or a protocol address, not a person, a place or one
# particular unit: kept in clear by default. Everything else a device says about itself is
# pseudonymized: Modbus UserApplicationName and private objects 0x80-0xFF (serial numbers,
# tags, locations), EtherNet/IP serial, BACnet object-name/location/description/
# serial-number, S7 plc_name/module_name/plant_id/serial/memory_card_serial/location, FC 17
# server id data, and any field a decoder adds later.
DEFAULT_CLEAR_OBJECTS = [
    *(DEVICE_ID_OBJECTS[i] for i in range(6)),  # Modbus FC 43/14, spec 6.21 basic and regular
    *("vendor", "device_type", "product_code", "revision", "product_name", "state"),  # CIP
    *("vendor-name", "model-name", "firmware-revision", "application-software-version"),
    *("vendor_id", "device_instance"),  # BACnet
    *("order_number", "module_type", "copyright"),  # S7 SZL 0x0011 / 0x001C
    *("address", "common_address"),  # DNP3 link and IEC 104 common addresses
]
ENV_STATE = "SENTINEL_STATE"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` to seconds (ValueError otherwise)."""
    m = _DURATION.match(value.strip()) if isinstance(value, str) else None
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"not a duration like 30d, 12h or 2w: {value!r}")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _duration(value: str | None) -> str | None:
    if value is None:
        return None
    parse_duration(value)
    return value.strip()


def _address_or_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"not an IP address or network: {value!r}") from None


class Pseudonymization(_Strict):
    """Addresses and identifiers outside the declared OT inventory become pseudonyms."""

    enabled: bool = False
    key_file: str | None = None
    key_env: str | None = None
    rotation: str | None = None
    keep_network: bool = True
    networks: list[str] = []
    clear: list[str] = []
    identifiers: Literal["pseudonymize", "drop", "keep"] = "pseudonymize"
    identity_objects_in_clear: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CLEAR_OBJECTS)
    )
    cache_size: int = Field(65536, ge=1024, le=1 << 24)
    reveal_table: str | None = None

    _rotation = field_validator("rotation", mode="after")(lambda cls, v: _duration(v))
    _networks = field_validator("networks", "clear", mode="after")(
        lambda cls, v: [_address_or_network(n) for n in v]
    )

    @field_validator("key_env", mode="after")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"not an environment variable name: {value!r}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Pseudonymization:
        if self.key_file and self.key_env:
            raise ValueError("give key_file or key_env, not both")
        if self.rotation and self.key_env:
            raise ValueError("rotation needs a key-ring directory as key_file, not key_env")
        return self


class Minimization(_Strict):
    """What may be kept of the traffic itself.

    ``payload`` maps a protocol name (``modbus``, ``http``, ...) to the number of payload
    bytes a sink may store for it (at most 65535); a protocol that is not listed stores
    none. Its user is ``EveSink`` (alert ``payload``; never for pseudonymized hosts).
    Findings carry decoded fields as evidence, never raw bytes, whatever this says.
    """

    payload: dict[str, int] = {}

    @field_validator("payload", mode="after")
    @classmethod
    def _caps(cls, value: dict[str, int]) -> dict[str, int]:
        for proto, cap in value.items():
            if not _PROTOCOL.match(proto):
                raise ValueError(f"not a protocol name: {proto!r}")
            if not 0 <= cap <= 65535:
                raise ValueError(f"payload cap for {proto} must be 0-65535 bytes, not {cap}")
        return value

    def payload_limit(self, protocol: str | None) -> int:
        """Bytes of payload that may be stored for ``protocol`` (0: none)."""
        return self.payload.get(protocol or "", 0)

    def cap_payload(self, protocol: str | None, data: bytes) -> bytes | None:
        """``data`` cut to what may be stored, or None when nothing may be."""
        limit = self.payload_limit(protocol)
        return data[:limit] if limit else None


DATA_CLASSES = ("findings", "transactions", "flows", "assets", "captures", "audit", "reveal_table")


class Retention(_Strict):
    """How long each data class is kept (``null``: no automatic deletion) and where it is."""

    findings: str | None = "365d"
    transactions: str | None = "30d"
    flows: str | None = "30d"
    assets: str | None = "365d"
    captures: str | None = "7d"
    audit: str | None = "730d"
    reveal_table: str | None = "365d"
    output_dirs: list[str] = []
    capture_dirs: list[str] = []
    spool: bool = True
    elasticsearch: bool = True

    _durations = field_validator(*DATA_CLASSES, mode="after")(lambda cls, v: _duration(v))

    def seconds(self, data_class: str) -> float | None:
        value = getattr(self, data_class)
        return None if value is None else parse_duration(value)


class Snapshots(_Strict):
    """``capture.snapshot`` (raw frames from the packet ring) while pseudonymization is on.

    A pcap holds clear addresses and payload, so with pseudonymization on a snapshot is
    refused unless ``allow`` is true; then it is cut to ``max_seconds`` of traffic and
    ``max_bytes`` of file (and each frame to ``frame_bytes`` when set), it must be written
    under one of ``retention.capture_dirs`` (data class ``captures``), and each one is
    recorded in the privacy audit log.
    """

    allow: bool = False
    max_seconds: float = Field(60.0, gt=0, le=3600)
    max_bytes: int = Field(1 << 20, ge=4096, le=1 << 30)
    frame_bytes: int | None = Field(None, ge=64, le=262144)


class PrivacySettings(_Strict):
    """The ``privacy`` section of the config."""

    pseudonymization: Pseudonymization = Pseudonymization()
    minimization: Minimization = Minimization()
    retention: Retention = Retention()
    snapshots: Snapshots = Snapshots()
    audit_log: str | None = None

    def audit_path(self) -> Path:
        """The audit log: ``audit_log``, else ``$SENTINEL_STATE/privacy-audit.jsonl``, else
        ``$XDG_STATE_HOME/sentinel/privacy-audit.jsonl`` (``~/.local/state`` by default)."""
        if self.audit_log:
            return Path(self.audit_log)
        return state_dir() / "privacy-audit.jsonl"


def state_dir() -> Path:
    state = os.environ.get(ENV_STATE)
    if state:
        return Path(state)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "sentinel"


def privacy_settings(config: Any) -> PrivacySettings:
    """The config's ``privacy`` section, or the defaults when the config has none."""
    section = getattr(config, "privacy", None)
    if isinstance(section, PrivacySettings):
        return section
    if section is None:
        return PrivacySettings()
    return PrivacySettings.model_validate(
        section.model_dump() if isinstance(section, BaseModel) else section
    )
