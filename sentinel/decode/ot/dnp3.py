"""DNP3 (IEEE 1815-2012) from Wireshark's ``dnp3`` dissector.

One event per application fragment (request, response or unsolicited response), emitted in
the frame where tshark completed it (transport segments reassembled). Link frames without
application data (link status, resets, intermediate segments) produce no event, like Zeek.

Every event's ``detail["dnp3"]`` carries what Suricata's DNP3 keywords evaluate:

- ``code`` (the event's) is the application function code (``dnp3_func``);
- ``iin`` is the 16-bit internal indications, IIN1 in the high byte (``dnp3_ind``), with
  ``flags`` naming the set bits like Suricata does (``device_restart``, ``need_time``, ...);
- ``objects`` lists every object header: ``group``, ``variation``, ``qualifier``,
  ``prefix_code``, ``range_code`` and ``start``/``stop`` (range codes 0-5) or ``count``
  (7, 8, 9, 0xB) (``dnp3_obj``);
- Wireshark 4.0 dissects neither the IIN of an Authentication Response (0x83) nor the
  objects of Secure Authentication messages (0x20, 0x21, 0x83): Sentinel reads that IIN
  (``data[2:4]``) and the group 120 object headers from the fragment's bytes, so that a
  g120v7 (authentication error) gives the status ``authentication_error``;
- ``OTEvent.data`` is the application fragment (``dnp3_data``): the application control,
  function code, IIN and objects, without link headers, transport bytes or CRCs. It is
  rebuilt from the dissector's de-CRC'd data chunks (``dnp.data_chunk``) of each link frame
  per link address pair, FIR to FIN, at most 63 x 255 bytes like Suricata.

Function names are Zeek's (``READ``, ``DIRECT_OPERATE``, ``UNSOLICITED_RESPONSE``,
``unknown-N``) so that dnp3.jsonl agrees with Zeek's dnp3.log.

Protocol events (Suricata's DNP3 app-layer events, spec section 4) are listed by name in
``detail["dnp3"]["events"]`` of the message they concern:

- ``len_too_small``: a request fragment shorter than its 2-byte header, a response shorter
  than its 4-byte header (with IIN), or, when the fragment's bytes are unknown, a response
  without IIN in the dissection (except an Authentication Response);
- ``unknown_object``: an object header Wireshark's object table does not know (its expert
  item ``dnp3.unknown_object``);
- ``too_many_objects`` / ``too_many_points``: more than 2048 object headers / 16384 points
  in one message (Suricata's ``max-objects`` / ``max-points``);
- ``too_long_reassembly``: the fragment outgrew 63 x 255 bytes (``data`` is then None; in
  practice tshark does not complete such fragments, see below);
- ``malformed``: tshark flagged the frame malformed (``_ws.malformed``: its dissector hit the
  end of the data) and no more specific event applies.

A link frame that tshark dissects but that carries no application fragment because a data
block CRC is wrong (``dnp.data_chunk.CRC.status`` 0) becomes an event of its own, function
``LINK_FRAME``, code None, status ``malformed``, with the event ``bad_transport_crc`` (its
segment is dropped and the fragment being reassembled with it discarded, as Suricata does).
So does the FIN segment of a fragment that outgrew 63 x 255 bytes (``too_long_reassembly``):
tshark numbers transport segments modulo 64 and never completes such a fragment.
Not produced here, because tshark's view cannot show them: ``bad_link_crc`` (the dissector
rejects a frame whose header CRC is wrong: the bytes stay plain TCP, outside the ``dnp3``
display filter), ``flooded`` (no transaction state) and ``len_too_small`` for a link length
below 5 (no ``dnp3`` layer either). The native link checker raises these three
(``sentinel/decode/dnp3_link.py``), as ``Anomaly`` events; each event has one producer.
"""

from __future__ import annotations

from typing import Any

from sentinel.decode.ot.common import (
    FrameBase,
    PairTable,
    as_list,
    bits,
    collect,
    event,
    flow_key,
    get,
    hex_bytes,
    layer_list,
    subtrees,
    to_bool,
    to_int,
    to_num,
    unknown,
)
from sentinel.events import OTEvent

