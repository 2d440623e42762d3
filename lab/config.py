"""The ``lab:`` section of a site file, and loading site files.

A lab site file (``lab/sites/*.yaml``) is a complete Sentinel configuration for that site
(sites, assets, roles, allowed masters, register limits), so that detection works out of the
box against the lab, plus a ``lab:`` section that only the lab reads: the lab subnet and
bridge, each PLC's Modbus identity, register table sizes and physical process, the HMI's poll
list and period, the engineering workstation and the attacker's address.

``LabSection`` is the model of ``sentinel.config.Config.lab`` (optional, default ``None``).
This module imports nothing from ``sentinel.config`` at import time, so that
``sentinel.config`` can import it without a cycle. ``load_site`` loads a site file with
``load_config`` (errors located at file:line) and then checks what ties the lab section to
the site's policy.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from sentinel.config import Asset, Config, RegisterRange

Table = Literal["coils", "discretes", "holding", "input"]
READ_FC: dict[str, int] = {"coils": 1, "discretes": 2, "holding": 3, "input": 4}
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Linux interface names are at most 15 bytes; the lab adds a 5-byte suffix to bridge names.
BRIDGE_NAME = re.compile(r"^[a-z][a-z0-9-]{1,9}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _mac(value: str) -> str:
    value = value.lower()
    if not _MAC.match(value):
        raise ValueError(f"not a MAC address: {value!r}")
    return value


def _ip(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {value!r}") from None


class LabHost(_Strict):
    """A host of the lab network: its address and MAC (the attacker, the workstation)."""

    address: str
    mac: str

    _check_address = field_validator("address")(lambda cls, v: _ip(v))
    _check_mac = field_validator("mac")(lambda cls, v: _mac(v))


class Identity(_Strict):
    """What the PLC answers to FC 43/14 (read device identification) and FC 17."""

    vendor: str = Field(min_length=1, max_length=40)
    product: str = Field(min_length=1, max_length=40)
    revision: str = Field(min_length=1, max_length=20)


class TableSizes(_Strict):
    """Number of addresses of each Modbus table, from 0; reads beyond get exception 02."""

    coils: int = Field(16, ge=1, le=2000)
    discretes: int = Field(16, ge=1, le=2000)
    holding: int = Field(32, ge=1, le=10000)
    input: int = Field(32, ge=1, le=10000)


class Plc(_Strict):
    """A simulated PLC: the asset it is (by address), and what the simulation needs."""

    asset: str
    mac: str
    unit: int = Field(1, ge=1, le=247)
    identity: Identity
    process: str = Field(min_length=1)
    params: dict[str, float] = {}
    tables: TableSizes = TableSizes()

    _check_asset = field_validator("asset")(lambda cls, v: _ip(v))
    _check_mac = field_validator("mac")(lambda cls, v: _mac(v))


class Poll(_Strict):
    """One read of the HMI's poll cycle."""

    plc: str
    table: Table
    address: int = Field(0, ge=0, le=65535)
    quantity: int = Field(ge=1, le=125)

    _check_plc = field_validator("plc")(lambda cls, v: _ip(v))

    @property
    def fc(self) -> int:
        return READ_FC[self.table]


class Target(_Strict):
    """A writable holding register of a lab PLC, by the name the asset policy gives it."""

    plc: str
    tag: str

    _check_plc = field_validator("plc")(lambda cls, v: _ip(v))


class Hmi(LabHost):
    """The HMI: polls every PLC each ``period`` seconds, with jitter, over one connection per
    PLC; an operator changes a writable setpoint (within its limits) every
    ``setpoint_interval`` seconds on average."""

    period: float = Field(1.0, gt=0.05, le=60)
    jitter: float = Field(0.004, ge=0, le=0.2)  # standard deviation, seconds
    timeout: float = Field(1.0, gt=0, le=10)
    setpoint_interval: float = Field(600.0, gt=0)
    polls: list[Poll] = Field(min_length=1)
    setpoints: list[Target] = []


