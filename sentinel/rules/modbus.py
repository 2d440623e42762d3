"""The ``modbus:`` keyword and Modbus app-layer events (spec section 3).

Parsing follows Suricata's syntax exactly (``function``, ``subfunction``, categories,
``access`` with table / address / value ranges, ``unit``); matching is a pure function of a
``ModbusMatch`` and a decoded ``ModbusMessage``. Divergences from Suricata, all chosen for
protocol correctness and documented in docs/rules.md:

- ``function N`` compares the function code itself (Suricata compares its decoded enum, so
  there ``function 100`` matches every unrecognised code).
- FC 15 values are read least-significant-bit first, as the Modbus specification packs coils
  (Suricata's bit extraction differs).

Access bits, categories and names are also what the EVE sink logs (``sinks/eve.py``).
"""

from __future__ import annotations

import re
from typing import Any, Final

from sentinel.decode.modbus_codes import FUNC_BY_RAW
from sentinel.events import ModbusMessage
from sentinel.rules.model import IntCompare, ModbusMatch
from sentinel.rules.payload import KeywordError

# Access bits (sawp-modbus AccessType).
READ, WRITE, DISCRETES, COILS, INPUT, HOLDING, SINGLE, MULTIPLE = (1 << i for i in range(8))
ACCESS_NAMES = (
    ("READ", READ),
    ("WRITE", WRITE),
    ("DISCRETES", DISCRETES),
    ("COILS", COILS),
    ("INPUT", INPUT),
    ("HOLDING", HOLDING),
    ("SINGLE", SINGLE),
    ("MULTIPLE", MULTIPLE),
    ("BIT_ACCESS_MASK", DISCRETES | COILS),
    ("FUNC_MASK", DISCRETES | COILS | INPUT | HOLDING),
    ("WRITE_SINGLE", WRITE | SINGLE),
    ("WRITE_MULTIPLE", WRITE | MULTIPLE),
)
ACCESS_BY_FC: dict[int, int] = {
    1: READ | COILS,
    2: READ | DISCRETES,
    3: READ | HOLDING,
    4: READ | INPUT,
    5: WRITE | SINGLE | COILS,
    6: WRITE | SINGLE | HOLDING,
    15: WRITE | MULTIPLE | COILS,
    16: WRITE | MULTIPLE | HOLDING,
    22: WRITE | HOLDING,
    23: READ | WRITE | MULTIPLE | HOLDING,
}
TABLES = {"discretes": DISCRETES, "coils": COILS, "input": INPUT, "holding": HOLDING}

# Function code categories (sawp-modbus CodeCategory).
CAT_ASSIGNED, CAT_UNASSIGNED, CAT_USER, CAT_RESERVED = 1, 2, 4, 8
CATEGORY_NAMES = (
    ("PUBLIC_ASSIGNED", CAT_ASSIGNED),
    ("PUBLIC_UNASSIGNED", CAT_UNASSIGNED),
    ("USER_DEFINED", CAT_USER),
    ("RESERVED", CAT_RESERVED),
)
CATEGORIES = {
    "assigned": CAT_ASSIGNED,
    "unassigned": CAT_UNASSIGNED,
    "public": CAT_ASSIGNED | CAT_UNASSIGNED,
    "user": CAT_USER,
    "reserved": CAT_RESERVED,
    "all": CAT_ASSIGNED | CAT_UNASSIGNED | CAT_USER | CAT_RESERVED,
}
# Codes sawp-modbus knows by name (its FunctionCode enum): 1-24 and 43.
KNOWN_FUNCTIONS = frozenset([*range(1, 25), 43])
DIAG_ASSIGNED = frozenset([*range(0, 5), *range(10, 22)])

# Raw function byte from Zeek-style name (the decoder's ``func``), for exception requests.
RAW_BY_FUNC: dict[str, int] = {name: raw for raw, name in enumerate(FUNC_BY_RAW)}

# --------------------------------------------------------------------------- events
# Modbus app-layer events that rules can name. Suricata 7/8's set, then Sentinel's own
# decoder events. Where Suricata has the same event, the meaning and the bundled sid agree.
SURICATA_EVENTS = {
    "invalid_protocol_id": "MBAP protocol identifier is not 0",
    "unsolicited_response": "a response that no open request asked for",
    "invalid_length": "MBAP length outside 2-254, or bytes left over after the PDU",
    "invalid_function_code": "a request with function code 0 or with the exception bit set",
    "invalid_value": "a field outside what the specification allows",
    "invalid_exception_code": "an exception code that the function cannot return",
    "value_mismatch": "a write response that does not echo its request",
    "flooded": "too many requests without response",
}
SENTINEL_EVENTS = {
    "truncated_pdu": "the PDU ends before its fields do",
    "incomplete_adu": "an ADU cut by a capture gap or the end of the connection",
    "unknown_function": "a function code that neither the specification nor Zeek names",
    "non_modbus_traffic": "the connection's first bytes on a Modbus port are not Modbus/TCP",
    "unknown_diagnostic_subfunction": "a diagnostics (FC 8) sub-function with no name",
}
MODBUS_EVENTS = {**SURICATA_EVENTS, **SENTINEL_EVENTS}
RETIRED_EVENTS = {"invalid_unit_identifier": "removed in Suricata 7 (units 248-254 are legal)"}
# Events the rule engine derives from decoded messages (the decoder does not emit them).
DERIVED_EVENTS = frozenset({"invalid_function_code", "invalid_exception_code", "value_mismatch"})