PROTOCOL = "dnp3"
LAYERS = ("dnp3", "_ws.malformed")  # -J layers: the protocol, tshark's malformed marker
FILTER = "dnp3"
DISSECTOR = "dnp3"  # for --decode-as on extra ports
TRANSPORTS = ("tcp", "udp")  # where --decode-as can hand it extra ports

# IEEE 1815-2012 table 4-2 (application function codes), names as in Zeek's consts.zeek.
FUNCTIONS: dict[int, str] = {
    0x00: "CONFIRM",
    0x01: "READ",
    0x02: "WRITE",
    0x03: "SELECT",
    0x04: "OPERATE",
    0x05: "DIRECT_OPERATE",
    0x06: "DIRECT_OPERATE_NR",
    0x07: "IMMED_FREEZE",
    0x08: "IMMED_FREEZE_NR",
    0x09: "FREEZE_CLEAR",
    0x0A: "FREEZE_CLEAR_NR",
    0x0B: "FREEZE_AT_TIME",
    0x0C: "FREEZE_AT_TIME_NR",
    0x0D: "COLD_RESTART",
    0x0E: "WARM_RESTART",
    0x0F: "INITIALIZE_DATA",
    0x10: "INITIALIZE_APPL",
    0x11: "START_APPL",
    0x12: "STOP_APPL",
    0x13: "SAVE_CONFIG",
    0x14: "ENABLE_UNSOLICITED",
    0x15: "DISABLE_UNSOLICITED",
    0x16: "ASSIGN_CLASS",
    0x17: "DELAY_MEASURE",
    0x18: "RECORD_CURRENT_TIME",
    0x19: "OPEN_FILE",
    0x1A: "CLOSE_FILE",
    0x1B: "DELETE_FILE",
    0x1C: "GET_FILE_INFO",
    0x1D: "AUTHENTICATE_FILE",
    0x1E: "ABORT_FILE",
    0x1F: "ACTIVATE_CONFIG",
    0x20: "AUTHENTICATE_REQ",
    0x21: "AUTHENTICATE_REQ_NR",
    0x81: "RESPONSE",
    0x82: "UNSOLICITED_RESPONSE",
    0x83: "AUTHENTICATE_RESPONSE",
}
RESPONSE, UNSOLICITED, AUTH_RESPONSE = 0x81, 0x82, 0x83

OPERATIONS: dict[int, str] = {
    0x00: "session",
    0x01: "read",
    0x02: "write",  # refined by the objects written, see _write_operation
    0x03: "control",
    0x04: "control",
    0x05: "control",
    0x06: "control",
    0x07: "control",  # freeze functions: commands to the counters
    0x08: "control",
    0x09: "control",
    0x0A: "control",
    0x0B: "control",
    0x0C: "control",
    0x0D: "restart",
    0x0E: "restart",
    0x0F: "restart",  # INITIALIZE_DATA (obsolete): data back to initial values
    0x10: "restart",  # INITIALIZE_APPL: an application is (re)initialised
    0x11: "start",
    0x12: "stop",
    0x13: "configuration",
    0x14: "configuration",
    0x15: "configuration",
    0x16: "configuration",
    0x17: "time_sync",
    0x18: "time_sync",
    0x19: "file",
    0x1A: "file",
    0x1B: "file",
    0x1C: "file",
    0x1D: "file",
    0x1E: "file",
    0x1F: "configuration",
    0x20: "authentication",
    0x21: "authentication",
    0x83: "authentication",
}

# IIN bits (IEEE 1815-2012 5.2.2.2), names as Suricata's dnp3_ind keyword; IIN1 is the high byte.
IIN_FLAGS: dict[int, str] = {
    0x8000: "device_restart",
    0x4000: "device_trouble",
    0x2000: "local_control",
    0x1000: "need_time",
    0x0800: "class_3_events",
    0x0400: "class_2_events",
    0x0200: "class_1_events",
    0x0100: "all_stations",
    0x0080: "reserved_1",
    0x0040: "reserved_2",
    0x0020: "config_corrupt",
    0x0010: "already_executing",
    0x0008: "event_buffer_overflow",
    0x0004: "parameter_error",
    0x0002: "object_unknown",
    0x0001: "no_func_code_support",
}
IIN_ERRORS = ("no_func_code_support", "object_unknown", "parameter_error", "already_executing")

