"""The modbus: keyword (spec section 3.1 / 3.2): every syntax form, range semantics with
1-based addresses, access bits, categories and values; and the derived Suricata events."""

from __future__ import annotations

import pytest

from sentinel.rules import modbus as mb
from sentinel.rules.modbus import match, parse_modbus
from sentinel.rules.payload import KeywordError
from tests.rules.helpers import msg


def m(text: str) -> mb.ModbusMatch:
    return parse_modbus(text)[0]


# --------------------------------------------------------------------------- syntax
@pytest.mark.parametrize(
    "text",
    [
        "function 1", "function   255", "function 8, subfunction 4", "function 8,subfunction 4",
        "function assigned", "function !assigned", "function unassigned", "function public",
        "function user", "function reserved", "function all", "access read",
        "access write", "access read coils", "access read discretes", "access read input",
        "access read holding", "access write coils", "access write holding",
        "access read holding, address 100", "access write holding, address <100",
        "access write holding, address >100", "access read coils, address 10<>20",
        "access write holding, address 100, value 5", "access write, address 100, value <5",
        "access write coils, address 7, value 1<>3", "unit 1", "unit <10", "unit >3",
        "unit 2<>9", "unit 10, function 3", "unit 10, access read holding, address 5",
        "  function 3  ",
    ],
)  # fmt: skip
def test_accepted_forms(text: str) -> None:
    parse_modbus(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("function 0", "1-255"),
        ("function 256", "1-255"),
        ("function !3", "unknown function category"),
        ("function sideways", "unknown function category"),
        ("function assigned, subfunction 1", "numeric function"),
        ("access write discretes", "read-only"),
        ("access write input", "read-only"),
        ("access read, address 1, value 2", "bare 'access read'"),
        ("access write holding, address 1<>5, value 2", "exact address"),
        ("access write holding, address <5, value 2", "exact address"),
        ("access delete", "cannot parse"),
        ("function 3, unit 1", "cannot parse"),
        ("unit 70000", "16-bit"),
        ("access read, address 5<>5", "empty range"),
        ("unit x", "bad unit"),
    ],
)
def test_rejected_forms(text: str, reason: str) -> None:
    with pytest.raises(KeywordError, match=reason):
        parse_modbus(text)


def test_subfunction_on_other_function_warns() -> None:
    _match, warnings = parse_modbus("function 3, subfunction 1")
    assert warnings and "never matches" in warnings[0]


# --------------------------------------------------------------------------- ranges
READ_INPUT_8_96 = msg(4, {"address": 8, "quantity": 96})  # 1-based range [9, 104]


@pytest.mark.parametrize(
    ("address", "expected"),
    [("9", True), ("104", True), (">103", True), ("<10", True), ("<9", False),
     (">104", False), ("8", False), ("105", False), ("100<>200", True), ("104<>200", False),
     ("1<>10", True), ("1<>9", False)],
)  # fmt: skip
def test_address_range_semantics_sawp_examples(address: str, expected: bool) -> None:
    assert match(m(f"access read input, address {address}"), READ_INPUT_8_96) is expected


def test_single_writes_are_one_based() -> None:
    write = msg(6, {"address": 99, "values": [7]})
    assert match(m("access write holding, address 100"), write)
    assert not match(m("access write holding, address 99"), write)
    assert match(m("access write holding, address 100, value 7"), write)
    assert match(m("access write holding, address 100, value 6<>8"), write)
    assert not match(m("access write holding, address 100, value >7"), write)


def test_quantity_zero_or_overflow_never_matches_an_address() -> None:
    assert not match(m("access read holding, address 1"), msg(3, {"address": 0, "quantity": 0}))
    assert not match(
        m("access read holding, address >1"), msg(3, {"address": 65535, "quantity": 2})
    )


@pytest.mark.parametrize(
    ("fc", "fields", "address", "value", "expected"),
    [
        (5, {"address": 0, "values": [True]}, 1, "1", True),
        (5, {"address": 0, "values": [False]}, 1, "0", True),
        (5, {"address": 0, "values": [True]}, 1, "0", False),
        (16, {"address": 9, "quantity": 3, "values": [1, 2, 3]}, 11, "2", True),
        (16, {"address": 9, "quantity": 3, "values": [1, 2, 3]}, 12, ">2", True),
        (16, {"address": 9, "quantity": 3, "values": [1, 2, 3]}, 13, "3", False),
        # FC 15: coils LSB first (divergence from Suricata's bit order, documented)
        (15, {"address": 0, "quantity": 3, "values": [True, False, True]}, 3, "1", True),
        (15, {"address": 0, "quantity": 3, "values": [True, False, True]}, 2, "1", False),
        (22, {"address": 0, "and_mask": 1, "or_mask": 2}, 1, "0", False),
    ],
)
def test_values(fc: int, fields: dict, address: int, value: str, expected: bool) -> None:
    table = "coils" if fc in (5, 15) else "holding"
    clause = m(f"access write {table}, address {address}, value {value}")
    assert match(clause, msg(fc, fields)) is expected


