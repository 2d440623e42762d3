"""The data model: what decoders emit and detectors consume.

Hot-path events (one per Modbus message, one per anomaly) are ``NamedTuple``s: immutable,
typed and several times cheaper to build than frozen dataclasses, which matters at hundreds of
thousands of messages per second. Every event carries its origin: the flow ``uid`` and the
capture frame number where it was completed.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ConnId(NamedTuple):
    """A connection's endpoints, oriented like Zeek's ``conn_id``: orig is the TCP client."""

    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int


class ModbusMessage(NamedTuple):
    """One Modbus/TCP application data unit (a request or a response).

    ``func`` is Zeek's name of the raw function byte (``READ_COILS``, ``READ_COILS_EXCEPTION``,
    ``unknown-156``) so that logs agree with Zeek's ``modbus.log``; ``fc`` is the function code
    without the exception bit. ``fields`` holds what the function's PDU decodes to (address,
    quantity, values, sub_function, mei_type, objects, server_id, ...), see ``decode.modbus``.
    """

    ts: float
    uid: str
    conn: ConnId
    is_orig: bool
    tid: int
    pid: int
    unit: int
    fc: int
    func: str
    exception: str | None
    len: int
    frame: int
    fields: dict[str, Any]
    latency: float | None = None

    @property
    def pdu_type(self) -> str:
        return "REQ" if self.is_orig else "RESP"

    @property
    def is_exception(self) -> bool:
        return self.exception is not None


class Anomaly(NamedTuple):
    """Malformed or unexpected traffic, named like Suricata's app-layer events.

    ``name`` is ``<protocol>.<event>`` (``modbus.invalid_length``); rules can match it with
    ``app-layer-event`` and the run's stats count it.
    """

    ts: float
    uid: str
    conn: ConnId
    is_orig: bool
    name: str
    detail: str
    frame: int


class PacketEvent(NamedTuple):
    """A TCP or UDP packet as packet-level rules see it (built only if a detector asks)."""

    ts: float
    frame: int
    uid: str
    conn: ConnId
    is_orig: bool
    proto: int  # 6 TCP, 17 UDP
    tcp_flags: int
    payload: bytes
    established: bool


class StreamData(NamedTuple):
    """In-order reassembled bytes of one direction of a TCP connection (or a UDP payload)."""

    ts: float
    frame: int
    uid: str
    conn: ConnId
    is_orig: bool
    data: bytes
    offset: int  # of ``data`` in this direction's stream
