"""Suricata-EVE-compatible JSON (``eve.json``): ``alert`` and ``modbus`` records.

Consumers of Suricata's EVE output (EveBox, Filebeat's Suricata module, jq scripts) read
these records unchanged (spec section 5):

- one ``alert`` record per rule alert, **not aggregated**: the rule detector hands every
  alert to ``EveSink.alert`` directly (the pipeline's findings are aggregated, so EVE cannot
  be derived from them);
- one ``modbus`` record per Modbus transaction (request and response together), handed over
  by the rule detector's transaction tracker when the transaction completes;
- a DNP3 alert carries ``app_proto: dnp3`` and ``dnp3.request`` / ``dnp3.response`` (spec
  section 5) built from the tshark-decoded message (``dnp3_message``); Sentinel writes no
  ``event_type: dnp3`` records (``dnp3.jsonl`` is the DNP3 transaction log).

Timestamps are local time with the offset written without a colon (``+0100``), ``flow_id``
is a stable 51-bit number derived from the flow uid, ``pcap_cnt`` is the frame number.
Addresses in ``modbus`` objects are raw (0-based), as Suricata logs them. Byte strings are
UTF-8 text when valid, otherwise bytes from 0x80 are written as the literal text ``\\xNN``.

Payload (``privacy.minimization.payload``, protocol -> bytes; default none): an alert on a
packet or a stream chunk carries ``payload`` (base64), ``payload_printable`` (bytes outside
printable ASCII as ``.``) and ``stream`` (1 for a stream chunk), as Suricata's ``eve-log``
``payload: yes`` writes them, only when the flow's application protocol (the alert's
``app_proto``) is listed, cut to its byte cap. With pseudonymization on, never for a flow
with an end outside the inventory (a pseudonym): the bytes could name the host or a person
behind it. Alerts on decoded messages (Modbus ``modbus`` object, DNP3) carry their decoded
fields instead.

An ``EveSink`` writes ``eve.json`` into one output directory per run; given several
directories (``sentinel analyze`` with several captures) it moves to the next one each time
a run closes it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sentinel.events import ModbusMessage, OTEvent
from sentinel.privacy.matching import is_pseudonym
from sentinel.rules import modbus as mb
from sentinel.sinks.base import Sink
from sentinel.sinks.jsonl import JsonlWriter

if TYPE_CHECKING:
    from sentinel.privacy.settings import Minimization
    from sentinel.rules.engine import Alert
    from sentinel.rules.transactions import ModbusTransaction

# sawp-modbus names (FunctionCode, ExceptionCode, DiagnosticSubfunction, MEIType).
FUNCTION_CODES = {
    1: "RdCoils", 2: "RdDiscreteInputs", 3: "RdHoldRegs", 4: "RdInputRegs", 5: "WrSingleCoil",
    6: "WrSingleReg", 7: "RdExcStatus", 8: "Diagnostic", 9: "Program484", 10: "Poll484",
    11: "GetCommEventCtr", 12: "GetCommEventLog", 13: "ProgramController",
    14: "PollController", 15: "WrMultCoils", 16: "WrMultRegs", 17: "ReportServerID",
    18: "Program884", 19: "ResetCommLink", 20: "RdFileRec", 21: "WrFileRec", 22: "MaskWrReg",
    23: "RdWrMultRegs", 24: "RdFIFOQueue", 43: "MEI",
}  # fmt: skip
EXCEPTION_CODES = {
    1: "IllegalFunction", 2: "IllegalDataAddr", 3: "IllegalDataValue", 4: "ServerDeviceFail",
    5: "Ack", 6: "ServerDeviceBusy", 7: "NegAck", 8: "MemParityErr",
    10: "GatewayPathUnavailable", 11: "GatewayTargetFailToResp",
}  # fmt: skip
DIAGNOSTIC_CODES = {
    0: "RetQueryData", 1: "RestartCommOpt", 2: "RetDiagReg", 3: "ChangeInputDelimiter",
    4: "ForceListenOnlyMode", 10: "ClearCtrDiagReg", 11: "RetBusMsgCount",
    12: "RetBusCommErrCount", 13: "RetBusExcErrCount", 14: "RetServerMsgCount",
    15: "RetServerNoRespCount", 16: "RetServerNAKCount", 17: "RetServerBusyCount",
    18: "RetBusCharOverrunCount", 19: "RetOverrunErrCount", 20: "ClearOverrunCounterFlag",
    21: "GetClearPlusStats",
}  # fmt: skip
MEI_TYPES = {13: "CANOpenGenRefReqResp", 14: "RdDevId"}
# Protocol events -> sawp error flags (plus Sentinel's PROTO_ID / FUNC_CODE).
ERROR_FLAGS = (
    ("DATA_VALUE", frozenset({"invalid_value", "value_mismatch"})),
    ("DATA_LENGTH", frozenset({"invalid_length", "truncated_pdu", "incomplete_adu"})),
    ("EXC_CODE", frozenset({"invalid_exception_code"})),
    ("FUNC_CODE", frozenset({"invalid_function_code"})),
    ("PROTO_ID", frozenset({"invalid_protocol_id"})),
)
FLOW_ID_MASK = (1 << 51) - 1
_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))  # others -> "."


def flow_id(uid: str) -> int:
    return int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big") & (
        FLOW_ID_MASK
    )


def timestamp(ts: float) -> str:
    """Suricata's EVE timestamp: local time, microseconds, ``+hhmm`` offset."""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def eve_bytes(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(chr(b) if b < 0x80 else f"\\x{b:02x}" for b in data)