def test_fc23_uses_its_write_range() -> None:
    rw = msg(
        23, {"read_address": 0, "read_quantity": 10, "address": 99, "quantity": 2, "values": [5, 6]}
    )
    assert match(m("access read holding, address 100"), rw)  # quirk: the write range
    assert not match(m("access read holding, address 5"), rw)
    assert match(m("access write holding, address 101, value 6"), rw)


# --------------------------------------------------------------------------- access/functions
@pytest.mark.parametrize(
    ("clause", "fcs"),
    [
        ("access read", {1, 2, 3, 4, 23}),
        ("access write", {5, 6, 15, 16, 22, 23}),
        ("access read coils", {1}),
        ("access read discretes", {2}),
        ("access read holding", {3, 23}),
        ("access read input", {4}),
        ("access write coils", {5, 15}),
        ("access write holding", {6, 16, 22, 23}),
    ],
)
def test_access_bits(clause: str, fcs: set[int]) -> None:
    matched = {fc for fc in range(1, 128) if match(m(clause), msg(fc))}
    assert matched == fcs
    for fc in (7, 8, 11, 12, 17, 20, 21, 24, 43):
        assert not match(m(clause), msg(fc))


def test_function_and_subfunction() -> None:
    assert match(m("function 3"), msg(3))
    assert match(
        m("function 3"),
        msg(3, {"exception_code": 2}, is_orig=False, func="READ_HOLDING_REGISTERS_EXCEPTION"),
    )
    assert not match(m("function 4"), msg(3))
    assert match(m("function 100"), msg(100))
    assert not match(m("function 100"), msg(101))  # raw codes (Suricata: every unknown code)
    diag = msg(8, {"sub_function": 4})
    assert match(m("function 8, subfunction 4"), diag)
    assert not match(m("function 8, subfunction 1"), diag)
    assert match(m("function 8"), diag)


@pytest.mark.parametrize(
    ("fc", "fields", "category"),
    [
        (3, {}, "assigned"), (9, {}, "assigned"), (24, {}, "assigned"), (43, {}, "assigned"),
        (8, {"sub_function": 4}, "assigned"), (8, {"sub_function": 21}, "assigned"),
        (8, {"sub_function": 5}, "reserved"), (8, {"sub_function": 22}, "reserved"),
        (43, {"mei_type": 14}, "assigned"), (43, {"mei_type": 13}, "assigned"),
        (43, {"mei_type": 1}, "reserved"), (41, {}, "reserved"), (42, {}, "reserved"),
        (90, {}, "reserved"), (91, {}, "reserved"), (125, {}, "reserved"),
        (127, {}, "reserved"), (65, {}, "user"), (72, {}, "user"), (100, {}, "user"),
        (110, {}, "user"), (25, {}, "unassigned"), (64, {}, "unassigned"),
        (111, {}, "unassigned"), (0, {}, None),
    ],
)  # fmt: skip
def test_categories(fc: int, fields: dict, category: str | None) -> None:
    cats = {
        name
        for name in ("assigned", "unassigned", "user", "reserved")
        if match(m(f"function {name}"), msg(fc, fields))
    }
    assert cats == ({category} if category else set())
    assert match(m("function all"), msg(fc, fields)) is (category is not None)
    assert match(m("function public"), msg(fc, fields)) is (category in ("assigned", "unassigned"))
    if category:
        assert not match(m(f"function !{category}"), msg(fc, fields))


def test_unit_comes_first_and_ranges_apply() -> None:
    assert match(m("unit 5"), msg(3, unit=5))
    assert not match(m("unit 5"), msg(3, unit=6))
    assert match(m("unit 2<>9, function 3"), msg(3, unit=8))
    assert not match(m("unit 2<>9, function 3"), msg(3, unit=9))
    assert not match(m("unit <5, function 3"), msg(4, unit=1))


# --------------------------------------------------------------------------- derived events
def test_derived_events() -> None:
    assert mb.derived_events(msg(0), None) == ["invalid_function_code"]
    assert mb.derived_events(msg(3, func="READ_HOLDING_REGISTERS_EXCEPTION"), None) == [
        "invalid_function_code"
    ]
    assert mb.derived_events(msg(3), None) == []

    def exc(fc: int, code: int) -> list[str]:
        return mb.derived_events(
            msg(fc, {"exception_code": code}, is_orig=False, exception="X"), None
        )

    assert exc(3, 2) == []
    assert exc(3, 9) == ["invalid_exception_code"]
    assert exc(7, 2) == ["invalid_exception_code"]
    assert exc(7, 3) == ["invalid_exception_code"]
    assert exc(8, 3) == []
    assert exc(3, 8) == ["invalid_exception_code"]
    assert exc(20, 8) == []
    resp = msg(6, {"address": 4, "values": [2]}, is_orig=False)
    assert mb.derived_events(resp, {"address": 4, "values": [2]}) == []
    assert mb.derived_events(resp, {"address": 5, "values": [2]}) == ["value_mismatch"]
    assert mb.derived_events(resp, None) == []
