"""S7comm (Siemens S7-300/400 "S7 communication", over ISO-on-TCP) from Wireshark's ``s7comm``.

One event per S7 PDU. Job / Ack_Data PDUs are named by their function (``Read Var``,
``Write Var``, ``Request download``, ``PLC Stop``, ``PI-Service``); Userdata PDUs by their
function group and sub-function (``CPU functions / Read SZL``, ``Time functions / Set
clock``, ``Security / PLC password``). A PI-Service is named by its service (``P_PROGRAM``
start, ``_INSE`` activate block, ``_DELE`` delete block, ``_MODU`` copy RAM to ROM,
``_GARB`` compress memory).

``detail["s7comm"]``: ``rosctr`` (1 job, 2 ack, 3 ack_data, 7 userdata), ``pdu_ref``,
``error_class``/``error_code`` (ack/ack_data), ``param_error`` (userdata), ``function``
(raw), ``group``/``subfunction`` (userdata), ``pi_service`` and ``pi_argument``,
``block`` (the block a download/upload names, e.g. ``_0800001P``), ``szl_id``/``szl_index``,
``items`` (number of variable items). ``objects`` are the variable items: ``area``
(I, Q, M, DB, DI, L, V, C, T, ...), ``db``, ``byte``, ``bit``, ``size`` (transport size),
``count``, and for responses/writes ``return_code`` and ``data`` (hex, at most 64 bytes).

S7comm-plus (S7-1200/1500, protocol id 0x72) is not dissected by Wireshark 4.0 (its
dissector is a separate plug-in); such traffic is not turned into events.
"""

from __future__ import annotations

from typing import Any

from sentinel.decode.ot.common import (
    FrameBase,
    PairTable,
    as_list,
    event,
    find,
    flow_key,
    get,
    layer_list,
    to_int,
    unknown,
)
from sentinel.events import OTEvent

PROTOCOL = "s7comm"
LAYERS = ("s7comm",)
FILTER = "s7comm"
DISSECTOR = "tpkt"  # S7comm is found by heuristics on COTP, over TPKT on the given port
TRANSPORTS = ("tcp",)  # where --decode-as can hand it extra ports

