"""EtherNet/IP and CIP from Wireshark's ``enip`` and ``cip`` dissectors.

One event per CIP service: a Multiple Service Packet (0x0A) or an Unconnected Send (0x52 to
the Connection Manager) is unpacked and each embedded service is an event of its own
(``detail["enip"]["embedded_in"]`` names the carrier), so that a Reset hidden in a bundle is
seen like any other. An encapsulation message without CIP (ListIdentity, RegisterSession,
ListServices, ...) is one event named after its command. Implicit (class 0/1) I/O data is
not turned into events: it is cyclic process data, not operations.

``detail["enip"]``: ``command`` (encapsulation command), ``session``, ``status``
(encapsulation status), ``context`` (sender context, hex), and for CIP ``service`` (raw, with
the response bit), ``class``, ``instance``, ``attribute``, ``member``, ``symbol`` (Logix tag
name), ``general_status``, ``additional_status``; ``identity`` for ListIdentity replies and
Identity object attributes (``vendor``, ``device_type``, ``product_code``, ``revision``,
``serial``, ``product_name``). ``objects`` holds the CIP path as
``{"address": "class 0x01/instance 1/attribute 7", ...}`` or the tag name.
"""

from __future__ import annotations

from typing import Any

from sentinel.decode.ot.common import (
    FrameBase,
    PairTable,
    event,
    find,
    find_all,
    flow_key,
    get,
    layer_list,
    subtrees,
    to_int,
    unknown,
)
from sentinel.events import OTEvent

PROTOCOL = "enip"
LAYERS = ("enip", "cip", "cipcm", "cipcls", "cippccc")
FILTER = "enip"
DISSECTOR = "enip"
TRANSPORTS = ("tcp", "udp")  # where --decode-as can hand it extra ports

# EtherNet/IP encapsulation commands (CIP Vol. 2, table 2-3.2).
COMMANDS: dict[int, tuple[str, str]] = {
    0x0000: ("NOP", "session"),
    0x0004: ("ListServices", "diagnostics"),
    0x0063: ("ListIdentity", "diagnostics"),
    0x0064: ("ListInterfaces", "diagnostics"),
    0x0065: ("RegisterSession", "session"),
    0x0066: ("UnRegisterSession", "session"),
    0x006F: ("SendRRData", "other"),
    0x0070: ("SendUnitData", "other"),
    0x0072: ("IndicateStatus", "diagnostics"),
    0x0073: ("Cancel", "session"),
    0x00C8: ("StartDTLS", "session"),
}
CIP_COMMANDS = frozenset({0x006F, 0x0070})

