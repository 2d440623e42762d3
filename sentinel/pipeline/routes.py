"""The routes from the decoders to the detectors that run once per chunk or per Modbus
message: a flow direction's stream gate and a Modbus connection's dispatch. The pipeline
(``engine.py``) builds them once per flow direction or connection; they are compiled with the
decoders that call them (docs/native.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sentinel.decode.flow import Flow, StreamHook
from sentinel.events import ModbusMessage
from sentinel.pipeline.detector import GateAlternative

HandlerTable = dict[str, tuple[Callable[..., Any], ...]]


def gated_stream_hook(event: StreamHook, alternatives: list[GateAlternative]) -> StreamHook:
    """The hook of a flow direction whose every stream detector has a gate (``StreamGate``):
    ``event`` for a chunk that passes one of ``alternatives``, nothing for the others."""
    if len(alternatives) > 1:
        alts = tuple(alternatives)

        def gated(flow: Flow, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
            n = len(data)
            for size, conditions in alts:
                if n >= size:
                    for at, values in conditions:
                        if data[at] not in values:
                            break
                    else:
                        event(flow, is_orig, data, ts, frame)
                        return

        return gated
    ((size, conditions),) = alternatives
    if not conditions:

        def sized(flow: Flow, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
            if len(data) >= size:
                event(flow, is_orig, data, ts, frame)

        return sized
    (at, values), rest = conditions[0], conditions[1:]

    def one(flow: Flow, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
        # size first: every condition's offset is below it
        if len(data) >= size and data[at] in values:
            for at2, values2 in rest:
                if data[at2] not in values2:
                    return
            event(flow, is_orig, data, ts, frame)

    return one


def connection_dispatch(
    record: Callable[[ModbusMessage], dict[str, Any]],
    writers: list[Callable[[dict[str, Any]], None]],
    handlers: list[Callable[[ModbusMessage], Any]],
    table: Callable[[ModbusMessage], HandlerTable],
    after_event: list[bool],
    raise_: Callable[[Iterable[Any]], None],
) -> Callable[[ModbusMessage], None]:
    """The Modbus dispatch of one connection: each message's record to the ``writers``, the
    message to the handlers its direction's ``table`` gives for its function (asked at the
    direction's first message), or to every handler after a protocol event."""
    by_direction: list[HandlerTable | None] = [None, None]

    def dispatch(msg: ModbusMessage) -> None:
        rec = record(msg)
        for write in writers:
            write(rec)
        chosen: Iterable[Callable[..., Any]]
        if after_event[0]:
            after_event[0] = False
            chosen = handlers
        else:
            direction = 1 if msg.is_orig else 0
            t = by_direction[direction]
            if t is None:
                t = by_direction[direction] = table(msg)
            chosen = t[msg.func]
        for handler in chosen:
            findings = handler(msg)
            if findings:
                raise_(findings)

    return dispatch
