"""The DNP3 keywords (``dnp3_func``, ``dnp3_ind``, ``dnp3_obj``, ``dnp3_data``) and DNP3
app-layer events (spec section 4).

Every option is parsed once, at load time, into ``Dnp3Func`` / ``Dnp3Ind`` / ``Dnp3Obj``
(``sentinel.rules.model``); matching is a pure function of those and a DNP3 ``OTEvent`` (the
tshark-decoded application fragment: function code, ``detail["dnp3"]`` with ``iin`` and
``objects``, and ``data``, the application buffer).

Syntax: the Suricata 7/8 forms, plus the 9.x integer and bit-flag forms where they do not
change the meaning of a 7/8 rule:

- ``dnp3_func``: a decimal code or a name (7/8); any 9.x u8 integer form (``>N``, ``<=N``,
  ``!N``, ``A-B`` / ``A<>B`` exclusive, ``!A-B``, ``0x`` hex, ``&M=V``) and ``!name``.
- ``dnp3_ind``: a number (``strtoul`` base 0, so ``0x`` hex and a leading 0 octal) or a comma
  list of names: *any* listed bit set, with IIN2 masked by 0x0F (7/8 *quirk*; a warning says
  when a listed flag can never match). 9.x forms: a modifier (``+`` all, ``*`` any, ``-`` not
  all, ``=`` exactly) before the names, per-flag ``!`` (flag clear), or an integer form with an
  operator (``=N``, ``!0``, ``>N``, ``&M=V``, ranges); these compare all 16 bits, unmasked.
  A plain number keeps its 7/8 meaning ("any of these bits"), not 9.x's "equals".
- ``dnp3_obj:G,V``: two u8, base auto-detected: ``0x`` hex and a leading 0 octal (*quirk*,
  with a warning); matches when any object header of the transaction has exactly G and V.
- ``dnp3_data``: sticky buffer (the keyword's options follow it); see ``keywords``.

Directions (Suricata's ``detect-dnp3.c``): a transaction is one message; to-server messages
are requests, to-client messages responses. ``dnp3_func`` and ``dnp3_obj`` look at the
transaction of the packet's direction, ``dnp3_ind`` only at to-client ones. Application
CONFIRM requests are not transactions in Suricata (they are ignored), so no DNP3 keyword
matches them.

Divergences from Suricata 9.x (documented in docs/rules.md): with ``*`` a ``!flag`` counts as
"flag clear" (9.x ignores the ``!`` there) and ``=`` with ``!flag`` compares against the flags
written without ``!`` (9.x compares against all named flags).
"""

from __future__ import annotations

import re

from sentinel.events import OTEvent
from sentinel.rules.model import Dnp3Func, Dnp3Ind, Dnp3Obj, Dnp3Option, UintMatch
from sentinel.rules.payload import KeywordError

# Suricata's DNP3FunctionNameMap (detect-dnp3.c, Snort compatible names).
FUNCTION_NAMES: dict[str, int] = {
    "confirm": 0,
    "read": 1,
    "write": 2,
    "select": 3,
    "operate": 4,
    "direct_operate": 5,
    "direct_operate_nr": 6,
    "immed_freeze": 7,
    "immed_freeze_nr": 8,
    "freeze_clear": 9,
    "freeze_clear_nr": 10,
    "freeze_at_time": 11,
    "freeze_at_time_nr": 12,
    "cold_restart": 13,
    "warm_restart": 14,
    "initialize_data": 15,
    "initialize_appl": 16,
    "start_appl": 17,
    "stop_appl": 18,
    "save_config": 19,
    "enable_unsolicited": 20,
    "disable_unsolicited": 21,
    "assign_class": 22,
    "delay_measure": 23,
    "record_current_time": 24,
    "open_file": 25,
    "close_file": 26,
    "delete_file": 27,
    "get_file_info": 28,
    "authenticate_file": 29,
    "abort_file": 30,
    "activate_config": 31,
    "authenticate_req": 32,
    "authenticate_err": 33,
    "response": 129,
    "unsolicited_response": 130,
    "authenticate_resp": 131,
}
CONFIRM = 0