ROSCTR = {1: "job", 2: "ack", 3: "ack_data", 7: "userdata"}
# Job functions (names as Wireshark's s7comm dissector).
FUNCTIONS: dict[int, tuple[str, str]] = {
    0x00: ("CPU services", "other"),
    0xF0: ("Setup communication", "session"),
    0x04: ("Read Var", "read"),
    0x05: ("Write Var", "write"),
    0x1A: ("Request download", "program_download"),
    0x1B: ("Download block", "program_download"),
    0x1C: ("Download ended", "program_download"),
    0x1D: ("Start upload", "program_upload"),
    0x1E: ("Upload", "program_upload"),
    0x1F: ("End upload", "program_upload"),
    0x28: ("PI-Service", "other"),
    0x29: ("PLC Stop", "stop"),
}
PI_SERVICE = 0x28
# PI services (program invocation) of S7-300/400 CPUs.
PI_SERVICES: dict[str, str] = {
    "P_PROGRAM": "start",  # warm restart (no argument) or cold restart ("C")
    "_INSE": "program_download",  # activate a downloaded block
    "_DELE": "file",  # delete a block from the passive file system
    "_MODU": "configuration",  # copy RAM to ROM
    "_GARB": "configuration",  # compress memory
    "_N_LOGIN_": "authentication",
    "_N_LOGOUT": "authentication",
}
# Userdata function groups and sub-functions: (name, operation).
GROUPS: dict[int, str] = {
    0: "Mode-transition",
    1: "Programmer commands",
    2: "Cyclic services",
    3: "Block functions",
    4: "CPU functions",
    5: "Security",
    6: "PBC BSEND/BRECV",
    7: "Time functions",
    15: "NC programming",
}
SUBFUNCTIONS: dict[tuple[int, int], tuple[str, str]] = {
    (1, 1): ("Block status", "diagnostics"),
    (1, 2): ("Variable status", "diagnostics"),
    (1, 3): ("Output ISTACK", "diagnostics"),
    (1, 4): ("Output BSTACK", "diagnostics"),
    (1, 5): ("Output LSTACK", "diagnostics"),
    (1, 6): ("Time measurement from to", "diagnostics"),
    (1, 7): ("Force selection", "control"),
    (1, 8): ("Modify variable", "write"),
    (1, 9): ("Force", "control"),
    (1, 10): ("Breakpoint", "control"),
    (1, 11): ("Exit HOLD", "start"),
    (1, 12): ("Memory reset", "file"),
    (1, 13): ("Disable job", "configuration"),
    (1, 14): ("Enable job", "configuration"),
    (1, 15): ("Delete job", "configuration"),
    (1, 16): ("Read job list", "diagnostics"),
    (1, 17): ("Read job", "diagnostics"),
    (1, 18): ("Replace job", "configuration"),
    (1, 19): ("Block status v2", "diagnostics"),
    (1, 22): ("Flash LED", "diagnostics"),
    (2, 1): ("Cyclic transfer", "read"),
    (2, 4): ("Unsubscribe", "read"),
    (2, 5): ("Change driven transfer", "read"),
    (2, 7): ("Change driven transfer modify", "read"),
    (2, 8): ("RDREC", "read"),
    (3, 1): ("List blocks", "diagnostics"),
    (3, 2): ("List blocks of type", "diagnostics"),
    (3, 3): ("Get block info", "diagnostics"),
    (4, 1): ("Read SZL", "diagnostics"),
    (4, 2): ("Message service", "configuration"),
    (4, 3): ("Diagnostic message", "report"),
    (4, 5): ("ALARM_8 indication", "report"),
    (4, 6): ("NOTIFY indication", "report"),
    (4, 7): ("ALARM_8 lock", "configuration"),
    (4, 8): ("ALARM_8 unlock", "configuration"),
    (4, 9): ("SCAN indication", "report"),
    (4, 11): ("ALARM ack", "configuration"),
    (4, 12): ("ALARM ack indication", "report"),
    (4, 13): ("ALARM lock indication", "report"),
    (4, 14): ("ALARM unlock indication", "report"),
    (4, 17): ("ALARM_SQ indication", "report"),
    (4, 18): ("ALARM_S indication", "report"),
    (4, 19): ("ALARM query", "diagnostics"),
    (4, 22): ("NOTIFY_8 indication", "report"),
    (5, 1): ("PLC password", "authentication"),
    (7, 1): ("Read clock", "read"),
    (7, 2): ("Set clock", "time_sync"),
    (7, 3): ("Read clock (following)", "read"),
    (7, 4): ("Set clock", "time_sync"),
}
# Userdata type nibble: 0 push, 4 request, 8 response (3/7/11: NC variants).
UD_REQUEST, UD_RESPONSE = (4, 7), (8, 11)
AREAS: dict[int, str] = {
    0x03: "SI200",  # S7-200 system info
    0x05: "SF200",  # S7-200 system flags
    0x06: "AI200",
    0x07: "AQ200",
    0x1C: "C",  # S7 counters
    0x1D: "T",  # S7 timers
    0x1E: "IC",  # IEC counters (200 family)
    0x1F: "IT",  # IEC timers (200 family)
    0x80: "P",  # direct peripheral access
    0x81: "I",
    0x82: "Q",
    0x83: "M",
    0x84: "DB",
    0x85: "DI",
    0x86: "L",
    0x87: "V",
}
MAX_DATA = 64  # bytes of item data kept per item (hex)
# Identification in system status lists (SZL 0x0011 module identification, 0x001C component
# identification) as Wireshark names their fields.
SZL_IDENTITY: tuple[tuple[str, str], ...] = (
    ("order_number", "s7comm.szl.xy11.0001.anz"),
    ("plc_name", "s7comm.szl.001c.0001.name"),
    ("module_name", "s7comm.szl.001c.0002.name"),
    ("plant_id", "s7comm.szl.001c.0003.tag"),
    ("copyright", "s7comm.szl.001c.0004.copyright"),
    ("serial", "s7comm.szl.001c.0005.serialn"),
    ("module_type", "s7comm.szl.001c.0007.cputypname"),
    ("memory_card_serial", "s7comm.szl.001c.0008.snmcmmc"),
    ("location", "s7comm.szl.001c.000b.loc_id"),
)