# Valid exception codes (spec section 7) and the FCs that make codes 2 and 3 invalid.
_EXC_VALID = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 10, 11})
_EXC_NO_ADDRESS = frozenset([*range(7, 15), *range(17, 20)])
# What a write response echoes from its request (spec sections 6.5, 6.6, 6.11, 6.12, 6.16).
ECHOED: Final[dict[int, tuple[str, ...]]] = {
    5: ("address", "values"),
    6: ("address", "values"),
    15: ("address", "quantity"),
    16: ("address", "quantity"),
    22: ("address", "and_mask", "or_mask"),
}


def derived_events(msg: ModbusMessage, request: dict[str, Any] | None) -> list[str]:
    """Suricata events computed from the decoded message (and its request, for responses)."""
    fc = msg.fc
    if msg.is_orig:
        # FUNC_BY_RAW[fc] names the raw byte without the exception bit: a different name
        # means the request's function byte had the exception bit set.
        if fc == 0 or FUNC_BY_RAW[fc] != msg.func:
            return ["invalid_function_code"]
        return []
    fields = msg.fields
    if msg.exception is not None or "exception_code" in fields:
        code = fields.get("exception_code")
        if code is not None and (
            code not in _EXC_VALID
            or (code == 2 and fc in _EXC_NO_ADDRESS)
            or (code == 3 and fc in _EXC_NO_ADDRESS and fc != 8)
            or (code == 8 and fc not in (20, 21))
        ):
            return ["invalid_exception_code"]
        return []
    keys = ECHOED.get(fc)
    if request is not None and keys is not None:
        for key in keys:
            if key in fields and key in request and fields[key] != request[key]:
                return ["value_mismatch"]
    return []


# --------------------------------------------------------------------------- categories
def category(fc: int, fields: dict[str, Any]) -> int:
    """The category bit of a function code (0: none, as for code 0)."""
    if fc in KNOWN_FUNCTIONS:
        if fc == 8 and "sub_function" in fields:
            return CAT_ASSIGNED if fields["sub_function"] in DIAG_ASSIGNED else CAT_RESERVED
        if fc == 43 and "mei_type" in fields:
            return CAT_ASSIGNED if fields["mei_type"] in (13, 14) else CAT_RESERVED
        return CAT_ASSIGNED
    if fc == 0 or fc >= 128:
        return 0
    if fc in (41, 42, 90, 91, 125, 126, 127):
        return CAT_RESERVED
    if 65 <= fc <= 72 or 100 <= fc <= 110:
        return CAT_USER
    return CAT_UNASSIGNED


def flag_names(bits: int, names: tuple[tuple[str, int], ...]) -> str:
    """sawp's Display of a flag set: every contained flag, joined by `` | ``; NONE if empty."""
    if not bits:
        return "NONE"
    return " | ".join(name for name, b in names if bits & b == b)


# --------------------------------------------------------------------------- parsing
_RANGE = r"([<>]?\d+)(?:<>(\d+))?"
_UNIT_RE = re.compile(r"^\s*unit\s+" + _RANGE + r"\s*(?:,\s*(.*?))?\s*$", re.I | re.S)
_FUNC_RE = re.compile(r"^\s*function\s+(!?[A-Za-z0-9]+)(?:\s*,\s*subfunction\s+(\d+))?\s*$", re.I)
_ACCESS_RE = re.compile(
    r"^\s*access\s+(read|write)(?:\s+(discretes|coils|input|holding))?"
    r"(?:\s*,\s*address\s+" + _RANGE + r"(?:\s*,\s*value\s+" + _RANGE + r")?)?\s*$",
    re.I,
)


def _range(first: str, second: str | None, what: str) -> IntCompare:
    if second is not None:
        if first[0] in "<>":
            raise KeywordError(f"{what}: bad range {first}<>{second}")
        low, high = int(first), int(second)
        if low > 65535 or high > 65535:
            raise KeywordError(f"{what}: values are 16-bit (0-65535)")
        if low >= high:
            raise KeywordError(f"{what}: empty range {low}<>{high}")
        return IntCompare("<>", low, high)
    op = "="
    if first[0] in "<>":
        op, first = first[0], first[1:]
    value = int(first)
    if value > 65535:
        raise KeywordError(f"{what}: values are 16-bit (0-65535)")
    return IntCompare(op, value)