# CIP common services (CIP Vol. 1, appendix A).
COMMON_SERVICES: dict[int, str] = {
    0x01: "Get_Attributes_All",
    0x02: "Set_Attributes_All",
    0x03: "Get_Attribute_List",
    0x04: "Set_Attribute_List",
    0x05: "Reset",
    0x06: "Start",
    0x07: "Stop",
    0x08: "Create",
    0x09: "Delete",
    0x0A: "Multiple_Service_Packet",
    0x0D: "Apply_Attributes",
    0x0E: "Get_Attribute_Single",
    0x10: "Set_Attribute_Single",
    0x11: "Find_Next_Object_Instance",
    0x14: "Error_Response",
    0x15: "Restore",
    0x16: "Save",
    0x17: "No_Operation",
    0x18: "Get_Member",
    0x19: "Set_Member",
    0x1A: "Insert_Member",
    0x1B: "Remove_Member",
    0x1C: "GroupSync",
}
COMMON_OPERATIONS: dict[int, str] = {
    0x01: "read",
    0x02: "write",
    0x03: "read",
    0x04: "write",
    0x05: "restart",
    0x06: "start",
    0x07: "stop",
    0x08: "configuration",
    0x09: "configuration",
    0x0D: "configuration",
    0x0E: "read",
    0x10: "write",
    0x11: "read",
    0x15: "program_download",
    0x16: "configuration",
    0x17: "session",
    0x18: "read",
    0x19: "write",
    0x1A: "write",
    0x1B: "write",
    0x1C: "session",
}
MULTIPLE_SERVICE_PACKET = 0x0A
UNCONNECTED_SEND = 0x52
IDENTITY, CONNECTION_MANAGER, FILE, TIME_SYNC, WALL_CLOCK = 0x01, 0x06, 0x37, 0x43, 0x8B
NV_STORAGE = 0xA1  # Non-Volatile Storage object: firmware update
NETWORK_CLASSES = frozenset({0xF4, 0xF5, 0xF6})  # Port, TCP/IP Interface, Ethernet Link
# Object-specific services (>= 0x4B) by class; ``None``: Logix tag services (symbolic paths,
# Symbol 0x6B and Template 0x6C objects).
CLASS_SERVICES: dict[int | None, dict[int, tuple[str, str]]] = {
    CONNECTION_MANAGER: {
        0x4E: ("Forward_Close", "session"),
        0x52: ("Unconnected_Send", "session"),
        0x54: ("Forward_Open", "session"),
        0x56: ("Get_Connection_Data", "diagnostics"),
        0x57: ("Search_Connection_Data", "diagnostics"),
        0x5A: ("Get_Connection_Owner", "diagnostics"),
        0x5B: ("Large_Forward_Open", "session"),
    },
    FILE: {
        0x4B: ("Initiate_Upload", "program_upload"),
        0x4C: ("Initiate_Download", "program_download"),
        0x4D: ("Initiate_Partial_Read", "program_upload"),
        0x4E: ("Initiate_Partial_Write", "program_download"),
        0x4F: ("Upload_Transfer", "program_upload"),
        0x50: ("Download_Transfer", "program_download"),
        0x51: ("Clear_File", "file"),
    },
    0x67: {0x4B: ("Execute_PCCC", "other")},
    None: {
        0x4C: ("Read_Tag", "read"),
        0x4D: ("Write_Tag", "write"),
        0x4E: ("Read_Modify_Write_Tag", "write"),
        0x52: ("Read_Tag_Fragmented", "read"),
        0x53: ("Write_Tag_Fragmented", "write"),
        0x55: ("Get_Instance_Attribute_List", "read"),
    },
}
LOGIX_CLASSES = frozenset({0x6B, 0x6C})
# CIP general status codes (CIP Vol. 1, appendix B).
GENERAL_STATUS: dict[int, str] = {
    0x00: "success",
    0x01: "connection_failure",
    0x02: "resource_unavailable",
    0x03: "invalid_parameter_value",
    0x04: "path_segment_error",
    0x05: "path_destination_unknown",
    0x06: "partial_transfer",
    0x07: "connection_lost",
    0x08: "service_not_supported",
    0x09: "invalid_attribute_value",
    0x0A: "attribute_list_error",
    0x0B: "already_in_requested_mode",
    0x0C: "object_state_conflict",
    0x0D: "object_already_exists",
    0x0E: "attribute_not_settable",
    0x0F: "privilege_violation",
    0x10: "device_state_conflict",
    0x11: "reply_data_too_large",
    0x13: "not_enough_data",
    0x14: "attribute_not_supported",
    0x15: "too_much_data",
    0x16: "object_does_not_exist",
    0x1E: "embedded_service_error",
    0x1F: "vendor_specific_error",
    0x20: "invalid_parameter",
}
IDENTITY_FIELDS = (
    ("vendor", "enip.lir.vendor"),
    ("device_type", "enip.lir.devtype"),
    ("product_code", "enip.lir.prodcode"),
    ("revision", "enip.lir.revision"),
    ("serial", "enip.lir.serial"),
    ("product_name", "enip.lir.name"),
    ("state", "enip.lir.state"),
    ("vendor", "cip.id.vendor_id"),
    ("device_type", "cip.id.device_type"),
    ("product_code", "cip.id.product_code"),
    ("serial", "cip.id.serial_number"),
    ("product_name", "cip.id.product_name"),
)