# Control status of CROB / analog output responses (IEEE 1815-2012 table 11-15).
CONTROL_STATUS: dict[int, str] = {
    0: "SUCCESS",
    1: "TIMEOUT",
    2: "NO_SELECT",
    3: "FORMAT_ERROR",
    4: "NOT_SUPPORTED",
    5: "ALREADY_ACTIVE",
    6: "HARDWARE_ERROR",
    7: "LOCAL",
    8: "TOO_MANY_OBJS",
    9: "NOT_AUTHORIZED",
    10: "AUTOMATION_INHIBIT",
    11: "PROCESSING_LIMITED",
    12: "OUT_OF_RANGE",
    126: "NON_PARTICIPATING",
    127: "UNDEFINED",
}
# CROB operation type, low nibble of the control code (table 11-12 / A.9).
CROB_OPS: dict[int, str] = {0: "NUL", 1: "PULSE_ON", 2: "PULSE_OFF", 3: "LATCH_ON", 4: "LATCH_OFF"}
# Trip-close code, bits 6-7 of the control code.
CROB_TCC: dict[int, str] = {0: "NUL", 1: "CLOSE", 2: "TRIP", 3: "RESERVED"}

# Point flag bit names (table 11-x, common to the flag octets of object groups 1-40).
FLAG_BITS: tuple[str, ...] = (
    "online",
    "restart",
    "comm_lost",
    "remote_forced",
    "local_forced",
    "chatter_or_over_range",
    "discontinuity_or_reference_err",
    "state",
)
FLAG_FIELDS = ("biq", "boq", "aiq", "aoq", "ctrq", "dbiq")
VALUE_FIELDS = (
    "dnp3.al.ana.int",
    "dnp3.al.ana.float",
    "dnp3.al.ana.double",
    "dnp3.al.anaout.int",
    "dnp3.al.anaout.float",
    "dnp3.al.anaout.double",
    "dnp3.al.cnt",
    "dnp3.al.bit",
    "dnp3.al.2bit",
    "dnp3.al.timestamp",
)
# Object groups whose WRITE is not a process write.
TIME_GROUPS = frozenset({50, 51, 52})  # time and date, CTO, time delay
FILE_GROUP = 70
IIN_GROUP = 80
ANALOG_OUTPUT_GROUPS = frozenset({41, 43})  # analog output commands and their events
AUTH_GROUP = 120
AUTH_ERROR_VARIATION = 7  # g120v7: authentication error (SAv5, IEEE 1815-2012 7.5.2.3)
AUTH_FUNCTIONS = frozenset({0x20, 0x21, AUTH_RESPONSE})
# Fixed object sizes of the SAv5 objects sent with qualifier 0x07 (count only, no size
# prefix): g120v3 aggressive mode request, g120v4 session key status request (A.45.3, A.45.4).
AUTH_FIXED_SIZES = {3: 6, 4: 2}
MAX_FRAGMENT = 63 * 255  # like Suricata's too_long_reassembly
MAX_OBJECTS = 2048  # Suricata's dnp3 max-objects (too_many_objects)
MAX_POINTS = 16384  # Suricata's dnp3 max-points (too_many_points)
_OVERFLOW = object()  # a reassembly buffer marker: the fragment outgrew MAX_FRAGMENT
FILE_FIELDS = (
    ("name", "dnp3.al.file_name"),
    ("mode", "dnp3.al.file.mode"),
    ("handle", "dnp3.al.file.handle"),
    ("status", "dnp3.al.file.status"),
    ("size", "dnp3.al.file.size"),
)
POINT_FIELDS = frozenset(
    {
        *VALUE_FIELDS,
        *(f"dnp3.al.{flag}.b{bit}" for flag in FLAG_FIELDS for bit in range(8)),
        *(name for _, name in FILE_FIELDS),
        "dnp3.al.index",
        "dnp3.al.point_index",
        "dnp3.al.ctrlstatus",
        "dnp3.ctl.op",
        "dnp3.ctl.trip",
        "dnp3.al.count",
        "dnp3.al.on_time",
        "dnp3.al.off_time",
    }
)