class Normaliser:
    def __init__(self, max_objects: int = 64) -> None:
        self.max_objects = max_objects
        self._jobs = PairTable(65536)  # (flow, pdu_ref) -> (name, operation, pi)
        self.stats = {"pdus": 0}

    def packet(self, layers: dict[str, Any], base: FrameBase) -> list[OTEvent]:
        out: list[OTEvent] = []
        for layer in layer_list(layers, "s7comm"):
            self.stats["pdus"] += 1
            ev = self._pdu(layer, base)
            if ev is not None:
                out.append(ev)
        return out

    def _pdu(self, layer: dict[str, Any], base: FrameBase) -> OTEvent | None:
        header = get(layer, "s7comm.header") or {}
        param = get(layer, "s7comm.param") or {}
        data = get(layer, "s7comm.data") or {}
        rosctr = to_int(get(header, "s7comm.header.rosctr"))
        if rosctr is None:
            return None
        pdu_ref = to_int(get(header, "s7comm.header.pduref"))
        detail: dict[str, Any] = {"rosctr": ROSCTR.get(rosctr, unknown(rosctr)), "pdu_ref": pdu_ref}
        status = None
        if rosctr in (2, 3):
            ecls = to_int(get(header, "s7comm.header.errcls"), 0) or 0
            ecod = to_int(get(header, "s7comm.header.errcod"), 0) or 0
            detail["error_class"], detail["error_code"] = ecls, ecod
            status = "ok" if not (ecls or ecod) else f"error-{ecls:#04x}{ecod:02x}"
        if rosctr == 7:
            return self._userdata(param, data, base, detail)
        func = to_int(get(param, "s7comm.param.func"))
        name, operation = (
            FUNCTIONS.get(func, (unknown(func), "other"))
            if func is not None
            else (
                "no-parameter",
                "other",
            )
        )
        detail["function"] = func
        if func == PI_SERVICE:
            service = find(param, "s7comm.param.pistart.servicename")
            argument = find(param, "s7comm.param.pistart.argument")
            if service is not None:
                detail["pi_service"] = service
                name = f"PI-Service {service}"
                operation = PI_SERVICES.get(service, "other")
            if argument is not None:
                detail["pi_argument"] = argument
            if service == "P_PROGRAM":  # parameter "C" asks for a cold restart
                detail["start_mode"] = "cold" if argument and "C" in str(argument) else "warm"
        block = find(param, "s7comm.param.blockcontrol.filename")
        if block is not None:
            detail["block"] = block
        objects = self._items(param, data, detail)
        key = (*flow_key(base, reverse=rosctr != 1), pdu_ref)
        if rosctr == 1:
            direction = "request"
            self._jobs.put(key, (name, operation, detail.get("pi_service")))
        else:
            direction = "response"
            job = self._jobs.pop(key)
            if job is not None and func == PI_SERVICE:  # the ack does not repeat the service
                name, operation = job[0], job[1]
                if job[2] is not None:
                    detail["pi_service"] = job[2]
        return event(
            base,
            PROTOCOL,
            direction,
            operation,
            name,
            func,
            objects=objects,
            status=status,
            detail=detail,
        )

    def _userdata(
        self, param: dict[str, Any], data: dict[str, Any], base: FrameBase, detail: dict[str, Any]
    ) -> OTEvent:
        group = to_int(get(param, "s7comm.param.userdata.funcgroup"), -1)
        sub = to_int(get(param, "s7comm.param.userdata.subfunc"), -1)
        ud_type = to_int(get(param, "s7comm.param.userdata.type"), 0)
        sub_name, operation = SUBFUNCTIONS.get((group, sub), (unknown(sub), "other"))  # type: ignore[arg-type]
        name = f"{GROUPS.get(group, unknown(group))} / {sub_name}"  # type: ignore[arg-type]
        detail.update(group=group, subfunction=sub)
        status = None
        if ud_type in UD_RESPONSE:
            direction = "response"
            err = to_int(get(param, "s7comm.param.errcod"), 0) or 0
            detail["param_error"] = err
            status = "ok" if not err else f"error-{err:#06x}"
        elif ud_type in UD_REQUEST:
            direction = "request"
        else:
            direction = "unsolicited"  # push: alarms, diagnostic messages, cyclic data
        szl = find(data, "s7comm.data.userdata.szl_id")
        if szl is not None:
            detail["szl_id"] = to_int(szl)
            detail["szl_index"] = to_int(find(data, "s7comm.data.userdata.szl_index"))
            if direction == "response":
                identity = {}
                for key, field in SZL_IDENTITY:
                    v = find(data, field)
                    if isinstance(v, str) and v.strip():
                        identity[key] = v.strip()
                if identity:
                    detail["identity"] = identity
        return event(
            base,
            PROTOCOL,
            direction,
            operation,
            name,
            (group << 8 | sub) if group >= 0 and sub >= 0 else None,  # type: ignore[operator]
            status=status,
            detail=detail,
        )

    def _items(
        self, param: dict[str, Any], data: dict[str, Any], detail: dict[str, Any]
    ) -> list[dict[str, Any]]:
        items = [x for x in as_list(param.get("s7comm.param.item")) if isinstance(x, dict)]
        values = [x for x in as_list(data.get("s7comm.data.item")) if isinstance(x, dict)]
        count = to_int(get(param, "s7comm.param.itemcount"))
        if count is not None:
            detail["items"] = count
        objects: list[dict[str, Any]] = []
        for i in range(max(len(items), len(values))):
            if len(objects) >= self.max_objects:
                break
            obj: dict[str, Any] = {}
            if i < len(items):
                obj.update(_address(items[i]))
            if i < len(values):
                v = values[i]
                rc = to_int(get(v, "s7comm.data.returncode"))
                if rc is not None:
                    obj["return_code"] = rc
                raw = get(v, "s7comm.resp.data")
                if isinstance(raw, str):
                    obj["data"] = raw.replace(":", "")[: MAX_DATA * 2]
            objects.append(obj)
        return objects