class Engineering(LabHost):
    """The engineering workstation: opens a maintenance session every ``session_interval``
    seconds on average (reads the configuration registers of a PLC, sometimes retunes one
    parameter within its limits), then disconnects."""

    session_interval: float = Field(1200.0, gt=0)
    tuning: list[Target] = []


class LabSection(_Strict):
    """The lab part of a site file (proposed as ``Config.lab``)."""

    subnet: str
    bridge: str
    hmi: Hmi
    engineering: Engineering
    attacker: LabHost
    plcs: list[Plc] = Field(min_length=1)

    @field_validator("subnet")
    @classmethod
    def _check_subnet(cls, v: str) -> str:
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as exc:
            raise ValueError(f"not an IPv4 network: {v!r} ({exc})") from None
        return str(net)

    @field_validator("bridge")
    @classmethod
    def _check_bridge(cls, v: str) -> str:
        if not BRIDGE_NAME.match(v):
            raise ValueError("bridge: 2-10 characters, lower case letters, digits and '-'")
        return v

    @model_validator(mode="after")
    def _check_hosts(self) -> LabSection:
        net = ipaddress.IPv4Network(self.subnet)
        hosts = [self.hmi, self.engineering, self.attacker]
        addresses = [h.address for h in hosts] + [p.asset for p in self.plcs]
        macs = [h.mac for h in hosts] + [p.mac for p in self.plcs]
        for addr in addresses:
            if ipaddress.IPv4Address(addr) not in net:
                raise ValueError(f"{addr} is not in the lab subnet {net}")
        if len(set(addresses)) != len(addresses):
            raise ValueError("two lab hosts have the same address")
        if len(set(macs)) != len(macs):
            raise ValueError("two lab hosts have the same MAC address")
        plcs = {p.asset for p in self.plcs}
        for poll in self.hmi.polls:
            if poll.plc not in plcs:
                raise ValueError(f"hmi poll of {poll.plc}, which is not a lab PLC")
        return self


# ------------------------------------------------------------------------ loading


@dataclass(frozen=True)
class Tag:
    """A named register range of a PLC, from the site's asset policy."""

    name: str
    table: str
    start: int
    end: int
    writable: bool
    min: int | None
    max: int | None


@dataclass(frozen=True)
class SiteDef:
    """A loaded site file: its Sentinel configuration and its lab section."""

    name: str  # the file's stem: hospital, energy, transport
    path: str
    config: Config
    lab: LabSection

    @property
    def site(self) -> str:
        return self.config.sites[0].name if self.config.sites else self.name

    @property
    def sector(self) -> str:
        return self.config.sites[0].sector if self.config.sites else "other"

    def asset(self, address: str) -> Asset:
        for asset in self.config.assets:
            if asset.address == address:
                return asset
        raise KeyError(address)

    def plc(self, address: str) -> Plc:
        for plc in self.lab.plcs:
            if plc.asset == address:
                return plc
        raise KeyError(address)

    def plc_name(self, address: str) -> str:
        return self.asset(address).name or address

    def tags(self, address: str) -> dict[str, Tag]:
        return {
            r.name: Tag(r.name, r.table, r.start, r.end, r.writable, r.min, r.max)
            for r in self.asset(address).registers
            if r.name
        }

    def writable(self, address: str) -> list[RegisterRange]:
        return [r for r in self.asset(address).registers if r.writable]


def sites_dir() -> Path:
    """The directory of the shipped site files (inside the installed package)."""
    return Path(str(resources.files("sentinel.lab") / "sites"))


def site_names() -> list[str]:
    return sorted(p.stem for p in sites_dir().glob("*.yaml"))


def site_path(name_or_path: str) -> str:
    """A shipped site's file by name (``hospital``), or a path as given."""
    if os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        return name_or_path
    return str(sites_dir() / f"{name_or_path}.yaml")


