"""BACnet/IP (ASHRAE 135) from Wireshark's ``bvlc``, ``bacnet`` (NPDU) and ``bacapp`` (APDU).

One event per BVLC message. A message carrying an APDU is named after its service
(``readProperty``, ``writeProperty``, ``reinitializeDevice``, ``i-Am``); acknowledgements,
errors, rejects and aborts are responses of the confirmed service they answer. BVLC control
functions (``BVLC-Result``, ``Register-Foreign-Device``, ...) and network layer messages are
``session`` events.

``detail["bacnet"]``: ``bvlc`` (function), ``pdu_type`` (``confirmed``, ``unconfirmed``,
``simple_ack``, ``complex_ack``, ``segment_ack``, ``error``, ``reject``, ``abort``),
``invoke_id``, ``service`` (the choice), ``object`` (``type``/``instance`` of the first
object identifier), ``property``, ``priority`` (WriteProperty), ``state``
(ReinitializeDevice: ``coldstart``, ``warmstart``, ``startbackup``, ``startrestore``, ...),
``enable_disable`` and ``duration`` (DeviceCommunicationControl), ``password`` (true when
the request carries one; its value is never kept), ``error_class``/``error_code``,
``reject_reason``, ``abort_reason``, ``vendor_id`` (I-Am) and ``identity`` (device
properties read back: ``vendor-name``, ``model-name``, ``firmware-revision``,
``application-software-version``, ``object-name``, ``location``). ``unit`` is the device
instance when the message names a device object.
"""

from __future__ import annotations

import re
from typing import Any

from sentinel.decode.ot.common import (
    FrameBase,
    PairTable,
    event,
    find,
    flow_key,
    get,
    layer_list,
    to_int,
    to_num,
    unknown,
)
from sentinel.events import OTEvent

PROTOCOL = "bacnet"
LAYERS = ("bvlc", "bacnet", "bacapp")
FILTER = "bvlc"
DISSECTOR = "bvlc"
TRANSPORTS = ("udp",)  # where --decode-as can hand it extra ports