def _address(item: dict[str, Any]) -> dict[str, Any]:
    area_code = to_int(get(item, "s7comm.param.item.area"))
    if area_code is None:  # symbolic / DB read / NCK addressing: keep what there is
        syntax = to_int(get(item, "s7comm.param.item.syntaxid"))
        return {"address": f"syntax-{syntax:#04x}" if syntax is not None else "unknown"}
    area = AREAS.get(area_code, f"area-{area_code:#04x}")
    db = to_int(get(item, "s7comm.param.item.db"), 0) or 0
    tree = get(item, "s7comm.param.item.address_tree") or {}
    byte = to_int(get(tree, "s7comm.param.item.address.byte"))
    bit = to_int(get(tree, "s7comm.param.item.address.bit"))
    number = to_int(get(tree, "s7comm.param.item.address.number"))
    obj: dict[str, Any] = {"area": area}
    if area in ("DB", "DI"):
        obj["db"] = db
    if number is not None:
        obj["address"] = f"{area}{number}"
    else:
        prefix = f"{area}{db}." if area in ("DB", "DI") else area
        obj["address"] = f"{prefix}{byte}.{bit}"
        obj["byte"], obj["bit"] = byte, bit
    obj["size"] = to_int(get(item, "s7comm.param.item.transp_size"))
    obj["count"] = to_int(get(item, "s7comm.param.item.length"))
    return obj