def _registers(values: list[int]) -> bytes:
    return struct.pack(f">{len(values)}H", *values)


def _coils(values: list[bool]) -> bytes:
    out = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def modbus_message(msg: ModbusMessage, events: tuple[str, ...] = ()) -> dict[str, Any]:
    """One request or response as Suricata's EVE ``modbus.request`` / ``response``."""
    fc = msg.fc
    fields = msg.fields
    raw = mb.RAW_BY_FUNC.get(msg.func, fc)
    flags = [name for name, which in ERROR_FLAGS if which.intersection(events)]
    out: dict[str, Any] = {
        "transaction_id": msg.tid,
        "protocol_id": msg.pid,
        "unit_id": msg.unit,
        "function_raw": raw,
        "function_code": FUNCTION_CODES.get(fc, "Unknown"),
        "access_type": mb.flag_names(mb.ACCESS_BY_FC.get(fc, 0), mb.ACCESS_NAMES),
        "category": mb.flag_names(mb.category(fc, fields), mb.CATEGORY_NAMES),
        "error_flags": " | ".join(flags) if flags else "NONE",
    }
    values = fields.get("values")
    if raw & 0x80:
        code = fields.get("exception_code")
        if code is not None:
            out["exception"] = {"raw": code, "code": EXCEPTION_CODES.get(code, "Unknown")}
    elif fc == 8 and "sub_function" in fields:
        sub = fields["sub_function"]
        out["diagnostic"] = {
            "raw": sub,
            "code": DIAGNOSTIC_CODES.get(sub, "Reserved"),
            "data": eve_bytes(_registers(fields.get("data") or [])),
        }
    elif fc == 43 and "mei_type" in fields:
        mei = fields["mei_type"]
        data = b""
        if msg.is_orig and "read_device_id_code" in fields:
            data = bytes([fields["read_device_id_code"], fields.get("object_id", 0)])
        out["mei"] = {"raw": mei, "code": MEI_TYPES.get(mei, "Unknown"), "data": eve_bytes(data)}
    elif fc in (1, 2, 3, 4):
        if msg.is_orig and "address" in fields:
            out["read"] = {"address": fields["address"], "quantity": fields.get("quantity")}
        elif values is not None:
            data = _coils(values) if fc in (1, 2) else _registers(values)
            out["read"] = {"data": eve_bytes(data)}
    elif fc in (5, 6) and "address" in fields and values:
        word = (0xFF00 if values[0] else 0) if fc == 5 else int(values[0])
        out["write"] = {"address": fields["address"], "data": word}
    elif fc in (15, 16) and "address" in fields:
        if msg.is_orig:
            data = _coils(values or []) if fc == 15 else _registers(values or [])
            out["write"] = {
                "address": fields["address"],
                "quantity": fields.get("quantity"),
                "data": eve_bytes(data),
            }
        else:
            out["write"] = {"address": fields["address"], "data": fields.get("quantity")}
    elif fc == 22 and "address" in fields:
        out["write"] = {
            "address": fields["address"],
            "and_mask": fields.get("and_mask"),
            "or_mask": fields.get("or_mask"),
        }
    elif fc == 23:
        if msg.is_orig and "read_address" in fields:
            out["read"] = {"address": fields["read_address"], "quantity": fields["read_quantity"]}
            out["write"] = {
                "address": fields.get("address"),
                "quantity": fields.get("quantity"),
                "data": eve_bytes(_registers(values or [])),
            }
        elif values is not None:
            out["read"] = {"data": eve_bytes(_registers(values))}
    else:
        out["data"] = ""
    return out