PDU_TYPES = (
    "confirmed",
    "unconfirmed",
    "simple_ack",
    "complex_ack",
    "segment_ack",
    "error",
    "reject",
    "abort",
)
# Confirmed services (ASHRAE 135-2020 21, BACnetConfirmedServiceChoice): (name, operation).
CONFIRMED: dict[int, tuple[str, str]] = {
    0: ("acknowledgeAlarm", "configuration"),
    1: ("confirmedCOVNotification", "report"),
    2: ("confirmedEventNotification", "report"),
    3: ("getAlarmSummary", "read"),
    4: ("getEnrollmentSummary", "read"),
    5: ("subscribeCOV", "configuration"),
    6: ("atomicReadFile", "file"),
    7: ("atomicWriteFile", "file"),
    8: ("addListElement", "write"),
    9: ("removeListElement", "write"),
    10: ("createObject", "configuration"),
    11: ("deleteObject", "configuration"),
    12: ("readProperty", "read"),
    13: ("readPropertyConditional", "read"),
    14: ("readPropertyMultiple", "read"),
    15: ("writeProperty", "write"),
    16: ("writePropertyMultiple", "write"),
    17: ("deviceCommunicationControl", "configuration"),
    18: ("confirmedPrivateTransfer", "other"),
    19: ("confirmedTextMessage", "other"),
    20: ("reinitializeDevice", "restart"),
    21: ("vtOpen", "session"),
    22: ("vtClose", "session"),
    23: ("vtData", "session"),
    24: ("authenticate", "authentication"),
    25: ("requestKey", "authentication"),
    26: ("readRange", "read"),
    27: ("lifeSafetyOperation", "control"),
    28: ("subscribeCOVProperty", "configuration"),
    29: ("getEventInformation", "read"),
    30: ("subscribeCOVPropertyMultiple", "configuration"),
    31: ("confirmedCOVNotificationMultiple", "report"),
    32: ("confirmedAuditNotification", "report"),
    33: ("auditLogQuery", "read"),
}
UNCONFIRMED: dict[int, tuple[str, str, str]] = {  # (name, operation, direction)
    0: ("i-Am", "diagnostics", "response"),
    1: ("i-Have", "diagnostics", "response"),
    2: ("unconfirmedCOVNotification", "report", "unsolicited"),
    3: ("unconfirmedEventNotification", "report", "unsolicited"),
    4: ("unconfirmedPrivateTransfer", "other", "request"),
    5: ("unconfirmedTextMessage", "other", "request"),
    6: ("timeSynchronization", "time_sync", "request"),
    7: ("who-Has", "diagnostics", "request"),
    8: ("who-Is", "diagnostics", "request"),
    9: ("utcTimeSynchronization", "time_sync", "request"),
    10: ("writeGroup", "write", "request"),
    11: ("unconfirmedCOVNotificationMultiple", "report", "unsolicited"),
    12: ("unconfirmedAuditNotification", "report", "unsolicited"),
    13: ("who-Am-I", "diagnostics", "request"),
    14: ("you-Are", "configuration", "request"),
}
REINITIALIZE, DCC, DELETE_OBJECT, ATOMIC_WRITE_FILE, ATOMIC_READ_FILE = 20, 17, 11, 7, 6
RESTORE_STATES = frozenset({"startrestore", "endrestore", "abortrestore"})
BACKUP_STATES = frozenset({"startbackup", "endbackup"})
FILE_OBJECT, PROGRAM_OBJECT, DEVICE_OBJECT = 10, 16, 8
BVLC_FUNCTIONS: dict[int, tuple[str, str, str]] = {  # (name, operation, direction)
    0x0: ("BVLC-Result", "session", "response"),
    0x1: ("Write-Broadcast-Distribution-Table", "configuration", "request"),
    0x2: ("Read-Broadcast-Distribution-Table", "diagnostics", "request"),
    0x3: ("Read-Broadcast-Distribution-Table-Ack", "diagnostics", "response"),
    0x4: ("Forwarded-NPDU", "other", "request"),
    0x5: ("Register-Foreign-Device", "session", "request"),
    0x6: ("Read-Foreign-Device-Table", "diagnostics", "request"),
    0x7: ("Read-Foreign-Device-Table-Ack", "diagnostics", "response"),
    0x8: ("Delete-Foreign-Device-Table-Entry", "configuration", "request"),
    0x9: ("Distribute-Broadcast-To-Network", "other", "request"),
    0xA: ("Original-Unicast-NPDU", "other", "request"),
    0xB: ("Original-Broadcast-NPDU", "other", "request"),
    0xC: ("Secured-BVLL", "other", "request"),
}
ERROR_CLASSES = (
    "device",
    "object",
    "property",
    "resources",
    "security",
    "services",
    "vt",
    "communication",
)
ERROR_CODES: dict[int, str] = {
    0: "other",
    1: "authentication-failed",
    5: "file-access-denied",
    23: "object-deletion-not-permitted",
    25: "operational-problem",
    26: "password-failure",
    27: "read-access-denied",
    29: "service-request-denied",
    31: "unknown-object",
    32: "unknown-property",
    37: "value-out-of-range",
    40: "write-access-denied",
}
AUTH_ERROR_CODES = frozenset({1, 26})  # authentication-failed, password-failure
SECURITY_CLASS = 4
IDENTITY_PROPERTIES = frozenset(
    {
        "vendor-name",
        "model-name",
        "firmware-revision",
        "application-software-version",
        "object-name",
        "location",
        "description",
        "serial-number",
    }
)
_LABEL = re.compile(r"^(?P<name>[^:{}\[\]]+):\s*(?P<value>.*)$")
_ENUM = re.compile(r"^(?P<name>[\w-]+)\s*\((?P<code>\d+)\)$")
_STRING = re.compile(r"^[\w -]*'(?P<text>.*)'$")
_TYPED = re.compile(r"^\((?:Unsigned|Signed)\)\s*(?P<n>-?\d+)$")


def _label_value(raw: str) -> Any:
    raw = raw.strip()
    m = _TYPED.match(raw)
    if m:
        return int(m.group("n"))
    m = _ENUM.match(raw)
    if m:
        return m.group("name")
    m = _STRING.match(raw)
    if m:
        return m.group("text")
    return raw