class Normaliser:
    """DNP3 layers of one frame -> events; keeps per link pair reassembly and pairing state."""

    def __init__(self, max_objects: int = 64) -> None:
        self.max_objects = max_objects
        self._buffers: PairTable = PairTable(4096)  # (flow, link src, link dst) -> bytearray
        self._requests = PairTable(65536)  # (flow, master, outstation) -> request operation
        self.stats = {"link_frames": 0, "fragments_without_data": 0, "bad_transport_crc": 0}

    def packet(self, layers: dict[str, Any], base: FrameBase) -> list[OTEvent]:
        out: list[OTEvent] = []
        for layer in layer_list(layers, "dnp3"):
            self.stats["link_frames"] += 1
            ev = self._link_frame(layer, base)
            if ev is not None:
                out.append(ev)
        if out and "_ws.malformed" in layers:  # the dissector stopped in the last PDU
            last = out[-1]
            events = last.detail["dnp3"].setdefault("events", [])
            if not events:
                events.append("malformed")
        return out

    def _link_frame(self, layer: dict[str, Any], base: FrameBase) -> OTEvent | None:
        link_node = next((v for _, v in subtrees(layer, "Data Link Layer")), layer)
        ctl = get(link_node, "dnp3.ctl_tree") or {}
        src, dst = to_int(get(link_node, "dnp3.src")), to_int(get(link_node, "dnp3.dst"))
        link = {
            "src": src,
            "dst": dst,
            "dir": to_bool(get(ctl, "dnp3.ctl.dir")),
            "prm": to_bool(get(ctl, "dnp3.ctl.prm")),
            "fcb": to_bool(get(ctl, "dnp3.ctl.fcb")),
            "fcv": to_bool(get(ctl, "dnp3.ctl.fcv")),
            "function": to_int(get(ctl, "dnp3.ctl.prifunc"), to_int(get(ctl, "dnp3.ctl.secfunc"))),
        }
        tr = get(layer, "dnp3.tr.ctl_tree")
        app = next((v for _, v in subtrees(layer, "Application Layer")), None)
        if _bad_chunk_crc(layer):
            self.stats["bad_transport_crc"] += 1
            self._buffers.pop((*flow_key(base), src, dst))
            if app is None:
                return self._frame_event(base, link, tr, "bad_transport_crc")
            data: bytes | None = None
            overflow = False
        else:
            data, overflow = self._reassemble(layer, tr, base, src, dst, app is not None)
        if app is None:  # tshark completes no fragment of more than 64 segments
            return self._frame_event(base, link, tr, "too_long_reassembly") if overflow else None
        fc = to_int(get(app, "dnp3.al.func"))
        if fc is None:
            return None
        ev = self._application(app, fc, base, link, tr, data)
        events = _events(ev, app, data, overflow)
        if _bad_chunk_crc(layer):
            events.insert(0, "bad_transport_crc")
        if events:
            ev.detail["dnp3"]["events"] = events
        return ev

    def _frame_event(self, base: FrameBase, link: dict[str, Any], tr: Any, name: str) -> OTEvent:
        """A link frame that ends no application fragment, with the event it raises."""
        detail: dict[str, Any] = {"link": link, "events": [name]}
        if tr is not None:
            detail["transport"] = {
                "fir": to_bool(get(tr, "dnp3.tr.fir")),
                "fin": to_bool(get(tr, "dnp3.tr.fin")),
                "seq": to_int(get(tr, "dnp3.tr.seq")),
            }
        from_master = bool(link["dir"])
        return event(
            base,
            PROTOCOL,
            "request" if from_master else "response",
            "other",
            "LINK_FRAME",
            None,
            unit=link["dst"] if from_master else link["src"],
            status="malformed",
            detail=detail,
        )

    def _reassemble(
        self,
        layer: dict[str, Any],
        tr: Any,
        base: FrameBase,
        src: int | None,
        dst: int | None,
        complete: bool,
    ) -> tuple[bytes | None, bool]:
        """Application bytes of this link frame's transport segment, appended per link pair;
        the whole fragment when the dissector completed one here. The flag says the
        fragment outgrew ``MAX_FRAGMENT`` (its bytes were dropped)."""
        chunks = [hex_bytes(c) for c in _chunks(layer)]
        key = (*flow_key(base), src, dst)
        if not chunks or tr is None or any(c is None for c in chunks):
            if complete:
                self.stats["fragments_without_data"] += 1
            return None, False
        segment = b"".join(chunks)[1:]  # first byte: the transport header
        if to_bool(get(tr, "dnp3.tr.fir")):
            buf: Any = bytearray(segment)
            self._buffers.put(key, buf)
        else:
            buf = self._buffers.get(key)
            if buf is None:
                if complete:
                    self.stats["fragments_without_data"] += 1
                return None, False
            if buf is not _OVERFLOW:
                buf += segment
        if buf is not _OVERFLOW and len(buf) > MAX_FRAGMENT:
            buf = _OVERFLOW  # keep the marker until the fragment ends
            self._buffers.put(key, buf)
        if complete or to_bool(get(tr, "dnp3.tr.fin")):
            self._buffers.pop(key)
            if buf is _OVERFLOW:
                return None, True
            return (bytes(buf) if complete else None), False
        return None, False

    def _application(
        self,
        app: dict[str, Any],
        fc: int,
        base: FrameBase,
        link: dict[str, Any],
        tr: Any,
        data: bytes | None,
    ) -> OTEvent:
        actl = get(app, "dnp3.al.ctl_tree") or {}
        application = {
            "fir": to_bool(get(actl, "dnp3.al.fir")),
            "fin": to_bool(get(actl, "dnp3.al.fin")),
            "con": to_bool(get(actl, "dnp3.al.con")),
            "uns": to_bool(get(actl, "dnp3.al.uns")),
            "seq": to_int(get(actl, "dnp3.al.seq")),
        }
        detail: dict[str, Any] = {"link": link, "application": application}
        if tr is not None:
            detail["transport"] = {
                "fir": to_bool(get(tr, "dnp3.tr.fir")),
                "fin": to_bool(get(tr, "dnp3.tr.fin")),
                "seq": to_int(get(tr, "dnp3.tr.seq")),
            }
        headers, points, extra = self._objects(app, fc >= 0x80)
        if not headers and fc in AUTH_FUNCTIONS and data is not None:
            headers = _auth_headers(data, 4 if fc >= 0x80 else 2)
        detail["objects"] = headers
        detail["points"] = extra.pop("points_total")
        detail.update(extra)
        is_response = fc >= 0x80
        flags: list[str] = []
        status = None
        if is_response:
            iin = to_int(get(app, "dnp3.al.iin"))
            if iin is None and data is not None and len(data) >= 4:
                iin = int.from_bytes(data[2:4], "big")  # not shown by Wireshark for 0x83
            iin = iin or 0
            detail["iin"] = iin
            flags = bits(IIN_FLAGS, iin)
            status = next((f for f in IIN_ERRORS if f in flags), "ok")
            cstatus = extra.get("control_status")
            if status == "ok" and cstatus:
                status = CONTROL_STATUS.get(cstatus, f"control_status-{cstatus}")
        if fc in AUTH_FUNCTIONS and any(
            h["group"] == AUTH_GROUP and h["variation"] == AUTH_ERROR_VARIATION for h in headers
        ):
            status = "authentication_error"  # either station may report one (0x21, 0x83)
        master, outstation = (
            (link["dst"], link["src"]) if is_response else (link["src"], link["dst"])
        )
        pair_key = (*flow_key(base, reverse=is_response), master, outstation)
        if fc == RESPONSE:
            direction = "response"
            operation = self._requests.pop(pair_key) or "report"
        elif fc == UNSOLICITED:
            direction, operation = "unsolicited", "report"
        elif fc == AUTH_RESPONSE:
            direction, operation = "response", "authentication"
        else:
            direction = "request"
            operation = OPERATIONS.get(fc, "other")
            if fc == 0x02:
                operation = _write_operation(headers)
            elif (
                operation == "control"
                and headers
                and fc in (3, 4, 5, 6)
                and all(h["group"] in ANALOG_OUTPUT_GROUPS for h in headers)
            ):
                operation = "write"  # analog output commands: setpoints
            if fc != 0x00:  # a CONFIRM answers the outstation; it has no response
                self._requests.put(pair_key, operation)
        return event(
            base,
            PROTOCOL,
            direction,
            operation,
            FUNCTIONS.get(fc, unknown(fc)),
            fc,
            unit=outstation,
            objects=points,
            status=status,
            flags=flags,
            detail=detail,
            data=data,
        )

    def _objects(
        self, app: dict[str, Any], is_response: bool
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        headers: list[dict[str, Any]] = []
        points: list[dict[str, Any]] = []
        extra: dict[str, Any] = {"points_total": 0}
        for _, container in subtrees(app, ""):
            if "dnp3.al.obj" not in container:
                continue
            objs = as_list(container.get("dnp3.al.obj"))
            trees = as_list(container.get("dnp3.al.obj_tree"))
            for i, raw in enumerate(objs):
                tree = trees[i] if i < len(trees) and isinstance(trees[i], dict) else {}
                header = _header(to_int(raw, 0) or 0, tree)
                headers.append(header)
                self._points(header, tree, points, extra, is_response)
        return headers, points, extra

    def _points(
        self,
        header: dict[str, Any],
        tree: dict[str, Any],
        points: list[dict[str, Any]],
        extra: dict[str, Any],
        is_response: bool,
    ) -> None:
        group = header["group"]
        nodes = list(subtrees(tree, "Point Number")) + list(subtrees(tree, "Object:"))
        extra["points_total"] += len(nodes)
        for label, node in nodes:
            if len(points) >= self.max_objects:
                break  # counted above; not listed
            f = collect(node, POINT_FIELDS)
            if group == FILE_GROUP:
                extra.setdefault("file", _file(f))
            if group in TIME_GROUPS and "time" not in extra and "dnp3.al.timestamp" in f:
                extra["time"] = f["dnp3.al.timestamp"]
            status = to_int(f.get("dnp3.al.ctrlstatus")) if is_response else None
            if status:
                extra.setdefault("control_status", status)
            index = to_int(f.get("dnp3.al.index"), to_int(f.get("dnp3.al.point_index")))
            point: dict[str, Any] = {"address": index, "group": group}
            value = _value(f, label)
            if value is not None:
                point["value"] = value
            quality = _quality(f)
            if quality:
                point["quality"] = quality
            op = to_int(f.get("dnp3.ctl.op"))
            if op is not None:
                tcc = to_int(f.get("dnp3.ctl.trip"), 0) or 0
                point["control"] = {
                    "op": CROB_OPS.get(op, unknown(op)),
                    "tcc": CROB_TCC.get(tcc, unknown(tcc)),
                    "count": to_int(f.get("dnp3.al.count")),
                    "on_ms": to_int(f.get("dnp3.al.on_time")),
                    "off_ms": to_int(f.get("dnp3.al.off_time")),
                }
            if status is not None:
                point["status"] = CONTROL_STATUS.get(status, f"control_status-{status}")
            points.append(point)


def _events(ev: OTEvent, app: dict[str, Any], data: bytes | None, overflow: bool) -> list[str]:
    """Suricata's DNP3 app-layer events that this message shows (see the module docstring)."""
    d = ev.detail["dnp3"]
    out: list[str] = []
    if ev.code is not None and ev.code >= 0x80:
        if data is not None:
            short = len(data) < 4
        else:  # no bytes: the dissection decides (it shows no IIN of an 0x83, see above)
            short = get(app, "dnp3.al.iin") is None and ev.code != AUTH_RESPONSE
    else:
        short = data is not None and len(data) < 2
    if short:
        out.append("len_too_small")
    if any(h.get("unknown") for h in d["objects"]):
        out.append("unknown_object")
    if len(d["objects"]) > MAX_OBJECTS:
        out.append("too_many_objects")
    if d["points"] > MAX_POINTS:
        out.append("too_many_points")
    if overflow:
        out.append("too_long_reassembly")
    return out


def _auth_headers(data: bytes, offset: int) -> list[dict[str, Any]]:
    """Object headers of a Secure Authentication message (functions 0x20, 0x21, 0x83), read
    from the application bytes because Wireshark 4.0 does not dissect them. SAv5 objects
    (group 120, IEEE 1815-2012 A.45) use qualifier 0x5B (1-octet count, each object prefixed
    by its 2-octet size) or 0x07 (1-octet count, fixed size); the walk stops at anything else.
    """
    headers: list[dict[str, Any]] = []
    at = offset
    while at + 4 <= len(data) and len(headers) < MAX_OBJECTS:
        group, variation, qualifier, count = data[at], data[at + 1], data[at + 2], data[at + 3]
        header: dict[str, Any] = {
            "group": group,
            "variation": variation,
            "qualifier": qualifier,
            "prefix_code": qualifier >> 4,
            "range_code": qualifier & 0x0F,
            "count": count,
        }
        at += 4
        if qualifier == 0x5B:
            for _ in range(count):
                if at + 2 > len(data):
                    break
                at += 2 + int.from_bytes(data[at : at + 2], "little")
        elif qualifier == 0x07 and group == AUTH_GROUP and variation in AUTH_FIXED_SIZES:
            at += count * AUTH_FIXED_SIZES[variation]
        else:
            headers.append(header)
            break
        headers.append(header)
    return headers


def _bad_chunk_crc(layer: dict[str, Any]) -> bool:
    for _, node in subtrees(layer, "Data Chunks"):
        for _, chunk in subtrees(node, "Data Chunk"):
            if any(s == "0" for s in as_list(chunk.get("dnp.data_chunk.CRC.status"))):
                return True
    return False


def _chunks(layer: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for _, node in subtrees(layer, "Data Chunks"):
        for _, chunk in subtrees(node, "Data Chunk"):
            out.extend(as_list(chunk.get("dnp.data_chunk")))
    return out


def _header(obj: int, tree: dict[str, Any]) -> dict[str, Any]:
    """Group, variation, qualifier and range of one object header, read from the header's own
    qualifier and range items (not from its points, which can be thousands)."""
    qual = next((v for _, v in subtrees(tree, "Qualifier Field")), {})
    prefix = to_int(get(qual, "dnp3.al.objq.prefix"), 0) or 0
    rng = to_int(get(qual, "dnp3.al.objq.range"), 0) or 0
    items = next((v for _, v in subtrees(tree, "Number of Items")), {})
    header: dict[str, Any] = {
        "group": obj >> 8,
        "variation": obj & 0xFF,
        "qualifier": (prefix << 4) | rng,
        "prefix_code": prefix,
        "range_code": rng,
    }
    expert = tree.get("_ws.expert")
    if any(isinstance(e, dict) and "dnp3.unknown_object" in e for e in as_list(expert)):
        header["unknown"] = True  # Wireshark's object table does not know it
    if rng <= 5:
        start, stop = (
            to_int(get(items, "dnp3.al.range.start")),
            to_int(get(items, "dnp3.al.range.stop")),
        )
        header["start"], header["stop"] = start, stop
        if start is not None and stop is not None and stop >= start:
            header["count"] = stop - start + 1
    elif rng in (7, 8, 9, 0xB):
        header["count"] = to_int(get(items, "dnp3.al.range.quantity"))
    return header


def _value(f: dict[str, Any], label: str) -> Any:
    for name in VALUE_FIELDS:
        v = f.get(name)
        if v is not None:
            return to_num(v) if name != "dnp3.al.timestamp" else v
    for flag in ("biq", "boq"):  # binary with flags: the state is bit 7 of the flag octet
        v = f.get(f"dnp3.al.{flag}.b7")
        if v is not None:
            return int(to_bool(v))
    marker = "Value: "
    at = label.rfind(marker)
    if at >= 0:
        return to_num(label[at + len(marker) :].strip())
    return None


def _quality(f: dict[str, Any]) -> list[str]:
    for flag in FLAG_FIELDS:
        if f.get(f"dnp3.al.{flag}.b0") is None:
            continue
        out = []
        for bit, name in enumerate(FLAG_BITS):
            if name == "state" and flag in ("biq", "boq"):
                continue
            if to_bool(f.get(f"dnp3.al.{flag}.b{bit}")):
                out.append(name)
        return out
    return []


def _file(f: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in FILE_FIELDS:
        v = f.get(name)
        if v is not None:
            out[key] = v if key == "name" else to_int(v)
    return out


def _write_operation(headers: list[dict[str, Any]]) -> str:
    groups = {h["group"] for h in headers}
    if groups and groups <= TIME_GROUPS:
        return "time_sync"
    if FILE_GROUP in groups:
        return "file"
    if groups and groups <= {IIN_GROUP, 0, 34, 60}:  # IIN clear, attributes, deadbands, classes
        return "configuration"
    return "write"