def service_info(code: int, cls: int | None, symbolic: bool) -> tuple[str, str]:
    """(name, operation) of a CIP service code (without the response bit) on a class."""
    if code < 0x4B or code in COMMON_SERVICES:
        name = COMMON_SERVICES.get(code, unknown(code))
        operation = COMMON_OPERATIONS.get(code, "other")
        if cls == IDENTITY and operation == "read":
            operation = "diagnostics"
        elif cls in (TIME_SYNC, WALL_CLOCK) and operation == "write":
            operation = "time_sync"
        elif cls in NETWORK_CLASSES and operation == "write":
            operation = "configuration"
        elif cls == NV_STORAGE and operation in ("write", "program_download", "configuration"):
            operation = "firmware"
        elif cls == FILE and code == 0x09:
            operation = "file"
        return name, operation
    table = CLASS_SERVICES.get(cls) if cls is not None else None
    if table is None and (symbolic or cls is None or cls in LOGIX_CLASSES):
        table = CLASS_SERVICES[None]
    if table and code in table:
        name, operation = table[code]
    else:
        name, operation = unknown(code), "other"
    if cls == NV_STORAGE:
        operation = "firmware"
    return name, operation


class Normaliser:
    def __init__(self, max_objects: int = 64, ports: frozenset[int] = frozenset({44818})) -> None:
        self.max_objects = max_objects
        self.ports = ports
        self._requests = PairTable(65536)  # (flow, context, service) -> (name, op, path)
        self.stats = {"messages": 0}

    def packet(self, layers: dict[str, Any], base: FrameBase) -> list[OTEvent]:
        out: list[OTEvent] = []
        cips = layer_list(layers, "cip")
        for enip in layer_list(layers, "enip"):
            header = next((v for _, v in subtrees(enip, "Encapsulation Header")), None)
            if header is None:
                continue  # implicit I/O (CPF items only)
            self.stats["messages"] += 1
            command = to_int(get(header, "enip.command"), -1) or 0
            encap = {
                "command": command,
                "session": to_int(get(header, "enip.session")),
                "status": to_int(get(header, "enip.status")),
                "context": str(get(header, "enip.context") or "").replace(":", ""),
            }
            if command in CIP_COMMANDS and cips:
                cip = cips.pop(0)
                for service, carrier in _services(cip):
                    out.append(self._cip(base, encap, service, carrier, layers))
                continue
            name, operation = COMMANDS.get(command, (unknown(command), "other"))
            detail = dict(encap)
            identity = _identity(enip)
            if identity:
                detail["identity"] = identity
            direction = (
                "response"
                if base.sport in self.ports and base.dport not in self.ports
                else "request"
            )
            status = None
            if direction == "response":
                status = (
                    "ok" if not encap["status"] else f"encapsulation_error-{encap['status']:#x}"
                )
            out.append(
                event(
                    base,
                    PROTOCOL,
                    direction,
                    operation,
                    name,
                    command,
                    status=status,
                    detail=detail,
                )
            )
        return out

    def _cip(
        self,
        base: FrameBase,
        encap: dict[str, Any],
        cip: dict[str, Any],
        carrier: str | None,
        layers: dict[str, Any],
    ) -> OTEvent:
        raw = to_int(get(cip, "cip.service"), 0) or 0
        tree = get(cip, "cip.service_tree") or {}
        is_response = bool(to_int(get(tree, "cip.rr"), raw & 0x80) or raw & 0x80)
        code = raw & 0x7F
        path = _path(cip)
        detail: dict[str, Any] = {**encap, "service": raw, **path}
        if carrier:
            detail["embedded_in"] = carrier
        key = (*flow_key(base, reverse=is_response), encap["context"], code)
        status = None
        if is_response:
            direction = "response"
            request = self._requests.pop(key)
            if request is not None:
                name, operation, req_path = request
                for k, v in req_path.items():
                    detail.setdefault(k, v)
            else:
                name, operation = service_info(code, path.get("class"), "symbol" in path)
            gs = to_int(find(cip, "cip.genstat"))
            if gs is not None:
                detail["general_status"] = gs
                add = find_all(cip, "cip.addstat")
                if add:
                    detail["additional_status"] = [to_int(a) for a in add]
                status = "ok" if gs == 0 else GENERAL_STATUS.get(gs, f"status-{gs:#04x}")
            identity = _identity(cip)
            if identity:
                detail["identity"] = identity
        else:
            direction = "request"
            name, operation = service_info(code, path.get("class"), "symbol" in path)
            self._requests.put(key, (name, operation, path))
        objects = []
        address = _address(detail)
        if address:
            objects.append({"address": address})
        return event(
            base,
            PROTOCOL,
            direction,
            operation,
            name,
            code,
            objects=objects,
            status=status,
            detail=detail,
        )


