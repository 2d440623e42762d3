"""The detector plugin interface and registry.

A detector declares its ``id`` and the events it wants by overriding the matching ``on_*``
methods; the pipeline calls only the methods a detector overrides, so an unused event type
costs nothing. Detectors never parse bytes: they see decoded events and return findings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, NamedTuple

from mypy_extensions import mypyc_attr

from sentinel.config import Config
from sentinel.decode.flow import GateAlternative, Segments
from sentinel.events import (
    Anomaly,
    ArpEvent,
    ConnId,
    ModbusMessage,
    OTEvent,
    PacketEvent,
    StreamData,
)
from sentinel.findings import Finding

EVENT_METHODS = (
    "on_arp",
    "on_packet",
    "on_stream",
    "on_stream_batch",
    "on_modbus",
    "on_anomaly",
    "on_flow_end",
    "on_tick",
    "on_ot",
)


class StreamBatch(NamedTuple):
    """Consecutive in-order chunks of one direction of a flow (``on_stream_batch``): the same
    bytes, packets and offsets as the ``StreamData`` chunks they stand for, in one event."""

    uid: str
    conn: ConnId
    is_orig: bool
    proto: int  # 6 TCP, 17 UDP
    offset: int  # stream offset of the first byte of the first segment
    # The chunks in stream order: the flow table's ``Segments`` (parallel data, no Python
    # object per chunk); iterating either gives ``(data, ts, frame)``; a list of those too.
    segments: Segments | list[tuple[bytes, float, int]]


class StreamGate(NamedTuple):
    """Which chunks of one flow direction a detector's ``on_stream`` can raise findings on:
    those that, for one of the ``alternatives`` ``(min_size, conditions)``, have at least
    min_size bytes and, for each ``(offset, values)`` of conditions, a byte at offset that
    is one of the values. The pipeline builds no event for other chunks (they may still come
    when another detector wants them: a gate is a promise about findings, not a filter)."""

    alternatives: tuple[GateAlternative, ...] = ()


NO_CHUNK = StreamGate()  # the direction's chunks cannot raise a finding


class ModbusInterest(NamedTuple):
    """Which decoded Modbus messages of one flow direction a detector's ``on_modbus`` needs
    (to raise findings or to keep its state): those with these function codes (None: all),
    and when ``exceptions`` every message whose function byte has the exception bit
    (exception responses, requests with an invalid function code). A message that comes
    with a protocol event (``on_anomaly`` just before it) goes to every detector."""

    functions: frozenset[int] | None = None
    exceptions: bool = True


# Compiled (docs/native.md): the built-in detectors in compiled modules are then native
# classes too (attributes in slots, not a dict); others subclass it as usual.
@mypyc_attr(allow_interpreted_subclasses=True)
class Detector:
    """Base class: override ``on_*`` methods; each returns the findings it raises (or None)."""

    id: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # For ``on_stream_batch``: how long (packet time) chunks may wait to be handed over in a
    # live run.
    batch_seconds: float = 1.0
    # Set by the pipeline before its run: True for a live sensor, whose findings must come
    # within seconds of their packets; False reading a capture file, where only the findings
    # matter, so a detector may wait for more data (YARA scans stream tails when their window
    # fills or their flow ends instead of every few seconds). True for a detector used alone.
    live: bool = True

    def __init__(self, config: Config) -> None:
        self.config = config

    def on_packet(self, packet: PacketEvent) -> Iterable[Finding] | None:
        """Every TCP/UDP packet (costly: subscribe only if rules need raw packets)."""
        raise NotImplementedError

    def on_stream(self, chunk: StreamData) -> Iterable[Finding] | None:
        """In-order reassembled payload bytes, per direction, one call per chunk (TCP segment
        or UDP datagram), in step with the other events of the flow."""
        raise NotImplementedError

    def on_stream_batch(self, batch: StreamBatch) -> Iterable[Finding] | None:
        """The same chunks as ``on_stream``, several at a time: for detectors that buffer bytes
        anyway and can take them late (by at most ``batch_seconds`` of packet time and a
        tick, and always before the flow's ``on_flow_end``). Far cheaper per chunk; a detector
        that overrides it gets no ``on_stream`` calls from the pipeline."""
        raise NotImplementedError

    def modbus_interest(self, uid: str, conn: ConnId, is_orig: bool) -> ModbusInterest | None:
        """For ``on_modbus``: asked once per flow direction, at its first message; None (the
        default) wants every message."""
        return None

    def stream_gate(self, uid: str, conn: ConnId, is_orig: bool, proto: int) -> StreamGate | None:
        """For ``on_stream``: asked once per flow direction, at its first chunk; None (the
        default) wants every chunk, a ``StreamGate`` only those it lets through."""
        return None

    def takes_batches(self, uid: str) -> bool:
        """For ``on_stream_batch``: whether the next chunks of flow ``uid`` may come late, in
        batches (True), or must come one by one, in step with other flows (False: the
        pipeline asks again after each)."""
        return True

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

    def subscriptions(self) -> list[str]:
        """The events this detector gets: the ``on_*`` methods its class overrides."""
        cls = type(self)
        wanted = [m for m in EVENT_METHODS if getattr(cls, m) is not getattr(Detector, m)]
        if "on_stream_batch" in wanted and "on_stream" in wanted:
            wanted.remove("on_stream")  # batches carry the same chunks
        return wanted


REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: add a detector to the registry; a duplicate id is an error."""
    if not cls.id:
        raise ValueError(f"{cls.__name__} has no id")
    if cls.id in REGISTRY:
        raise ValueError(f"duplicate detector id {cls.id!r}")
    REGISTRY[cls.id] = cls
    return cls