def _labels(apdu: dict[str, Any]) -> dict[str, Any]:
    """Parameters the dissector shows only in item labels (``"Priority: (Unsigned) 8"``)."""
    out: dict[str, Any] = {}
    for key in apdu:
        if key.startswith("bacapp."):
            continue
        m = _LABEL.match(key)
        if m:
            name = m.group("name").strip().lower().replace(" ", "_")
            out.setdefault(name, _label_value(m.group("value")))
    return out


class Normaliser:
    def __init__(self, max_objects: int = 64) -> None:
        self.max_objects = max_objects
        self._requests = PairTable(65536)  # (flow, invoke id) -> (name, operation, service)
        self.stats = {"messages": 0}

    def packet(self, layers: dict[str, Any], base: FrameBase) -> list[OTEvent]:
        bvlcs = layer_list(layers, "bvlc")
        apdus = layer_list(layers, "bacapp")
        npdus = layer_list(layers, "bacnet")
        out: list[OTEvent] = []
        for i, bvlc in enumerate(bvlcs or [{}]):
            self.stats["messages"] += 1
            func = to_int(get(bvlc, "bvlc.function"))
            if i < len(apdus):
                out.append(self._apdu(apdus[i], func, base))
                continue
            npdu = npdus[i] if i < len(npdus) else None
            if func in (0x4, 0x9, 0xA, 0xB) and npdu is not None:
                mtype = to_int(get(npdu, "bacnet.mesgtyp"))
                name = f"network-message-{mtype}" if mtype is not None else "npdu"
                detail = {"bvlc": func, "network_message": mtype}
                out.append(event(base, PROTOCOL, "request", "session", name, mtype, detail=detail))
                continue
            name, operation, direction = BVLC_FUNCTIONS.get(
                func if func is not None else -1, (unknown(func), "other", "request")
            )
            detail = {"bvlc": func}
            result = to_int(get(bvlc, "bvlc.result"))
            status = None
            if result is not None:
                detail["result"] = result
                status = "ok" if result == 0 else f"nak-{result:#06x}"
            out.append(
                event(
                    base, PROTOCOL, direction, operation, name, func, status=status, detail=detail
                )
            )
        return out

    def _apdu(self, apdu: dict[str, Any], bvlc: int | None, base: FrameBase) -> OTEvent:
        ptype = to_int(get(apdu, "bacapp.type"), -1)
        typed = get(apdu, "bacapp.type_tree") or {}
        invoke = to_int(get(apdu, "bacapp.invoke_id"), to_int(get(typed, "bacapp.invoke_id")))
        service = to_int(
            get(apdu, "bacapp.confirmed_service"), to_int(get(typed, "bacapp.confirmed_service"))
        )
        labels = _labels(apdu)
        detail: dict[str, Any] = {
            "bvlc": bvlc,
            "pdu_type": PDU_TYPES[ptype] if 0 <= ptype < len(PDU_TYPES) else unknown(ptype),  # type: ignore[operator]
            "invoke_id": invoke,
        }
        obj_type = to_int(find(apdu, "bacapp.objectType"))
        instance = to_int(find(apdu, "bacapp.instance_number"))
        obj_name = next(
            (
                k.split(":", 1)[1].split(",")[0].strip()
                for k in apdu
                if k.startswith("ObjectIdentifier:")
            ),
            None,
        )
        prop = to_int(find(apdu, "bacapp.property_identifier"))
        prop_name = next(
            (
                k.split(":", 1)[1].rsplit("(", 1)[0].strip()
                for k in apdu
                if k.startswith("Property Identifier:")
            ),
            None,
        )
        objects: list[dict[str, Any]] = []
        if obj_type is not None:
            detail["object"] = {"type": obj_type, "type_name": obj_name, "instance": instance}
            obj: dict[str, Any] = {"address": f"{obj_name or obj_type}:{instance}"}
            if prop is not None:
                detail["property"] = prop
                detail["property_name"] = prop_name
                obj["property"] = prop_name or prop
            value = _present_value(apdu)
            if value is not None:
                obj["value"] = value
            objects.append(obj)
        for key, name in (
            ("priority", "priority"),
            ("state", "reinitialized_state_of_device"),
            ("enable_disable", "enable-disable"),
            ("duration", "time_duration"),
        ):
            if name in labels:
                detail[key] = labels[name]
        if "password" in labels:
            detail["password"] = True  # never its value
        unit = instance if obj_type == DEVICE_OBJECT else None
        status = None
        key = (*flow_key(base, reverse=ptype != 0), invoke)
        if ptype == 1:  # unconfirmed request
            code = to_int(get(apdu, "bacapp.unconfirmed_service"))
            name, operation, direction = UNCONFIRMED.get(
                code if code is not None else -1, (unknown(code), "other", "request")
            )
            vendor = to_int(find(apdu, "bacapp.vendor_identifier"))
            if vendor is not None:
                detail["vendor_id"] = vendor
            detail["service"] = code
        else:
            code = service
            name, operation = CONFIRMED.get(
                code if code is not None else -1, (unknown(code), "other")
            )
            operation = _refine(code, operation, detail)
            detail["service"] = code
            if ptype == 0:
                direction = "request"
                self._requests.put(key, (name, operation))
            else:
                direction = "response"
                request = self._requests.pop(key)
                if request is not None and (code is None or request[0] == name):
                    name, operation = request
                status = "ok"
                if ptype == 5:
                    ecls = to_int(get(apdu, "bacapp.error_class"))
                    ecode = to_int(get(apdu, "bacapp.error_code"))
                    detail["error_class"], detail["error_code"] = ecls, ecode
                    cls_name = (
                        ERROR_CLASSES[ecls] if ecls is not None and 0 <= ecls < 8 else unknown(ecls)
                    )
                    code_name = (
                        ERROR_CODES.get(ecode, unknown(ecode)) if ecode is not None else "unknown"
                    )
                    status = f"{cls_name}:{code_name}"
                    if ecls == SECURITY_CLASS or ecode in AUTH_ERROR_CODES:
                        detail["authentication_failure"] = True
                elif ptype == 6:
                    reason = to_int(get(apdu, "bacapp.reject_reason"))
                    detail["reject_reason"] = reason
                    status = f"reject-{reason}"
                elif ptype == 7:
                    reason = to_int(get(apdu, "bacapp.abort_reason"))
                    detail["abort_reason"] = reason
                    status = f"abort-{reason}"
                    if reason in (5, 6):  # security-error, insufficient-security
                        detail["authentication_failure"] = True
            if ptype == 3:
                identity = {
                    k: v
                    for k, v in labels.items()
                    if k in IDENTITY_PROPERTIES and isinstance(v, str)
                }
                name_field = find(apdu, "bacapp.object_name")
                if isinstance(name_field, str) and name_field:
                    identity["object-name"] = name_field
                if identity:
                    detail["identity"] = identity
        return event(
            base,
            PROTOCOL,
            direction,
            operation,
            name,
            code,
            unit=unit,
            objects=objects,
            status=status,
            detail=detail,
        )


def _refine(service: int | None, operation: str, detail: dict[str, Any]) -> str:
    obj = detail.get("object") or {}
    if service == REINITIALIZE:
        state = detail.get("state")
        if state in RESTORE_STATES:
            return "program_download"
        if state in BACKUP_STATES:
            return "program_upload"
    elif service == ATOMIC_WRITE_FILE:
        return "program_download" if obj.get("type") == PROGRAM_OBJECT else "file"
    elif service == ATOMIC_READ_FILE:
        return "program_upload" if obj.get("type") == PROGRAM_OBJECT else "file"
    elif service == DELETE_OBJECT and obj.get("type") == FILE_OBJECT:
        return "file"
    return operation


def _present_value(apdu: dict[str, Any]) -> Any:
    for key, value in apdu.items():
        if key.startswith("bacapp.present_value.") and not key.endswith("_tree"):
            return to_num(value) if not isinstance(value, dict) else None
    return None
