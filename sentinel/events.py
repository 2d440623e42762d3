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
