"""IEC 60870-5-104 from Wireshark's ``iec60870_104`` (APCI) and ``iec60870_asdu`` dissectors.

One event per APDU: I-format frames carry an ASDU (the event's function is its type id,
``C_SC_NA_1``); S-format frames (``S_ACK``) acknowledge; U-format frames are the link
functions (``STARTDT_ACT``, ``TESTFR_CON``, ...). Several APDUs in one TCP segment are
several events, in order (the dissector lists APCIs and ASDUs apart; ASDUs belong to the
I-format APCIs in order).

``detail["iec104"]``: ``apci`` (``type`` I/S/U, ``tx``/``rx`` sequence numbers, ``u``
function), and for I-format ``asdu``: ``type_id``, ``sq``, ``count`` (number of objects),
``cot`` and ``cot_name`` (cause of transmission), ``negative`` (P/N bit), ``test``,
``originator``, ``common_address``. Command objects carry the select/execute bit
(``select``: true for select, false for execute) and the qualifier (``qualifier``: QU of
single/double/regulating commands, QL of set-points). ``unit`` is the common address.

An ASDU that tshark flags malformed (``_ws.malformed``: it ends before its fields do, as in
Wireshark's ``TestDissectIec104.pcap``) keeps what was dissected (``cot`` None when the cause
is missing) with status ``malformed``.
"""

from __future__ import annotations

from typing import Any

from sentinel.decode.ot.common import (
    FrameBase,
    as_list,
    event,
    get,
    layer_list,
    subtrees,
    to_bool,
    to_int,
    to_num,
    unknown,
)
from sentinel.events import OTEvent

PROTOCOL = "iec104"
LAYERS = ("iec60870_104", "iec60870_asdu", "_ws.malformed")  # with tshark's malformed marker
FILTER = "iec60870_104"
DISSECTOR = "iec60870_104"
TRANSPORTS = ("tcp",)  # where --decode-as can hand it extra ports

# IEC 60870-5-101 7.2.1.1 and IEC 60870-5-104 table 1, security types IEC 62351-5 / 60870-5-7.
TYPES: dict[int, str] = {
    1: "M_SP_NA_1",
    2: "M_SP_TA_1",
    3: "M_DP_NA_1",
    4: "M_DP_TA_1",
    5: "M_ST_NA_1",
    6: "M_ST_TA_1",
    7: "M_BO_NA_1",
    8: "M_BO_TA_1",
    9: "M_ME_NA_1",
    10: "M_ME_TA_1",
    11: "M_ME_NB_1",
    12: "M_ME_TB_1",
    13: "M_ME_NC_1",
    14: "M_ME_TC_1",
    15: "M_IT_NA_1",
    16: "M_IT_TA_1",
    17: "M_EP_TA_1",
    18: "M_EP_TB_1",
    19: "M_EP_TC_1",
    20: "M_PS_NA_1",
    21: "M_ME_ND_1",
    30: "M_SP_TB_1",
    31: "M_DP_TB_1",
    32: "M_ST_TB_1",
    33: "M_BO_TB_1",
    34: "M_ME_TD_1",
    35: "M_ME_TE_1",
    36: "M_ME_TF_1",
    37: "M_IT_TB_1",
    38: "M_EP_TD_1",
    39: "M_EP_TE_1",
    40: "M_EP_TF_1",
    41: "S_IT_TC_1",
    45: "C_SC_NA_1",
    46: "C_DC_NA_1",
    47: "C_RC_NA_1",
    48: "C_SE_NA_1",
    49: "C_SE_NB_1",
    50: "C_SE_NC_1",
    51: "C_BO_NA_1",
    58: "C_SC_TA_1",
    59: "C_DC_TA_1",
    60: "C_RC_TA_1",
    61: "C_SE_TA_1",
    62: "C_SE_TB_1",
    63: "C_SE_TC_1",
    64: "C_BO_TA_1",
    70: "M_EI_NA_1",
    81: "S_CH_NA_1",
    82: "S_RP_NA_1",
    83: "S_AR_NA_1",
    84: "S_KR_NA_1",
    85: "S_KS_NA_1",
    86: "S_KC_NA_1",
    87: "S_ER_NA_1",
    90: "S_US_NA_1",
    91: "S_UQ_NA_1",
    92: "S_UR_NA_1",
    93: "S_UK_NA_1",
    94: "S_UA_NA_1",
    95: "S_UC_NA_1",
    100: "C_IC_NA_1",
    101: "C_CI_NA_1",
    102: "C_RD_NA_1",
    103: "C_CS_NA_1",
    104: "C_TS_NA_1",
    105: "C_RP_NA_1",
    106: "C_CD_NA_1",
    107: "C_TS_TA_1",
    110: "P_ME_NA_1",
    111: "P_ME_NB_1",
    112: "P_ME_NC_1",
    113: "P_AC_NA_1",
    120: "F_FR_NA_1",
    121: "F_SR_NA_1",
    122: "F_SC_NA_1",
    123: "F_LS_NA_1",
    124: "F_AF_NA_1",
    125: "F_SG_NA_1",
    126: "F_DR_TA_1",
    127: "F_SC_NB_1",
}
SETPOINT_TYPES = frozenset({48, 49, 50, 51, 61, 62, 63, 64})  # set-points and bitstrings
COMMAND_TYPES = frozenset({45, 46, 47, 58, 59, 60})  # single, double, regulating step
AUTH_ERROR_TYPE = 87  # S_ER_NA_1: authentication error (IEC 60870-5-7)
END_OF_INIT = 70