# Suricata's DNP3IndicatorsMap; IIN1 is the high byte (IEEE 1815-2012 4.2.2.7.2).
IND_FLAGS: dict[str, int] = {
    "device_restart": 0x8000,
    "device_trouble": 0x4000,
    "local_control": 0x2000,
    "need_time": 0x1000,
    "class_3_events": 0x0800,
    "class_2_events": 0x0400,
    "class_1_events": 0x0200,
    "all_stations": 0x0100,
    "reserved_1": 0x0080,
    "reserved_2": 0x0040,
    "config_corrupt": 0x0020,
    "already_executing": 0x0010,
    "event_buffer_overflow": 0x0008,
    "parameter_error": 0x0004,
    "object_unknown": 0x0002,
    "no_func_code_support": 0x0001,
}
LEGACY_IIN_MASK = 0xFF0F  # 7/8: iin1 & (flags >> 8) || iin2 & (flags & 0xf)

# --------------------------------------------------------------------------- events
# Suricata's DNP3 app-layer events (rules/dnp3-events.rules, sids 22700xx). All can be named
# in rules and all are produced: ``flooded``, ``bad_link_crc`` and ``len_too_small`` for a
# link length below 5 by the native link checker (decode/dnp3_link.py, as ``Anomaly``
# events), the others (and ``len_too_small`` for short user data) from tshark's dissection
# (decode/ot/dnp3.py, on the message they concern).
DNP3_EVENTS: dict[str, str] = {
    "flooded": "more than 32 live transactions in a flow",
    "len_too_small": "a frame too short for the transport and application headers (+ IIN)",
    "bad_link_crc": "link header CRC mismatch",
    "bad_transport_crc": "a data block CRC mismatch",
    "unknown_object": "an object group/variation that the object table does not know",
    "too_many_points": "more than 16384 points in one message",
    "too_many_objects": "more than 2048 objects in one message",
    "too_long_reassembly": "an application fragment longer than 63 x 255 bytes",
    "malformed": "a message the decoder could not take apart",
}
PRODUCED_EVENTS = frozenset(DNP3_EVENTS)
# Events a rule can name but Sentinel never raises (a load warning says so): none since the
# link checker.
NOT_PRODUCED: dict[str, str] = {}


# --------------------------------------------------------------------------- integers
_NUM = r"(0x[0-9a-fA-F]+|\d+)"
_BITMASK = re.compile(r"^\s*&\s*" + _NUM + r"\s*(!?)=\s*" + _NUM + r"\s*$")
_INTERVAL = re.compile(r"^\s*(!?)" + _NUM + r"\s*(?:-|<>)\s*" + _NUM + r"\s*$")
_EQUAL = re.compile(r"^\s*=?\s*" + _NUM + r"\s*$")
_SYMBOL = re.compile(r"^\s*(>=|<=|>|<|!=|!)\s*" + _NUM + r"\s*$")


def _num(text: str, top: int, what: str) -> int:
    value = int(text, 16) if text.startswith("0x") else int(text)
    if value > top:
        raise KeywordError(f"{what}: {text} is out of range (0-{top})")
    return value


def parse_uint(text: str, top: int, what: str) -> UintMatch | None:
    """Suricata's ``detect_parse_uint`` for an unsigned integer of maximum ``top``; None when
    the text is not an integer form at all (a name, say)."""
    m = _BITMASK.match(text)
    if m:
        mask, value = _num(m.group(1), top, what), _num(m.group(3), top, what)
        if value & mask != value:
            raise KeywordError(f"{what}: &{m.group(1)}={m.group(3)} can never match")
        return UintMatch("&!=" if m.group(2) else "&=", mask, value)
    m = _INTERVAL.match(text)
    if m:
        low, high = _num(m.group(2), top, what), _num(m.group(3), top, what)
        if high <= low + 1:
            raise KeywordError(f"{what}: empty range {low}-{high} (bounds are exclusive)")
        return UintMatch("!range" if m.group(1) else "range", low, high)
    m = _EQUAL.match(text)
    if m:
        return UintMatch("=", _num(m.group(1), top, what))
    m = _SYMBOL.match(text)
    if m:
        op = "!=" if m.group(1) == "!" else m.group(1)
        value = _num(m.group(2), top, what)
        if (op in ("<", ">=") and value == 0) or (op in (">", "<=") and value == top):
            raise KeywordError(f"{what}: {text.strip()} can never match (or always does)")
        return UintMatch(op, value)
    return None


