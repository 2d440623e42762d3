"""The detector plugin interface and registry.

A detector declares its ``id`` and the events it wants by overriding the matching ``on_*``
methods; the pipeline calls only the methods a detector overrides, so an unused event type
costs nothing. Detectors never parse bytes: they see decoded events and return findings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from sentinel.config import Config
from sentinel.events import Anomaly, ArpEvent, ModbusMessage, OTEvent, PacketEvent, StreamData
from sentinel.findings import Finding

EVENT_METHODS = (
    "on_arp",
    "on_packet",
    "on_stream",
    "on_modbus",
    "on_anomaly",
    "on_flow_end",
    "on_tick",
    "on_ot",
)


class Detector:
    """Base class: override ``on_*`` methods; each returns the findings it raises (or None)."""

    id: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, config: Config) -> None:
        self.config = config

    def on_packet(self, packet: PacketEvent) -> Iterable[Finding] | None:
        """Every TCP/UDP packet (costly: subscribe only if rules need raw packets)."""
        raise NotImplementedError

    def on_stream(self, chunk: StreamData) -> Iterable[Finding] | None:
        """In-order reassembled payload bytes, per direction."""
        raise NotImplementedError

    def on_modbus(self, msg: ModbusMessage) -> Iterable[Finding] | None:
        raise NotImplementedError

    def on_anomaly(self, event: Anomaly) -> Iterable[Finding] | None:
        raise NotImplementedError

    def on_flow_end(self, flow: dict) -> Iterable[Finding] | None:
        raise NotImplementedError

    def on_tick(self, now: float) -> Iterable[Finding] | None:
        raise NotImplementedError

    def on_arp(self, event: ArpEvent) -> Iterable[Finding] | None:
        """Ethernet/IPv4 ARP messages (who claims which address)."""
        raise NotImplementedError

    def on_ot(self, event: OTEvent) -> Iterable[Finding] | None:
        """DNP3, IEC 104, S7comm, EtherNet/IP-CIP and BACnet messages decoded through tshark
        (``OTEvent``); they may arrive up to a second of packet time after their frame, and
        after their flow ended when tshark lags behind (see ``sentinel/decode/tshark.py``)."""
        raise NotImplementedError

    @classmethod
    def subscriptions(cls) -> list[str]:
        return [m for m in EVENT_METHODS if getattr(cls, m) is not getattr(Detector, m)]


REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: add a detector to the registry; a duplicate id is an error."""
    if not cls.id:
        raise ValueError(f"{cls.__name__} has no id")
    if cls.id in REGISTRY:
        raise ValueError(f"duplicate detector id {cls.id!r}")
    REGISTRY[cls.id] = cls
    return cls
