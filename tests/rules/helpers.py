"""Helpers for rule tests: parse one rule from text, match payloads, build Modbus messages."""

from __future__ import annotations

from typing import Any

from sentinel.errors import Location
from sentinel.events import ConnId, ModbusMessage
from sentinel.rules.addresses import Variables
from sentinel.rules.model import Rule
from sentinel.rules.parser import ParseContext, parse_classification, parse_rule
from sentinel.rules.payload import PayloadMatcher

CLASSES, _ = parse_classification(
    "config classification: attempted-recon,Attempted Information Leak,2\n"
    "config classification: protocol-command-decode,Generic Protocol Command Decode,3\n",
    "test.config",
)
CONN = ConnId("10.0.0.1", 40000, "10.0.0.2", 502)


def rules(
    options: str, header: str = "alert tcp any any -> any any", variables: Variables | None = None
) -> list[Rule]:
    """The Rules of ``header (options)`` (two for ``<>``); a sid is added when missing."""
    if "sid:" not in options.lower():
        options = options.rstrip() + " sid:1;"
    ctx = ParseContext(variables or Variables(), CLASSES)
    loaded, _warnings = parse_rule(f"{header} ({options})", Location("t.rules", 1), ctx)
    return loaded


def rule(
    options: str, header: str = "alert tcp any any -> any any", variables: Variables | None = None
) -> Rule:
    """The (first) Rule of ``header (options)``."""
    return rules(options, header, variables)[0]


def matches(options: str, payload: bytes) -> bool:
    return PayloadMatcher(rule(options).payload).match(payload)


def msg(
    fc: int,
    fields: dict[str, Any] | None = None,
    *,
    is_orig: bool = True,
    unit: int = 1,
    func: str | None = None,
    tid: int = 1,
    latency: float | None = None,
    exception: str | None = None,
) -> ModbusMessage:
    from sentinel.decode.modbus_codes import FUNC_BY_RAW

    return ModbusMessage(
        1.0,
        "C1",
        CONN,
        is_orig,
        tid,
        0,
        unit,
        fc,
        func or FUNC_BY_RAW[fc],
        exception,
        6,
        1,
        fields or {},
        latency,
    )