def parse_modbus(text: str) -> tuple[ModbusMatch, list[str]]:
    """A ``modbus:`` value into a ModbusMatch, and warnings."""
    warnings: list[str] = []
    unit = None
    rest = text.strip()
    m = _UNIT_RE.match(rest)
    if m:
        unit = _range(m.group(1), m.group(2), "unit")
        rest = (m.group(3) or "").strip()
        if not rest:
            return ModbusMatch(unit=unit, text=text.strip()), warnings
    elif re.match(r"^\s*unit\b", rest, re.I):
        raise KeywordError(f"bad unit form: {text.strip()!r}")
    m = _FUNC_RE.match(rest)
    if m:
        word, sub = m.group(1), m.group(2)
        sub_value = None
        if sub is not None:
            sub_value = int(sub)
            if sub_value > 65535:
                raise KeywordError("subfunction is a 16-bit value")
        if word.isdigit():
            fc = int(word)
            if not 1 <= fc <= 255:
                raise KeywordError(f"function {fc}: must be 1-255")
            if sub_value is not None and fc != 8:
                warnings.append(
                    f"subfunction only exists for function 8; function {fc} with a "
                    "subfunction never matches"
                )
            return ModbusMatch(unit=unit, function=fc, subfunction=sub_value, text=text.strip()), (
                warnings
            )
        if sub_value is not None:
            raise KeywordError("subfunction needs a numeric function")
        negated = word.startswith("!")
        name = word.lstrip("!").lower()
        if name not in CATEGORIES:
            raise KeywordError(
                f"unknown function category {word!r} (assigned, unassigned, public, user, "
                "reserved, all; 'function !N' is not accepted)"
            )
        bits = CATEGORIES[name]
        if negated:
            bits = CATEGORIES["all"] & ~bits
        return ModbusMatch(unit=unit, category=bits, text=text.strip()), warnings
    m = _ACCESS_RE.match(rest)
    if m:
        kind, table = m.group(1).lower(), (m.group(2) or "").lower()
        if kind == "write" and table in ("discretes", "input"):
            raise KeywordError(f"'write {table}': {table} are read-only")
        access = READ if kind == "read" else WRITE
        if table:
            access |= TABLES[table]
        address = value = None
        if m.group(3) is not None:
            address = _range(m.group(3), m.group(4), "address")
        if m.group(5) is not None:
            if address is None or address.op != "=":
                raise KeywordError("value needs an exact address")
            if access == READ:
                raise KeywordError("value cannot be used with a bare 'access read'")
            value = _range(m.group(5), m.group(6), "value")
        return ModbusMatch(
            unit=unit, access=access, address=address, value=value, text=text.strip()
        ), warnings
    raise KeywordError(f"cannot parse modbus option {text.strip()!r}")


# --------------------------------------------------------------------------- matching
def address_range(fc: int, fields: dict[str, Any]) -> tuple[int, int] | None:
    """The 1-based [first, last] addresses a message touches (FC 23: its write range)."""
    address = fields.get("address")
    if address is None:
        return None
    if fc in (5, 6, 22):
        return (address + 1, address + 1)
    quantity = fields.get("quantity")
    if quantity is None or quantity == 0 or address + quantity > 65535:
        return None
    return (address + 1, address + quantity)


def _address_matches(rng: IntCompare, s: int, e: int) -> bool:
    op = rng.op
    if op == "=":
        return s <= rng.value <= e
    if op == "<":
        return rng.value > s
    if op == ">":
        return rng.value < e
    return rng.value < e and s < rng.high  # A<>B


def value_at(fc: int, fields: dict[str, Any], address: int, start: int) -> int | None:
    """The value written at 1-based ``address`` (None when the message has none there)."""
    values = fields.get("values")
    if not values:
        return None
    if fc == 5:
        return 1 if values[0] else 0
    if fc == 6:
        return int(values[0])
    if fc in (15, 16, 23):
        index = address - start
        if 0 <= index < len(values):
            return int(values[index])
    return None


def match(m: ModbusMatch, msg: ModbusMessage) -> bool:
    """Whether one ``modbus:`` option matches a message (spec 3.2, evaluation order)."""
    if m.unit is not None and not m.unit(msg.unit):
        return False
    fc = msg.fc
    fields = msg.fields
    if m.access is not None:
        bits = ACCESS_BY_FC.get(fc, 0)
        if bits & m.access != m.access:
            return False
        if m.address is None:
            return True
        rng = address_range(fc, fields)
        if rng is None or not _address_matches(m.address, rng[0], rng[1]):
            return False
        if m.value is None:
            return True
        if fc == 22:
            return False
        value = value_at(fc, fields, m.address.value, rng[0])
        return value is not None and m.value(value)
    if m.category is not None:
        return bool(category(fc, fields) & m.category)
    if m.function is not None:
        if fc != m.function:
            return False
        if m.subfunction is not None:
            return fc == 8 and fields.get("sub_function") == m.subfunction
        return True
    return True


def possible_functions(m: ModbusMatch) -> frozenset[int] | None:
    """Function codes a ModbusMatch can match (None: any), for the engine's prefilter."""
    if m.access is not None:
        return frozenset(fc for fc, bits in ACCESS_BY_FC.items() if bits & m.access == m.access)
    if m.function is not None:
        return frozenset({m.function})
    return None