def type_operation(type_id: int) -> str:
    if type_id < 45 or type_id == END_OF_INIT:
        return "report"
    if type_id in COMMAND_TYPES:
        return "control"
    if type_id in SETPOINT_TYPES:
        return "write"
    if 81 <= type_id <= 95:
        return "authentication"
    return {
        100: "read",  # general interrogation
        101: "read",  # counter interrogation
        102: "read",
        103: "time_sync",  # clock synchronisation
        104: "diagnostics",  # test command
        105: "restart",  # reset process command
        106: "time_sync",  # delay acquisition
        107: "diagnostics",
        110: "configuration",  # parameters of measured values
        111: "configuration",
        112: "configuration",
        113: "configuration",  # parameter activation
    }.get(type_id, "file" if 120 <= type_id <= 127 else "other")


# Cause of transmission (IEC 60870-5-101 7.2.3, 104 adds 14-16 for security).
COT: dict[int, str] = {
    1: "per/cyc",
    2: "back",
    3: "spont",
    4: "init",
    5: "req",
    6: "act",
    7: "actcon",
    8: "deact",
    9: "deactcon",
    10: "actterm",
    11: "retrem",
    12: "retloc",
    13: "file",
    14: "auth",
    15: "seskey",
    16: "usrkey",
    **{20: "inrogen"},
    **{20 + n: f"inro{n}" for n in range(1, 17)},
    37: "reqcogen",
    38: "reqco1",
    39: "reqco2",
    40: "reqco3",
    41: "reqco4",
    44: "unknown_type_id",
    45: "unknown_cause",
    46: "unknown_common_address",
    47: "unknown_ioa",
}
REQUEST_COT = frozenset({5, 6, 8, 13, 14, 15, 16})
RESPONSE_COT = frozenset({7, 9, 10, 44, 45, 46, 47})
U_FUNCTIONS: dict[int, str] = {
    0x01: "STARTDT_ACT",
    0x02: "STARTDT_CON",
    0x04: "STOPDT_ACT",
    0x08: "STOPDT_CON",
    0x10: "TESTFR_ACT",
    0x20: "TESTFR_CON",
}
# Quality descriptor bits (IEC 60870-5-101 7.2.6.1-7.2.6.3).
QUALITY_FIELDS = ("siq", "diq", "qds")
QUALITY_BITS = ("ov", "bl", "sb", "nt", "iv")
VALUE_FIELDS = (
    ("iec60870_asdu.float", None),
    ("iec60870_asdu.normval", None),
    ("iec60870_asdu.scalval", None),
    ("iec60870_asdu.bitstring", None),
    ("iec60870_asdu.siq.spi", None),
    ("iec60870_asdu.diq.dpi", None),
    ("iec60870_asdu.vti.v", None),
    ("iec60870_asdu.bcr.count", None),
    ("iec60870_asdu.qoi", None),
    ("iec60870_asdu.qrp", None),
    ("iec60870_asdu.coi", None),
)
COMMANDS = (("sco", "on", "qu"), ("dco", "on", "qu"), ("rco", "up", "qu"), ("qos", None, "ql"))