# --------------------------------------------------------------------------- parsing
def parse_func(text: str) -> tuple[Dnp3Func, list[str]]:
    value = text.strip()
    warnings: list[str] = []
    match = parse_uint(value, 0xFF, "dnp3_func")
    if match is None:
        negated = value.startswith("!")
        name = value[1:].strip().lower() if negated else value.lower()
        if name not in FUNCTION_NAMES:
            raise KeywordError(
                f"dnp3_func: unknown function {value!r} (a code 0-255 or a name such as read, "
                "write, direct_operate, cold_restart, response)"
            )
        match = UintMatch("!=" if negated else "=", FUNCTION_NAMES[name])
    if match.mode == "=" and match.arg1 == CONFIRM:
        warnings.append(
            "dnp3_func: application CONFIRM requests are not transactions (Suricata ignores "
            "them), so this only matches confirms sent to the client"
        )
    return Dnp3Func(match, value), warnings


_LEGACY_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)$")
_MASKED_NAMES = tuple(n for n, bit in IND_FLAGS.items() if bit & ~LEGACY_IIN_MASK)


def parse_ind(text: str) -> tuple[Dnp3Ind, list[str]]:
    value = text.strip()
    warnings: list[str] = []
    if re.fullmatch(r"0\d+", value) and not re.fullmatch(r"0[0-7]+", value):
        raise KeywordError(f"dnp3_ind: {value} is not octal (a leading 0 means octal)")
    if _LEGACY_NUMBER.match(value):  # StringParseUint16(base 0): hex, octal, decimal
        octal = len(value) > 1 and value[0] == "0" and value[1] not in "xX"
        flags = int(value, 8) if octal else int(value, 0)
        if flags > 0xFFFF:
            raise KeywordError(f"dnp3_ind: {value} is out of range (0-65535)")
        if octal and flags != int(value):
            warnings.append(f"dnp3_ind: {value} is read as octal ({flags:#06x}), as Suricata does")
        if not flags & LEGACY_IIN_MASK:
            warnings.append(
                f"dnp3_ind: {value} never matches (no IIN1 bit and no IIN2 bit of 0x0F; "
                "write =0 or !0 to compare the whole value)"
            )
        return Dnp3Ind(legacy=flags, text=value), warnings
    if re.match(r"[A-Za-z_]", value) and "!" not in value:  # 7/8: a list of names
        flags = _names([n.strip() for n in value.split(",") if n.strip()], value)
        masked = [n for n in _MASKED_NAMES if IND_FLAGS[n] & flags]
        if masked:
            warnings.append(
                f"dnp3_ind: {', '.join(masked)} never match in this form (Suricata 7/8 masks "
                f"IIN2 with 0x0F); write *{masked[0]} to test the flag"
            )
        return Dnp3Ind(legacy=flags, text=value), warnings
    match = parse_uint(value, 0xFFFF, "dnp3_ind")
    if match is not None:
        return Dnp3Ind(match=match, text=value), warnings
    modifier = "*"
    rest = value
    if value[0] in "+*-=":
        modifier, rest = value[0], value[1:]
    mask = want = 0
    items = [w for w in re.split(r"[\s,]+", rest) if w]
    if not items:
        raise KeywordError(f"dnp3_ind: no flag after {modifier!r}")
    for item in items:
        negated = item.startswith("!")
        name = item[1:] if negated else item
        bit = _names([name], value)
        if bit & mask:
            raise KeywordError(f"dnp3_ind: flag {name} given twice")
        mask |= bit
        if not negated:
            want |= bit
    return Dnp3Ind(modifier=modifier, mask=mask, want=want, text=value), warnings