def modbus_object(tx: ModbusTransaction) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": tx.id}
    if tx.request is not None:
        obj["request"] = modbus_message(tx.request, tx.request_events)
    if tx.response is not None:
        obj["response"] = modbus_message(tx.response, tx.response_events)
    return obj


def dnp3_message(ev: OTEvent) -> dict[str, Any]:
    """One DNP3 message as Suricata's EVE ``dnp3.request`` / ``dnp3.response`` (the object
    headers without their points: tshark's points are not tied to their header here)."""
    d = ev.detail.get("dnp3", {})
    link, app = d.get("link", {}), d.get("application", {})
    code = ev.code
    kind = "request" if ev.is_orig else "unsolicited_response" if code == 0x82 else "response"
    objects = []
    for h in d.get("objects", ()):
        obj = {k: h[k] for k in ("group", "variation", "qualifier", "prefix_code", "range_code")}
        obj.update({k: h[k] for k in ("start", "stop", "count") if h.get(k) is not None})
        objects.append(obj)
    rec: dict[str, Any] = {
        "type": kind,
        "control": {
            "dir": bool(link.get("dir")),
            "pri": bool(link.get("prm")),
            "fcb": bool(link.get("fcb")),
            "fcv": bool(link.get("fcv")),
            "function_code": link.get("function"),
        },
        "src": link.get("src"),
        "dst": link.get("dst"),
        "application": {
            "control": {
                "fir": bool(app.get("fir")),
                "fin": bool(app.get("fin")),
                "con": bool(app.get("con")),
                "uns": bool(app.get("uns")),
                "sequence": app.get("seq"),
            },
            "function_code": code,
            "objects": objects,
            "complete": True,
        },
    }
    if not ev.is_orig:
        iin = d.get("iin") or 0
        rec["iin"] = {"indicators": [name for bit, name in DNP3_IIN if iin & bit]}
    return rec


# Suricata's indicator names (output-json-dnp3.c), IIN1 first.
DNP3_IIN = (
    (0x8000, "device_restart"),
    (0x4000, "device_trouble"),
    (0x2000, "local_control"),
    (0x1000, "need_time"),
    (0x0800, "class_3_events"),
    (0x0400, "class_2_events"),
    (0x0200, "class_1_events"),
    (0x0100, "all_stations"),
    (0x0080, "reserved_1"),
    (0x0040, "reserved_2"),
    (0x0020, "config_corrupt"),
    (0x0010, "already_executing"),
    (0x0008, "event_buffer_overflow"),
    (0x0004, "parameter_error"),
    (0x0002, "object_unknown"),
    (0x0001, "no_func_code_support"),
)