def load_site(name_or_path: str) -> SiteDef:
    """Load and validate a site file; every problem is reported at once, located."""
    from sentinel.config import Config, load_config
    from sentinel.errors import ConfigError, Location, SentinelError

    path = site_path(name_or_path)
    if "lab" in Config.model_fields:
        config = load_config(path)
        lab = getattr(config, "lab", None)
    else:  # a core without Config.lab: validate the lab section beside it
        config, lab = _load_without_lab_field(path)
    if lab is None:
        raise ConfigError([SentinelError("no 'lab:' section: not a lab site file", Location(path))])
    problems = _cross_check(config, lab)
    if problems:
        raise ConfigError([SentinelError(p, Location(path)) for p in problems])
    return SiteDef(Path(path).stem, path, config, lab)


def _cross_check(config: Config, lab: LabSection) -> list[str]:
    """What ties the lab to the site's policy: PLCs are assets, polls read existing tags."""
    problems = []
    assets = {a.address: a for a in config.assets}
    net = ipaddress.IPv4Network(lab.subnet)
    site_nets = [ipaddress.ip_network(n) for s in config.sites for n in s.networks]
    if not any(net.subnet_of(n) for n in site_nets if n.version == 4):  # type: ignore[arg-type]
        problems.append(f"lab.subnet {net} is not inside a network of the site")
    for i, plc in enumerate(lab.plcs):
        asset = assets.get(plc.asset)
        if asset is None or asset.role != "plc":
            problems.append(f"lab.plcs.{i}.asset: {plc.asset} is not an asset with role plc")
            continue
        sizes = plc.tables.model_dump()
        for r in asset.registers:
            if r.end < r.start:
                problems.append(f"asset {plc.asset} register {r.name}: end before start")
            if r.end >= sizes[r.table]:
                problems.append(
                    f"asset {plc.asset} register {r.name}: beyond lab.plcs.{i}.tables.{r.table}"
                )
        for who in (lab.hmi.address, lab.engineering.address):
            if asset.allowed_masters and who not in asset.allowed_masters:
                problems.append(f"asset {plc.asset}: lab host {who} is not an allowed master")
    for where, targets in (
        ("lab.hmi.setpoints", lab.hmi.setpoints),
        ("lab.engineering.tuning", lab.engineering.tuning),
    ):
        for i, t in enumerate(targets):
            regs = {r.name: r for r in assets[t.plc].registers} if t.plc in assets else {}
            reg = regs.get(t.tag)
            if reg is None or reg.table != "holding" or not reg.writable:
                problems.append(f"{where}.{i}: {t.plc} has no writable holding {t.tag!r}")
            elif reg.min is None or reg.max is None or reg.start != reg.end:
                problems.append(f"{where}.{i}: {t.tag!r} needs min, max and one address")
    for i, poll in enumerate(lab.hmi.polls):
        plc = next(p for p in lab.plcs if p.asset == poll.plc)
        if poll.address + poll.quantity > getattr(plc.tables, poll.table):
            problems.append(f"lab.hmi.polls.{i}: reads beyond the PLC's {poll.table} table")
    return problems


def _load_without_lab_field(path: str) -> tuple[Config, LabSection | None]:
    import yaml
    from pydantic import ValidationError

    from sentinel.config import Config
    from sentinel.errors import ConfigError, Location, SentinelError

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        lab = data.pop("lab", None) if isinstance(data, dict) else None
        return Config.model_validate(data), (
            LabSection.model_validate(lab) if lab is not None else None
        )
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError([SentinelError(f"bad site file: {exc}", Location(path))]) from None


def merged_config(sites: list[SiteDef], observer: str = "sentinel-lab") -> Config:
    """One Sentinel configuration watching several lab sites (the lab sensor's)."""
    from sentinel.config import Config

    data: dict[str, Any] = {"observer": {"name": observer}, "sites": [], "assets": []}
    for s in sites:
        dumped = s.config.model_dump(exclude={"lab"})
        data["sites"] += dumped["sites"]
        data["assets"] += dumped["assets"]
        data["decode"] = dumped["decode"]
    return Config.model_validate(data)
