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
    def request(self) -> ModbusMessage | None:
        """The request this response answers (paired by the decoder on transaction id,
        function code and unit id); None for requests and unpaired responses. Not a tuple
        field: records and sinks that unpack the message's fields are unchanged, and no output
        serializes it. Paired responses are ``PairedResponse``s, which carry it."""
        return None

    @property
    def pdu_type(self) -> str:
        return "REQ" if self.is_orig else "RESP"

    @property
    def is_exception(self) -> bool:
        return self.exception is not None


class PairedResponse(ModbusMessage):
    """A response the decoder paired with its request: the same fields as any
    ``ModbusMessage``, plus ``request`` (an attribute, not a field; set once, by the decoder).
    ``_replace`` keeps it."""

    request: ModbusMessage | None = None  # type: ignore[assignment]

    def _replace(self, **changes: Any) -> PairedResponse:
        new: PairedResponse = ModbusMessage._replace(self, **changes)  # type: ignore[assignment]
        new.request = self.request
        return new


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
    offset: int  # of ``data`` in this direction's stream (UDP: in the datagrams so far)
    proto: int = 6  # 6 TCP, 17 UDP


class OTEvent(NamedTuple):
    """One application message of an OT protocol decoded through tshark, normalised.

    Protocols: ``dnp3``, ``iec104`` (IEC 60870-5-104), ``s7comm``, ``enip`` (EtherNet/IP and
    the CIP it carries) and ``bacnet`` (BACnet/IP). Built by ``sentinel.decode.ot`` from
    Wireshark's dissection, joined to the native path's flow (same ``uid``, and ``conn`` and
    ``is_orig`` oriented like every other event) by ``sentinel.decode.tshark``.

    - ``direction``: ``request``, ``response`` or ``unsolicited`` (data a device sends
      without being asked: DNP3 unsolicited responses, IEC 104 spontaneous/periodic data,
      BACnet notifications).
    - ``operation``: one of ``sentinel.decode.ot.common.OPERATIONS`` (``read``, ``write``,
      ``control``, ``program_download``, ``program_upload``, ``firmware``, ``start``,
      ``stop``, ``restart``, ``file``, ``time_sync``, ``authentication``, ``diagnostics``,
      ``configuration``, ``report``, ``session``, ``other``). A response has the operation
      of the request it answers.
    - ``function`` / ``code``: the protocol's name and raw code of the message's function
      (DNP3 function code, IEC 104 ASDU type id or APCI frame, S7 function, CIP service,
      BACnet service choice); unknown codes are named ``unknown-N``.
    - ``unit``: the protocol-level device address when there is one (DNP3 link address of
      the outstation, IEC 104 common address, BACnet device instance), else None.
    - ``objects``: what the message addresses: points, IOAs, variable items, CIP paths,
      BACnet object/property, each a dict with ``address`` and, when carried, ``value``,
      ``quality``; at most ``ot.max_objects`` (the detail says how many there were).
    - ``status``: ``None`` for requests; for responses ``ok`` or the error's name.
    - ``flags``: status and quality flags by name (DNP3 IIN bits, IEC 104 quality
      descriptors, CIP/BACnet error details).
    - ``detail``: protocol-specific fields under the protocol's own key (``{"dnp3": {...}}``),
      documented in docs/ot-protocols.md.
    - ``data``: the application-layer buffer where the protocol defines one (the DNP3
      application fragment, what Suricata's ``dnp3_data`` inspects); never written to logs.
    """

    ts: float
    uid: str | None
    conn: ConnId
    is_orig: bool
    frame: int
    transport: str  # tcp | udp
    protocol: str
    direction: str
    operation: str
    function: str
    code: int | None
    unit: int | None
    objects: tuple[dict[str, Any], ...]
    status: str | None
    flags: tuple[str, ...]
    detail: dict[str, Any]
    data: bytes | None = None


class ArpEvent(NamedTuple):
    """An Ethernet/IPv4 ARP message (RFC 826): who claims which IPv4 address."""

    ts: float
    frame: int
    op: int  # 1 request, 2 reply
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str
    eth_src: str  # the frame's source MAC (may differ from sender_mac when forged)