def _five_tuple(rec: dict[str, Any], src: tuple[str, int], dst: tuple[str, int]) -> None:
    rec["src_ip"], rec["src_port"] = src
    rec["dest_ip"], rec["dest_port"] = dst
    rec["proto"] = "TCP"


class EveSink(Sink):
    """``eve.json`` in each run's output directory (see the module docstring)."""

    id = "eve"

    def __init__(
        self, out_dir: str | os.PathLike[str], minimization: Minimization | None = None
    ) -> None:
        self.path = os.path.join(os.fspath(out_dir), "eve.json")
        self._writer: JsonlWriter | None = None
        self.alerts = 0
        self.transactions = 0
        self.minimization = minimization if minimization and minimization.payload else None
        self.payloads = 0  # alerts written with payload bytes
        self.payloads_withheld = 0  # allowed by protocol, withheld: an end is a pseudonym

    def _payload(self, alert: Alert, app_proto: str | None, rec: dict[str, Any]) -> None:
        data = alert.payload
        m = self.minimization
        if m is None or data is None or not m.payload_limit(app_proto):
            return
        c = alert.conn
        if is_pseudonym(c.orig_h) or is_pseudonym(c.resp_h):
            self.payloads_withheld += 1
            return
        kept = bytes(m.cap_payload(app_proto, data) or b"")
        rec["payload"] = base64.b64encode(kept).decode("ascii")
        rec["payload_printable"] = kept.translate(_PRINTABLE).decode("ascii")
        rec["stream"] = 1 if alert.kind == "stream" else 0
        self.payloads += 1

    def _out(self) -> JsonlWriter:
        if self._writer is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._writer = JsonlWriter(self.path, batch=512)
        return self._writer

    def alert(
        self,
        alert: Alert,
        tx: ModbusTransaction | None = None,
        app_proto: str | None = None,
        tx_id: int | None = None,
    ) -> None:
        rule = alert.rule
        c = alert.conn
        orig, resp = (c.orig_h, c.orig_p), (c.resp_h, c.resp_p)
        rec: dict[str, Any] = {
            "timestamp": timestamp(alert.ts),
            "flow_id": flow_id(alert.uid),
            "pcap_cnt": alert.frame,
            "event_type": "alert",
        }
        _five_tuple(rec, *((orig, resp) if alert.is_orig else (resp, orig)))
        if tx is not None:
            rec["tx_id"] = tx.id - 1
        elif tx_id is not None:
            rec["tx_id"] = tx_id
        body: dict[str, Any] = {
            "action": "blocked" if rule.header.action.startswith("reject") else "allowed",
            "gid": rule.gid,
            "signature_id": rule.sid,
            "rev": rule.rev,
            "signature": rule.msg,
            "category": rule.category,
            "severity": rule.priority,
        }
        if rule.metadata:
            body["metadata"] = rule.metadata_dict
        rec["alert"] = body
        if app_proto:
            rec["app_proto"] = app_proto
        if self.minimization is not None:
            self._payload(alert, app_proto, rec)
        rec["direction"] = "to_server" if alert.is_orig else "to_client"
        if tx is not None:
            rec["modbus"] = modbus_object(tx)
        ot = getattr(alert, "ot", None)
        if ot is not None and ot.code is not None:
            rec["dnp3"] = {"request" if ot.is_orig else "response": dnp3_message(ot)}
        self._out().write(rec)
        self.alerts += 1

    def transaction(self, tx: ModbusTransaction) -> None:
        c = tx.conn
        rec: dict[str, Any] = {
            "timestamp": timestamp(tx.last.ts),
            "flow_id": flow_id(tx.uid),
            "pcap_cnt": tx.last.frame,
            "event_type": "modbus",
        }
        _five_tuple(rec, (c.orig_h, c.orig_p), (c.resp_h, c.resp_p))
        rec["tx_id"] = tx.id - 1
        rec["modbus"] = modbus_object(tx)
        self._out().write(rec)
        self.transactions += 1

    def close(self) -> None:
        self._out().close()  # an empty eve.json when the run had nothing to log
        self._writer = None
