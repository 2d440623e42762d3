"""The YAML configuration: schema, loading, and errors located at file:line.

The whole file is validated before anything uses it; every problem is reported at once with
the line and column of the offending value (found by walking PyYAML's node tree), and a config
with any problem is refused as a whole.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentinel.decode.ot_settings import OTSettings
from sentinel.detector_settings import DetectorSettings
from sentinel.errors import ConfigError, Location, SentinelError
from sentinel.es.config import ElasticsearchSink
from sentinel.lab.config import LabSection
from sentinel.netaddr import IPAddress, IPNetwork
from sentinel.privacy.settings import PrivacySettings
from sentinel.respond.settings import ActionSettings, PlaybookSettings, ServiceSettings
from sentinel.schedule.settings import Jobs, ScheduleSettings

Sector = Literal["hospital", "energy", "transport", "other"]
Role = Literal["plc", "hmi", "engineering", "historian", "other"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(_Strict):
    """A monitored site; findings about its networks are labelled with its name and sector."""

    name: str = Field(min_length=1)
    sector: Sector = "other"
    networks: list[IPNetwork] = []


class RegisterRange(_Strict):
    """Holding registers (or coils) of an asset, with what writes may do to them."""

    table: Literal["coils", "holding", "input", "discretes"] = "holding"
    start: int = Field(ge=0, le=65535)
    end: int = Field(ge=0, le=65535)
    name: str | None = None
    writable: bool = False
    min: int | None = None
    max: int | None = None


class Asset(_Strict):
    """An OT device and its policy: who may talk to it, with which functions, which values."""

    address: IPAddress
    name: str | None = None
    site: str | None = None
    role: Role = "other"
    allowed_masters: list[IPAddress] = []
    allowed_function_codes: list[int] = []
    registers: list[RegisterRange] = []


class Decode(_Strict):
    """Decoder limits; the defaults suit a site sensor with tens of thousands of flows."""

    modbus_ports: list[int] = [502]
    max_flows: int = Field(65536, ge=16)
    tcp_idle_timeout: float = Field(300.0, gt=0)
    udp_idle_timeout: float = Field(60.0, gt=0)
    max_stream_buffer: int = Field(65536, ge=1024)
    # Content inspection depth per TCP direction, like Suricata's stream.reassembly.depth:
    # YARA stream windows and stream content rules see a direction's first stream_depth bytes
    # only. 0 (the default): every byte, since the shipped Modbus exception rules are stream
    # content rules and polling connections are long-lived. The Modbus decoder and file
    # extraction are never limited by it.
    stream_depth: int = Field(0, ge=0)
    max_pending_requests: int = Field(500, ge=1)


class Observer(_Strict):
    name: str = "sentinel"


class SensorSettings(_Strict):
    """``sensor:`` — what ``sentinel run`` captures and where it writes.

    Example::

        sensor:
          interfaces: [br-ot0]
          bpf: "tcp or udp or arp"
          out_dir: /var/lib/sentinel/live
          ring: true            # keep recent frames for capture.snapshot (actions.snapshot)
    """

    interfaces: list[str] = []
    bpf: str | None = None
    out_dir: str = "sentinel-live"
    ring: bool = True  # sizes: actions.snapshot.ring_bytes / ring_seconds
    heartbeat: float = Field(0.2, gt=0, le=5)  # idle seconds before time moves on its own
    queue_frames: int = Field(65536, ge=64)  # frames between the capture thread and pipeline
    buffer_bytes: int = Field(16 << 20, ge=1 << 20)  # kernel socket buffer per interface


class Sinks(_Strict):
    """Where a run sends its records besides the JSONL files (docs/elasticsearch.md)."""

    elasticsearch: ElasticsearchSink | None = None


class Config(_Strict):
    observer: Observer = Observer()
    sites: list[Site] = []
    assets: list[Asset] = []
    decode: Decode = Decode()
    detectors: DetectorSettings = DetectorSettings()
    sinks: Sinks = Sinks()
    sensor: SensorSettings = SensorSettings()
    privacy: PrivacySettings = PrivacySettings()
    ot: OTSettings = OTSettings()
    lab: LabSection | None = None  # only in the lab's site files (lab/sites/*.yaml)
    playbooks: PlaybookSettings = PlaybookSettings()
    actions: ActionSettings = ActionSettings()
    service: ServiceSettings = ServiceSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    jobs: Jobs = {}


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate a config file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config()
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(
            [SentinelError(f"cannot read config: {exc.strerror}", Location(name))]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([SentinelError("config is not UTF-8 text", Location(name))]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([SentinelError(f"YAML syntax: {reason}", where)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([SentinelError("config must be a mapping", Location(name, 1, 1))])
    positions: dict[tuple, tuple[int, int]] = {}  # path -> where its value starts
    key_positions: dict[tuple, tuple[int, int]] = {}  # path -> where its key starts
    _walk(root, (), positions, key_positions)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = key_positions if err["type"] == "extra_forbidden" else positions
            line, col = where[loc] if loc in where else _closest(positions, loc)
            dotted = ".".join(str(p) for p in loc) or "(top)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(SentinelError(f"{dotted}: {msg}", Location(name, line, col)))
        raise ConfigError(problems) from None


def _walk(
    node: Any, path: tuple, out: dict[tuple, tuple[int, int]], keys: dict[tuple, tuple[int, int]]
) -> None:
    if node is None:
        return
    out[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            keys[(*path, key.value)] = (key.start_mark.line + 1, key.start_mark.column + 1)
            _walk(value, (*path, key.value), out, keys)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), out, keys)


def _closest(positions: dict[tuple, tuple[int, int]], loc: tuple) -> tuple[int, int]:
    while loc not in positions and loc:
        loc = loc[:-1]
    return positions.get(loc, (1, 1))
