"""Config sections of the scheduler: ``schedule:`` (the service) and ``jobs:`` (what runs).

Example::

    schedule:
      store: /var/lib/sentinel/jobs.sqlite   # default: <state>/jobs.sqlite
      misfire_grace_time: 300                # a run missed by less than this still happens
    jobs:
      plant-inventory:
        type: modbus.inventory
        every: 3600                          # seconds; or cron: "15 * * * *"
        scopes: [198.51.100.0/26]            # every address a job touches must be inside
        targets:
          - {address: 198.51.100.20, unit: 1}
          - address: 198.51.100.21
            identity_registers: [{name: firmware, table: holding, address: 100, count: 8}]
        discover: {port: 502, unit: 1}       # also probe every address of the scopes
      theatre-integrity:
        type: modbus.integrity
        every: 300
        scopes: [198.51.100.20/32]
        targets:
          - address: 198.51.100.20
            points:
              - {name: temp_setpoint, table: holding, address: 0, golden: 215, min: 180, max: 260}
              - {name: supply_fan_run, table: coils, address: 0, golden: true}

Scan safety settings (``rate``, ``timeout``, ``max_latency``, ``latency_factor``) have
conservative defaults; see docs/scheduler.md. An address outside a job's scopes makes the
config invalid (and ``ScanGuard`` refuses it again at run time).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from sentinel.netaddr import IPAddress, IPNetwork

MAX_DISCOVER_HOSTS = 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleSettings(_Strict):
    """``schedule:`` — the APScheduler service (persistent SQLite job store)."""

    enabled: bool = True
    store: str | None = None  # SQLite file; default <state>/jobs.sqlite
    misfire_grace_time: int = Field(300, ge=1)
    coalesce: bool = True
    max_workers: int = Field(2, ge=1, le=16)
    timezone: str = "UTC"


class _Job(_Strict):
    enabled: bool = True
    every: float | None = Field(None, ge=10)  # seconds between runs
    cron: str | None = None  # crontab expression (minute hour day month day-of-week)
    dry_run: bool = False
    description: str = ""

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"bad cron expression {v!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_schedule(self) -> _Job:
        if self.every is not None and self.cron is not None:
            raise ValueError("give either every or cron, not both")
        return self


class IdentityRegister(_Strict):
    """Registers that hold an identity string (firmware version, serial number)."""

    name: str = Field(min_length=1, max_length=64)
    table: Literal["holding", "input"] = "holding"
    address: int = Field(ge=0, le=65535)
    count: int = Field(1, ge=1, le=32)
    encoding: Literal["ascii", "uint16"] = "ascii"


class IntegrityPoint(_Strict):
    """One register or coil, its golden value and/or its safe limits."""

    name: str = Field(min_length=1, max_length=64)
    table: Literal["holding", "input", "coils", "discretes"] = "holding"
    address: int = Field(ge=0, le=65535)
    golden: int | bool | None = None
    min: int | None = None
    max: int | None = None

    @model_validator(mode="after")
    def _something_to_check(self) -> IntegrityPoint:
        if self.golden is None and self.min is None and self.max is None:
            raise ValueError("give golden, min or max")
        if self.table in ("coils", "discretes") and (self.min is not None or self.max is not None):
            raise ValueError("coils and discrete inputs have a golden value, not limits")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


class ModbusTarget(_Strict):
    address: IPAddress
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255)
    name: str | None = None
    identity_registers: list[IdentityRegister] = []
    points: list[IntegrityPoint] = []


class Discover(_Strict):
    """Probe every address of the scopes (bounded), not only the listed targets."""

    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255)
    max_hosts: int = Field(256, ge=1, le=MAX_DISCOVER_HOSTS)


class _ModbusJob(_Job):
    scopes: list[IPNetwork] = Field(min_length=1)
    targets: list[ModbusTarget] = []
    rate: float = Field(5.0, gt=0, le=100)  # requests per second, for the whole job
    timeout: float = Field(2.0, gt=0, le=30)  # per request
    max_latency: float = Field(1.0, gt=0, le=30)  # abort a device answering slower than this
    latency_factor: float = Field(5.0, ge=1.5)  # ... or this many times its first answers
    connect_timeout: float = Field(2.0, gt=0, le=30)

    @model_validator(mode="after")
    def _in_scope(self) -> _ModbusJob:
        nets = [ipaddress.ip_network(n) for n in self.scopes]
        for i, target in enumerate(self.targets):
            addr = ipaddress.ip_address(target.address)
            if not any(addr in net for net in nets):
                raise ValueError(
                    f"targets.{i}: {target.address} is outside the job's scopes "
                    f"({', '.join(self.scopes)})"
                )
        return self


class InventoryJob(_ModbusJob):
    """``modbus.inventory``: read-only identification of the devices in the scopes."""

    type: Literal["modbus.inventory"]
    discover: Discover | None = None
    report_first_run: bool = False  # findings for every device on the first inventory

    @model_validator(mode="after")
    def _discover_size(self) -> InventoryJob:
        if self.discover is not None:
            hosts = sum(ipaddress.ip_network(n).num_addresses for n in self.scopes)
            if hosts > self.discover.max_hosts:
                raise ValueError(
                    f"discover would probe {hosts} addresses, more than max_hosts "
                    f"({self.discover.max_hosts}): narrow the scopes"
                )
        if not self.targets and self.discover is None:
            raise ValueError("give targets, discover, or both")
        return self


class IntegrityJob(_ModbusJob):
    """``modbus.integrity``: configured registers and coils against golden values and limits."""

    type: Literal["modbus.integrity"]
    use_asset_limits: bool = True  # add the config's assets' register min/max as points

    @model_validator(mode="after")
    def _targets(self) -> IntegrityJob:
        if not self.targets:
            raise ValueError("an integrity job needs targets")
        return self


class RetentionJob(_Job):
    """``retention``: what ``privacy.retention`` says has expired (``sentinel.privacy``).

    Snapshots of ``capture.snapshot`` are covered when their folder is listed in
    ``privacy.retention.capture_dirs``.
    """

    type: Literal["retention"]


class RetrainWindow(_Strict):
    """A span of traffic an operator approved as normal, to learn a baseline from."""

    start: str
    end: str
    approved_by: str = Field(min_length=1)

    @field_validator("approved_by")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("approved_by names who approved the window")
        return v.strip()


class RetrainJob(_Job):
    """``model.retrain`` (opt-in): retrain the anomaly model from approved windows only."""

    type: Literal["model.retrain"]
    windows: list[RetrainWindow] = Field(min_length=1)
    options: dict[str, Any] = {}


JobSettings = Annotated[
    InventoryJob | IntegrityJob | RetentionJob | RetrainJob, Field(discriminator="type")
]
ModbusJob = InventoryJob | IntegrityJob
JobName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Jobs = dict[JobName, JobSettings]
