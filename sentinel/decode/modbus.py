"""Native Modbus/TCP decoder: MBAP framing over reassembled streams, every public function.

One ``ModbusAnalyzer`` per connection. It frames application data units (ADUs) from each
direction's byte stream (several per segment or one across segments), decodes the PDU of every
public function code (spec V1.1b3 section 6) into plain fields, pairs responses with requests
by transaction id, and reports what is wrong as named anomalies (Suricata-style names):

- ``modbus.non_modbus_traffic``: the connection's first bytes are not Modbus/TCP (TLS, RPC...
  on port 502); the connection is not decoded further, as Zeek does.
- ``modbus.invalid_protocol_id`` / ``modbus.invalid_length``: a broken MBAP header once the
  connection is known to be Modbus. The stream cannot be trusted until the next segment, where
  framing restarts (Modbus devices send one ADU per segment, so this resynchronises).
- ``modbus.truncated_pdu``: the PDU ends before its fields do.
- ``modbus.invalid_value``: a field outside what the spec allows (coil value, byte counts).
- ``modbus.unknown_function``: a function code that neither the spec nor Zeek's table names.
- ``modbus.unsolicited_response``: a response no open request asked for.
- ``modbus.flooded``: more open requests than ``max_pending`` (oldest are dropped).

Decoders know nothing of detection: they only emit ``ModbusMessage`` and ``Anomaly`` events.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, Protocol

from sentinel.decode.modbus_codes import (
    DEVICE_ID_OBJECTS,
    DIAGNOSTIC_SUBFUNCTIONS,
    FUNC_BY_RAW,
    FUNCTION_NAMES,
    MEI_READ_DEVICE_ID,
    exception_name,
)
from sentinel.events import Anomaly, ModbusMessage, PairedResponse

_mbap = struct.Struct(">HHHBB").unpack_from
_u16 = struct.Struct(">H").unpack_from
_u16x2 = struct.Struct(">HH").unpack_from
_u16x3 = struct.Struct(">HHH").unpack_from
_u16x4 = struct.Struct(">HHHH").unpack_from

MAX_ADU_LENGTH: Final = 254  # MBAP length field: unit id + PDU of at most 253 bytes (spec 4.1)
# bit i of a byte, least significant first (spec 6.1: coils packed LSB first)
_BITS = tuple(tuple(bool(b >> i & 1) for i in range(8)) for b in range(256))


Fields = dict[str, Any]


class EventBus(Protocol):
    def modbus(self, msg: ModbusMessage) -> None: ...

    def anomaly(self, event: Anomaly) -> None: ...


class Malformed(Exception):
    """A PDU that does not follow the spec; becomes an anomaly, never escapes the decoder."""

    def __init__(self, name: str, detail: str, fields: Fields | None = None) -> None:
        super().__init__(detail)
        self.name = name
        self.detail = detail
        self.fields = fields or {}  # what could be decoded before the problem


def _expect(data: bytes, size: int) -> None:
    if len(data) < size:
        raise Malformed("modbus.truncated_pdu", f"{len(data)} data bytes, {size} needed")
    if len(data) > size:
        raise Malformed("modbus.invalid_length", f"{len(data)} data bytes, {size} expected")


def _byte_count(data: bytes, at: int = 0) -> bytes:
    """The ``byte_count`` field at ``at`` and the bytes it announces."""
    if len(data) <= at:
        raise Malformed("modbus.truncated_pdu", "byte count missing")
    count = data[at]
    body = data[at + 1 : at + 1 + count]
    if len(body) < count:
        raise Malformed("modbus.truncated_pdu", f"byte count {count}, {len(body)} bytes present")
    if len(data) > at + 1 + count:
        raise Malformed("modbus.invalid_length", f"{len(data) - at - 1 - count} bytes after data")
    return body


def _bits(data: bytes, quantity: int | None) -> list[bool]:
    values = [bit for byte in data for bit in _BITS[byte]]
    return values if quantity is None else values[:quantity]


def _registers(data: bytes) -> list[int]:
    if len(data) % 2:
        raise Malformed("modbus.invalid_value", f"odd register byte count {len(data)}")
    return list(struct.unpack(f">{len(data) // 2}H", data))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


# ---------------------------------------------------------------------------- requests


def _req_read(data: bytes) -> Fields:  # FC 1-4 (spec 6.1-6.4)
    _expect(data, 4)
    address, quantity = _u16x2(data)
    return {"address": address, "quantity": quantity}


def _req_write_single_coil(data: bytes) -> Fields:  # FC 5 (6.5)
    _expect(data, 4)
    address, value = _u16x2(data)
    if value not in (0x0000, 0xFF00):
        raise Malformed("modbus.invalid_value", f"coil value 0x{value:04x}")
    return {"address": address, "values": [value == 0xFF00]}


def _req_write_single_register(data: bytes) -> Fields:  # FC 6 (6.6)
    _expect(data, 4)
    address, value = _u16x2(data)
    return {"address": address, "values": [value]}


def _empty(data: bytes) -> Fields:  # FC 7, 11, 12, 17 requests (no data)
    _expect(data, 0)
    return {}


def _diagnostics(data: bytes) -> Fields:  # FC 8 (6.8), request and response
    if len(data) < 2:
        raise Malformed("modbus.truncated_pdu", "sub-function missing")
    sub = _u16(data)[0]
    fields: Fields = {
        "sub_function": sub,
        "sub_function_name": DIAGNOSTIC_SUBFUNCTIONS.get(sub, f"unknown-{sub}"),
    }
    rest = data[2:]
    fields["data"] = list(struct.unpack(f">{len(rest) // 2}H", rest[: len(rest) // 2 * 2]))
    if sub not in DIAGNOSTIC_SUBFUNCTIONS:
        raise Malformed("modbus.unknown_diagnostic_subfunction", f"sub-function {sub}", fields)
    return fields


def _req_write_multiple_coils(data: bytes) -> Fields:  # FC 15 (6.11)
    if len(data) < 5:
        raise Malformed("modbus.truncated_pdu", f"{len(data)} data bytes, at least 5 needed")
    address, quantity = _u16x2(data)
    body = _byte_count(data, 4)
    if len(body) != (quantity + 7) // 8:
        raise Malformed("modbus.invalid_value", f"{len(body)} bytes for {quantity} coils")
    return {"address": address, "quantity": quantity, "values": _bits(body, quantity)}


def _req_write_multiple_registers(data: bytes) -> Fields:  # FC 16 (6.12)
    if len(data) < 5:
        raise Malformed("modbus.truncated_pdu", f"{len(data)} data bytes, at least 5 needed")
    address, quantity = _u16x2(data)
    body = _byte_count(data, 4)
    if len(body) != quantity * 2:
        raise Malformed("modbus.invalid_value", f"{len(body)} bytes for {quantity} registers")
    return {"address": address, "quantity": quantity, "values": _registers(body)}


def _req_read_file_record(data: bytes) -> Fields:  # FC 20 (6.14)
    body = _byte_count(data)
    if len(body) % 7:
        raise Malformed(
            "modbus.invalid_value", f"sub-request bytes {len(body)} not a multiple of 7"
        )
    records = []
    for pos in range(0, len(body), 7):
        ref_type = body[pos]
        file_no, record_no, length = _u16x3(body, pos + 1)
        records.append(
            {"ref_type": ref_type, "file": file_no, "record": record_no, "length": length}
        )
    return {"records": records}


def _file_records_with_data(data: bytes) -> Fields:  # FC 21 (6.15), request and response
    body = _byte_count(data)
    records = []
    pos = 0
    while pos < len(body):
        if pos + 7 > len(body):
            raise Malformed("modbus.truncated_pdu", "file sub-request header cut")
        ref_type = body[pos]
        file_no, record_no, length = _u16x3(body, pos + 1)
        words = body[pos + 7 : pos + 7 + length * 2]
        if len(words) < length * 2:
            raise Malformed("modbus.truncated_pdu", "file record data cut")
        records.append(
            {
                "ref_type": ref_type,
                "file": file_no,
                "record": record_no,
                "values": _registers(words),
            }
        )
        pos += 7 + length * 2
    return {"records": records}


def _mask_write(data: bytes) -> Fields:  # FC 22 (6.16), request and response
    _expect(data, 6)
    address, and_mask, or_mask = _u16x3(data)
    return {"address": address, "and_mask": and_mask, "or_mask": or_mask}


def _req_read_write_registers(data: bytes) -> Fields:  # FC 23 (6.17)
    if len(data) < 9:
        raise Malformed("modbus.truncated_pdu", f"{len(data)} data bytes, at least 9 needed")
    read_address, read_quantity, write_address, write_quantity = _u16x4(data)
    body = _byte_count(data, 8)
    if len(body) != write_quantity * 2:
        raise Malformed("modbus.invalid_value", f"{len(body)} bytes for {write_quantity} registers")
    return {
        "read_address": read_address,
        "read_quantity": read_quantity,
        "address": write_address,
        "quantity": write_quantity,
        "values": _registers(body),
    }


def _req_read_fifo(data: bytes) -> Fields:  # FC 24 (6.18)
    _expect(data, 2)
    return {"address": _u16(data)[0]}


def _req_encapsulated(data: bytes) -> Fields:  # FC 43 (6.19-6.21)
    if not data:
        raise Malformed("modbus.truncated_pdu", "MEI type missing")
    mei = data[0]
    if mei == MEI_READ_DEVICE_ID:
        _expect(data[1:], 2)
        return {"mei_type": mei, "read_device_id_code": data[1], "object_id": data[2]}
    return {"mei_type": mei, "data_length": len(data) - 1}


REQUEST_DECODERS: dict[int, Callable[[bytes], Fields]] = {
    1: _req_read,
    2: _req_read,
    3: _req_read,
    4: _req_read,
    5: _req_write_single_coil,
    6: _req_write_single_register,
    7: _empty,
    8: _diagnostics,
    11: _empty,
    12: _empty,
    15: _req_write_multiple_coils,
    16: _req_write_multiple_registers,
    17: _empty,
    20: _req_read_file_record,
    21: _file_records_with_data,
    22: _mask_write,
    23: _req_read_write_registers,
    24: _req_read_fifo,
    43: _req_encapsulated,
}


# ---------------------------------------------------------------------------- responses
def _resp_bits(data: bytes, request: Fields | None) -> Fields:  # FC 1, 2
    body = _byte_count(data)
    quantity = request.get("quantity") if request else None
    if quantity is not None and len(body) != (quantity + 7) // 8:
        raise Malformed("modbus.invalid_value", f"{len(body)} bytes for {quantity} coils")
    return {"values": _bits(body, quantity)}


def _resp_registers(data: bytes, request: Fields | None) -> Fields:  # FC 3, 4, 23
    count = data[0] if data else -1
    if count == len(data) - 1 and not count & 1:  # the common, well-formed case, inline
        values = list(struct.unpack(f">{count >> 1}H", data[1:]))
    else:
        values = _registers(_byte_count(data))
    fields: Fields = {"values": values}
    if request:
        quantity = request.get("read_quantity", request.get("quantity"))
        address = request.get("read_address", request.get("address"))
        fields["address"] = address
        if quantity is not None and quantity != len(values):
            fields["quantity"] = len(values)
            raise Malformed(
                "modbus.invalid_value", f"{len(values)} registers, {quantity} asked", fields
            )
        fields["quantity"] = quantity
    return fields


def _resp_write_single(data: bytes, request: Fields | None) -> Fields:  # FC 5, 6 echo
    _expect(data, 4)
    address, value = _u16x2(data)
    return {"address": address, "values": [value]}


def _resp_write_single_coil(data: bytes, request: Fields | None) -> Fields:
    fields = _resp_write_single(data, request)
    value = fields["values"][0]
    if value not in (0x0000, 0xFF00):
        raise Malformed("modbus.invalid_value", f"coil value 0x{value:04x}")
    fields["values"] = [value == 0xFF00]
    return fields


def _resp_exception_status(data: bytes, request: Fields | None) -> Fields:  # FC 7
    _expect(data, 1)
    return {"status": data[0]}


def _resp_diagnostics(data: bytes, request: Fields | None) -> Fields:  # FC 8
    return _diagnostics(data)


def _resp_comm_event_counter(data: bytes, request: Fields | None) -> Fields:  # FC 11
    _expect(data, 4)
    status, count = _u16x2(data)
    return {"status": status, "event_count": count}


def _resp_comm_event_log(data: bytes, request: Fields | None) -> Fields:  # FC 12
    body = _byte_count(data)
    if len(body) < 6:
        raise Malformed("modbus.truncated_pdu", "event log header cut")
    status, event_count, message_count = _u16x3(body)
    return {
        "status": status,
        "event_count": event_count,
        "message_count": message_count,
        "events": list(body[6:]),
    }


def _resp_write_multiple(data: bytes, request: Fields | None) -> Fields:  # FC 15, 16
    _expect(data, 4)
    address, quantity = _u16x2(data)
    return {"address": address, "quantity": quantity}


def _resp_report_server_id(data: bytes, request: Fields | None) -> Fields:  # FC 17 (6.13)
    body = _byte_count(data)
    if not body:
        raise Malformed("modbus.truncated_pdu", "empty server id")
    fields: Fields = {"server_id": body[0]}
    if len(body) >= 2:
        fields["run_indicator"] = body[1] == 0xFF
        if len(body) > 2:
            fields["server_id_data"] = _text(body[2:])
    return fields


def _resp_read_file_record(data: bytes, request: Fields | None) -> Fields:  # FC 20
    body = _byte_count(data)
    records = []
    pos = 0
    while pos < len(body):
        length = body[pos]
        chunk = body[pos + 2 : pos + 1 + length]
        if length < 1 or len(chunk) < length - 1:
            raise Malformed("modbus.truncated_pdu", "file record response cut")
        records.append({"ref_type": body[pos + 1], "values": _registers(chunk)})
        pos += 1 + length
    return {"records": records}


def _resp_file_records_with_data(data: bytes, request: Fields | None) -> Fields:  # FC 21
    return _file_records_with_data(data)


def _resp_mask_write(data: bytes, request: Fields | None) -> Fields:  # FC 22
    return _mask_write(data)


def _resp_read_fifo(data: bytes, request: Fields | None) -> Fields:  # FC 24 (6.18)
    if len(data) < 4:
        raise Malformed("modbus.truncated_pdu", "FIFO header cut")
    byte_count, fifo_count = _u16x2(data)
    body = data[4:]
    if len(body) != fifo_count * 2 or byte_count != 2 + fifo_count * 2:
        raise Malformed("modbus.invalid_value", f"FIFO count {fifo_count}, {len(body)} bytes")
    return {"values": _registers(body)}


def _resp_encapsulated(data: bytes, request: Fields | None) -> Fields:  # FC 43/14 (6.21)
    if not data:
        raise Malformed("modbus.truncated_pdu", "MEI type missing")
    mei = data[0]
    if mei != MEI_READ_DEVICE_ID:
        return {"mei_type": mei, "data_length": len(data) - 1}
    if len(data) < 7:
        raise Malformed("modbus.truncated_pdu", "device identification header cut")
    fields: Fields = {
        "mei_type": mei,
        "read_device_id_code": data[1],
        "conformity_level": data[2],
        "more_follows": data[3] == 0xFF,
        "next_object_id": data[4],
    }
    count = data[5]
    objects: dict[str, str] = {}
    pos = 6
    for _ in range(count):
        if pos + 2 > len(data):
            fields["objects"] = objects
            raise Malformed("modbus.truncated_pdu", "device identification object cut", fields)
        object_id, length = data[pos], data[pos + 1]
        value = data[pos + 2 : pos + 2 + length]
        if len(value) < length:
            fields["objects"] = objects
            raise Malformed("modbus.truncated_pdu", "device identification object cut", fields)
        objects[DEVICE_ID_OBJECTS.get(object_id, f"object_{object_id}")] = _text(value)
        pos += 2 + length
    fields["objects"] = objects
    return fields


RESPONSE_DECODERS: dict[int, Callable[[bytes, Fields | None], Fields]] = {
    1: _resp_bits,
    2: _resp_bits,
    3: _resp_registers,
    4: _resp_registers,
    5: _resp_write_single_coil,
    6: _resp_write_single,
    7: _resp_exception_status,
    8: _resp_diagnostics,
    11: _resp_comm_event_counter,
    12: _resp_comm_event_log,
    15: _resp_write_multiple,
    16: _resp_write_multiple,
    17: _resp_report_server_id,
    20: _resp_read_file_record,
    21: _resp_file_records_with_data,
    22: _resp_mask_write,
    23: _resp_registers,
    24: _resp_read_fifo,
    43: _resp_encapsulated,
}


# ---------------------------------------------------------------------------- the analyzer
class ModbusAnalyzer:
    """Modbus/TCP over one connection (see the module docstring)."""

    __slots__ = (
        "_buffers",
        "_bus",
        "_emit",
        "_flooded",
        "_pending",
        "_requests",
        "client_functions",
        "conn",
        "disabled",
        "flow",
        "func_counts",
        "identity",
        "max_pending",
        "server_functions",
        "server_id",
        "service",
        "uid",
        "unanswered",
        "units",
    )

    def __init__(self, flow: Any, bus: EventBus, max_pending: int = 500) -> None:
        self.flow = flow
        self.uid: str = flow.uid
        self.conn = flow.conn
        self._bus = bus
        # The bus's message handler, taken once: per message, a call without a look-up on
        # the bus (an object of its own, cold by the time the connection's next message comes)
        self._emit: Callable[[ModbusMessage], None] = bus.modbus
        self.max_pending = max_pending
        self.service: str | None = None
        self.disabled = False
        self.unanswered = 0
        # A summary of the connection for the asset inventory and the run's stats, kept here
        # because it costs a set.add per message instead of a call per message downstream.
        self.func_counts = [0] * 256  # messages per raw function byte
        self.client_functions: set[int] = set()
        self.server_functions: set[int] = set()
        self.units: set[int] = set()
        self.identity: dict[str, str] = {}  # FC 43/14 objects
        self.server_id: dict[str, Any] | None = None  # FC 17
        self._buffers = [b"", b""]  # [responder, originator]
        self._pending: dict[int, ModbusMessage] = {}  # tid -> open request, oldest first
        self._requests = 0
        self._flooded = False

    # -- stream input
    def feed(self, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
        if self.disabled:
            return
        buf = self._buffers[is_orig]
        buf = buf + data if buf else data
        pos = 0
        size = len(buf)
        while size - pos >= 8:
            tid, pid, length, unit, raw_fc = _mbap(buf, pos)
            if pid != 0 or length < 2 or length > MAX_ADU_LENGTH:
                self._framing_error(is_orig, ts, frame, pid, length)
                return
            end = pos + 6 + length
            if end > size:
                break
            self._message(is_orig, tid, length, unit, raw_fc, buf[pos + 8 : end], ts, frame)
            pos = end
        self._buffers[is_orig] = buf[pos:] if pos < size else b""

    def gap(self, is_orig: bool, ts: float, frame: int) -> None:
        """Bytes are missing from this direction: a partial ADU can never complete."""
        self._cut(is_orig, ts, frame, "a capture gap")

    def finish(self, ts: float) -> None:
        frame = self.flow.last_frame
        for is_orig in (True, False):
            self._cut(is_orig, ts, frame, "the end of the connection")
        self.unanswered += len(self._pending)
        self._pending.clear()

    def _cut(self, is_orig: bool, ts: float, frame: int, why: str) -> None:
        """A partial ADU that will never complete: keep what its header says, like Zeek does
        (Zeek logs a message as soon as its MBAP header is parsed)."""
        buf = self._buffers[is_orig]
        self._buffers[is_orig] = b""
        if self.disabled or not buf:
            return
        if len(buf) >= 8 and self.service is not None:
            tid, _pid, length, unit, raw_fc = _mbap(buf, 0)
            self._anomaly(
                is_orig,
                ts,
                frame,
                "modbus.incomplete_adu",
                f"{len(buf) - 6} of {length} bytes before {why}",
            )
            self._message(is_orig, tid, length, unit, raw_fc, None, ts, frame)
        elif self.service is None:
            self._anomaly(
                is_orig,
                ts,
                frame,
                "modbus.non_modbus_traffic",
                f"{len(buf)} bytes that never formed a Modbus/TCP message before {why}",
            )

    # -- internals
    def _framing_error(self, is_orig: bool, ts: float, frame: int, pid: int, length: int) -> None:
        self._buffers[is_orig] = b""
        if self.service is None:
            # Never seen a valid ADU on this connection: it is not Modbus (Zeek disables its
            # analyzer the same way on the MBAP protocol-id check).
            self.disabled = True
            self._buffers = [b"", b""]
            self._anomaly(
                is_orig,
                ts,
                frame,
                "modbus.non_modbus_traffic",
                f"first bytes are not Modbus/TCP (protocol id {pid}, length {length})",
            )
        elif pid != 0:
            self._anomaly(is_orig, ts, frame, "modbus.invalid_protocol_id", f"protocol id {pid}")
        else:
            self._anomaly(is_orig, ts, frame, "modbus.invalid_length", f"MBAP length {length}")

    def _message(
        self,
        is_orig: bool,
        tid: int,
        length: int,
        unit: int,
        raw_fc: int,
        data: bytes | None,
        ts: float,
        frame: int,
    ) -> None:
        """Decode and emit one ADU; ``data`` is None when only the header arrived."""
        fc = raw_fc & 0x7F
        incomplete = data is None
        if data is None:
            data = b""
        problem: Malformed | None = None
        exception = None
        latency = None
        request: Fields | None = None
        open_request: ModbusMessage | None = None
        fields: Fields
        if is_orig:
            decoder = REQUEST_DECODERS.get(raw_fc)
            try:
                fields = decoder(data) if decoder and not incomplete else {}
            except Malformed as exc:
                problem, fields = exc, exc.fields
            except struct.error as exc:
                problem, fields = Malformed("modbus.truncated_pdu", str(exc)), {}
            self._requests += 1
            pending = self._pending
            if len(pending) >= self.max_pending:
                del pending[next(iter(pending))]
                self.unanswered += 1
                if not self._flooded:
                    self._flooded = True
                    self._anomaly(
                        is_orig,
                        ts,
                        frame,
                        "modbus.flooded",
                        f"more than {self.max_pending} requests without response",
                    )
        else:
            open_request = self._pending.get(tid)
            if open_request is not None and open_request.fc == fc and open_request.unit == unit:
                del self._pending[tid]
                latency = ts - open_request.ts
                request = open_request.fields
            else:
                open_request = None
                if self._requests or self.flow.hist_bits[1] & 1:
                    # Not a capture that started mid-conversation: nobody asked for this.
                    self._anomaly(
                        False,
                        ts,
                        frame,
                        "modbus.unsolicited_response",
                        f"no open request with transaction id {tid}",
                    )
            if incomplete:
                fields = {}
            elif raw_fc & 0x80:
                code = data[0] if data else None
                fields = {"exception_code": code}
                if code is None:
                    problem = Malformed("modbus.truncated_pdu", "exception code missing")
                else:
                    exception = exception_name(code)
                    if len(data) > 1:
                        problem = Malformed("modbus.invalid_length", "bytes after exception code")
            else:
                decoder_r = RESPONSE_DECODERS.get(fc)
                try:
                    fields = decoder_r(data, request) if decoder_r else {}
                except Malformed as exc:
                    problem, fields = exc, exc.fields
                except struct.error as exc:
                    problem, fields = Malformed("modbus.truncated_pdu", str(exc)), {}
        if fc not in FUNCTION_NAMES:
            self._anomaly(is_orig, ts, frame, "modbus.unknown_function", f"function code {fc}")
        if problem is not None:
            self._anomaly(is_orig, ts, frame, problem.name, problem.detail)
        elif self.service is None:
            self.service = "modbus"
        self.func_counts[raw_fc] += 1
        if is_orig:
            self.client_functions.add(fc)
            self.units.add(unit)
        elif exception is None and not incomplete:
            self.server_functions.add(fc)
            if fc == 43 and "objects" in fields:
                self.identity.update(fields["objects"])
            elif fc == 17 and "server_id" in fields:
                self.server_id = dict(fields)
        msg = (ModbusMessage if open_request is None else PairedResponse)(
            ts,
            self.uid,
            self.conn,
            is_orig,
            tid,
            0,
            unit,
            fc,
            FUNC_BY_RAW[raw_fc],
            exception,
            length,
            frame,
            fields,
            latency,
        )
        if is_orig:
            # A reused transaction id replaces the open request in its place (as before).
            self._pending[tid] = msg
        elif open_request is not None:
            msg.request = open_request  # type: ignore[misc]
        self._emit(msg)

    def _anomaly(self, is_orig: bool, ts: float, frame: int, name: str, detail: str) -> None:
        self._bus.anomaly(Anomaly(ts, self.uid, self.conn, is_orig, name, detail, frame))


def looks_like_modbus_request(payload: bytes) -> bool:
    """Content detection for flows on other ports: one complete, plausible request ADU."""
    if len(payload) < 8:
        return False
    _tid, pid, length, _unit, fc = _mbap(payload, 0)
    return (
        pid == 0
        and 2 <= length <= MAX_ADU_LENGTH
        and len(payload) == 6 + length
        and fc in REQUEST_DECODERS
    )