def _names(names: list[str], text: str) -> int:
    if not names:
        raise KeywordError(f"dnp3_ind: no flag in {text!r}")
    flags = 0
    for name in names:
        bit = IND_FLAGS.get(name.lower())
        if bit is None:
            raise KeywordError(
                f"dnp3_ind: unknown flag {name!r} (device_restart, device_trouble, "
                "local_control, need_time, class_1/2/3_events, all_stations, reserved_1/2, "
                "config_corrupt, already_executing, event_buffer_overflow, parameter_error, "
                "object_unknown, no_func_code_support)"
            )
        flags |= bit
    return flags


_U8_AUTO = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)$")


def _u8_auto(text: str, what: str, warnings: list[str]) -> int:
    """StringParseUint8 with base 0: ``0x`` hex, a leading 0 octal, else decimal."""
    t = text.strip()
    if not _U8_AUTO.match(t):
        if re.fullmatch(r"0\d+", t):
            raise KeywordError(f"dnp3_obj: {what} {t} is not octal (a leading 0 means octal)")
        raise KeywordError(f"dnp3_obj: {what} {t!r} is not a number")
    if t[:2].lower() == "0x":
        value = int(t, 16)
    elif len(t) > 1 and t[0] == "0":
        value = int(t, 8)
        if value != int(t):
            warnings.append(f"dnp3_obj: {what} {t} is read as octal ({value}), as Suricata does")
    else:
        value = int(t)
    if value > 0xFF:
        raise KeywordError(f"dnp3_obj: {what} {t} is out of range (0-255)")
    return value


def parse_obj(text: str) -> tuple[Dnp3Obj, list[str]]:
    value = text.strip()
    if "," not in value:
        raise KeywordError(f"dnp3_obj must be group,variation, not {value!r}")
    group, variation = value.split(",", 1)
    warnings: list[str] = []
    g = _u8_auto(group, "group", warnings)
    v = _u8_auto(variation, "variation", warnings)
    return Dnp3Obj(g, v, value), warnings


# --------------------------------------------------------------------------- matching
def is_transaction(ev: OTEvent) -> bool:
    """Whether Suricata would have a transaction for this message (not a CONFIRM request,
    not a frame without an application layer)."""
    return ev.code is not None and not (ev.is_orig and ev.code == CONFIRM)


def iin_matches(m: Dnp3Ind, iin: int) -> bool:
    if m.legacy is not None:
        return bool(iin & m.legacy & LEGACY_IIN_MASK)
    if m.match is not None:
        return m.match(iin)
    mod, mask, want = m.modifier, m.mask, m.want
    if mod == "+":
        return iin & mask == want
    if mod == "-":
        return iin & mask != want
    if mod == "=":
        return iin == want
    # "*": one listed condition holds (a flag set, or a !flag clear)
    return bool(iin & want) or bool(~iin & (mask & ~want))


def option_matches(opt: Dnp3Option, ev: OTEvent) -> bool:
    """One DNP3 keyword against one transaction (``is_transaction(ev)`` already checked)."""
    if isinstance(opt, Dnp3Func):
        return opt.match(ev.code)  # type: ignore[arg-type]
    detail = ev.detail.get("dnp3", {})
    if isinstance(opt, Dnp3Obj):
        g, v = opt.group, opt.variation
        return any(h["group"] == g and h["variation"] == v for h in detail.get("objects", ()))
    if ev.is_orig:  # dnp3_ind: to-client only
        return False
    iin = detail.get("iin")
    return iin is not None and iin_matches(opt, iin)


def events_of(ev: OTEvent) -> tuple[str, ...]:
    """The DNP3 app-layer event names the decoder attached to a message."""
    return tuple(ev.detail.get("dnp3", {}).get("events", ()))