def _services(cip: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """The CIP service(s) of one message: a Multiple Service Packet's or an Unconnected
    Send's embedded requests instead of the carrier."""
    raw = to_int(get(cip, "cip.service"), 0) or 0
    code = raw & 0x7F
    embedded: list[dict[str, Any]] = []
    if code == MULTIPLE_SERVICE_PACKET:
        for _, msp in subtrees(cip, "Multiple Service Packet"):
            for _, packet in subtrees(msp, "Service Packet"):
                embedded.extend(x for _, x in subtrees(packet, "cip"))
        if embedded:
            return [(e, "Multiple_Service_Packet") for e in embedded]
    if code == UNCONNECTED_SEND and not raw & 0x80:
        for _, node in subtrees(cip, "CIP Connection Manager"):
            embedded.extend(x for _, x in subtrees(node, "cip"))
        for _, node in subtrees(cip, "Message Request"):
            embedded.extend(x for _, x in subtrees(node, "cip"))
        if embedded:
            return [(e, "Unconnected_Send") for e in embedded]
    return [(cip, None)]


def _path(cip: dict[str, Any]) -> dict[str, Any]:
    """class/instance/attribute/member/symbol of the request path (direct children only,
    so that an embedded request's path is not taken for the carrier's)."""
    out: dict[str, Any] = {}
    for _, node in subtrees(cip, "Request Path"):
        for key, name in (
            ("class", "cip.class"),
            ("instance", "cip.instance"),
            ("attribute", "cip.attribute"),
            ("member", "cip.member"),
            ("connection_point", "cip.connpoint"),
        ):
            v = find(node, name)
            if v is not None:
                out[key] = to_int(v)
        symbols = find_all(node, "cip.symbol")
        if symbols:
            out["symbol"] = ".".join(str(s) for s in symbols)
        break
    return out


def _address(detail: dict[str, Any]) -> str | None:
    if "symbol" in detail:
        return str(detail["symbol"])
    parts = []
    if detail.get("class") is not None:
        parts.append(f"class {detail['class']:#04x}")
    for key in ("instance", "attribute", "member"):
        if detail.get(key) is not None:
            parts.append(f"{key} {detail[key]}")
    return "/".join(parts) or None


def _identity(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in IDENTITY_FIELDS:
        if key in out:
            continue
        v = find(node, name)
        if v is not None:
            out[key] = v if key == "product_name" else to_int(v)
    major, minor = find(node, "cip.id.major_rev"), find(node, "cip.id.minor_rev")
    if "revision" not in out and major is not None:
        out["revision"] = f"{to_int(major)}.{to_int(minor)}"
    elif isinstance(out.get("revision"), int):  # ListIdentity: major in the low byte
        rev = out["revision"]
        out["revision"] = f"{rev & 0xFF}.{rev >> 8}"
    return out