class Normaliser:
    def __init__(self, max_objects: int = 64) -> None:
        self.max_objects = max_objects
        self.stats = {"apdus": 0, "apdus_malformed": 0, "asdus_undecoded": 0, "asdus_malformed": 0}

    def packet(self, layers: dict[str, Any], base: FrameBase) -> list[OTEvent]:
        asdus = as_list(layers.get("iec60870_asdu"))
        out: list[OTEvent] = []
        for apci in layer_list(layers, "iec60870_104"):
            kind = to_int(get(apci, "iec60870_104.type"))
            if kind is None:  # shorter than an APCI ("APDU less than 4 bytes"): not a message
                self.stats["apdus_malformed"] += 1
                continue
            self.stats["apdus"] += 1
            seq = {
                "tx": to_int(get(apci, "iec60870_104.tx")),
                "rx": to_int(get(apci, "iec60870_104.rx")),
            }
            if kind == 1:
                out.append(
                    self._apci_only(base, "S_ACK", "response", "session", {"type": "S", **seq})
                )
            elif kind == 3:
                u = to_int(get(apci, "iec60870_104.utype"), 0) or 0
                name = U_FUNCTIONS.get(u, f"U_{u:#x}")
                direction = "request" if name.endswith("_ACT") else "response"
                detail = {"type": "U", "u": name}
                out.append(self._apci_only(base, name, direction, "session", detail))
            else:
                asdu = asdus.pop(0) if asdus else None
                out.append(self._asdu(base, asdu, {"type": "I", **seq}))
        if out and "_ws.malformed" in layers and out[-1].status != "malformed":
            # the dissector ran out of data in the frame's last APDU (a truncated ASDU)
            self.stats["asdus_malformed"] += 1
            out[-1] = out[-1]._replace(status="malformed")
        return out

    def _apci_only(
        self, base: FrameBase, name: str, direction: str, operation: str, apci: dict[str, Any]
    ) -> OTEvent:
        apci = {k: v for k, v in apci.items() if v is not None}
        return event(base, PROTOCOL, direction, operation, name, None, detail={"apci": apci})

    def _asdu(self, base: FrameBase, asdu: Any, apci: dict[str, Any]) -> OTEvent:
        if not isinstance(asdu, dict) or get(asdu, "iec60870_asdu.typeid") is None:
            self.stats["asdus_undecoded"] += 1
            return event(
                base,
                PROTOCOL,
                "request",
                "other",
                "I_FORMAT",
                None,
                status="malformed",
                detail={"apci": apci},
            )
        type_id = to_int(get(asdu, "iec60870_asdu.typeid"), 0) or 0
        cause = to_int(get(asdu, "iec60870_asdu.causetx"))  # None: a truncated ASDU
        cot = cause or 0
        negative = to_bool(get(asdu, "iec60870_asdu.nega"))
        common = to_int(get(asdu, "iec60870_asdu.addr"))
        info = {
            "type_id": type_id,
            "sq": to_bool(get(asdu, "iec60870_asdu.sq")),
            "count": to_int(get(asdu, "iec60870_asdu.numix")),
            "cot": cause,
            "cot_name": None if cause is None else COT.get(cause, unknown(cause)),
            "negative": negative,
            "test": to_bool(get(asdu, "iec60870_asdu.test")),
            "originator": to_int(get(asdu, "iec60870_asdu.oa")),
            "common_address": common,
        }
        operation = type_operation(type_id)
        if type_id < 45 or type_id == END_OF_INIT:
            direction = "response" if 20 <= cot <= 41 else "unsolicited"
        elif cot in RESPONSE_COT:
            direction = "response"
        elif cot in REQUEST_COT:
            direction = "request"
        else:
            direction = "unsolicited"
        status = None
        if direction == "response":
            if cot >= 44:
                status = info["cot_name"]
            elif negative:
                status = "negative"
            elif type_id == AUTH_ERROR_TYPE:
                status = "authentication_error"
            else:
                status = "ok"
        elif type_id == AUTH_ERROR_TYPE:
            status = "authentication_error"
        objects, flags = self._objects(asdu)
        if len(objects) < (info["count"] or 0):
            info["objects_listed"] = len(objects)
        return event(
            base,
            PROTOCOL,
            direction,
            operation,
            TYPES.get(type_id, unknown(type_id)),
            type_id,
            unit=common,
            objects=objects,
            status=status,
            flags=flags,
            detail={"apci": apci, "asdu": info},
        )

    def _objects(self, asdu: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        objects: list[dict[str, Any]] = []
        flags: set[str] = set()
        for _, node in subtrees(asdu, "IOA"):
            quality = _quality(node)
            flags.update(quality)
            if len(objects) >= self.max_objects:
                continue
            obj: dict[str, Any] = {"address": to_int(get(node, "iec60870_asdu.ioa"))}
            for name, _ in VALUE_FIELDS:
                v = _field(node, name)
                if v is not None:
                    obj["value"] = to_num(v)
                    break
            for prefix, state, qual in COMMANDS:
                tree = node.get(f"iec60870_asdu.{prefix}_tree")
                if isinstance(tree, dict):
                    obj["select"] = to_bool(get(tree, f"iec60870_asdu.{prefix}.se"))
                    obj["qualifier"] = to_int(get(tree, f"iec60870_asdu.{prefix}.{qual}"))
                    if state is not None:
                        obj["value"] = to_int(get(tree, f"iec60870_asdu.{prefix}.{state}"))
                    break
            t = _field(node, "iec60870_asdu.cp56time")
            if t is not None:
                obj["time"] = t
            if quality:
                obj["quality"] = quality
            objects.append(obj)
        return objects, sorted(flags)


def _field(node: dict[str, Any], name: str) -> Any:
    """A field directly in the IOA node or in one of its ``_tree`` children."""
    v = get(node, name)
    if v is not None:
        return v
    for key, value in node.items():
        if key.endswith("_tree") and isinstance(value, dict):
            v = get(value, name)
            if v is not None:
                return v
    return None


def _quality(node: dict[str, Any]) -> list[str]:
    for q in QUALITY_FIELDS:
        tree = node.get(f"iec60870_asdu.{q}_tree")
        if isinstance(tree, dict):
            return [b for b in QUALITY_BITS if to_bool(get(tree, f"iec60870_asdu.{q}.{b}"))]
    return []
