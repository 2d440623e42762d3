"""The route from the Modbus decoder to the detectors that runs once per message: a Modbus
connection's dispatch. The pipeline (``engine.py``) builds one per connection; it is compiled
with the decoder that calls it (docs/native.md). (A flow direction's stream gate is a
``sentinel.decode.flow.FilteredHook``, checked by the flow table itself.)"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sentinel.events import ModbusMessage

HandlerTable = dict[str, tuple[Callable[..., Any], ...]]


def connection_dispatch(
    record: Callable[[ModbusMessage], dict[str, Any]],
    writers: list[Callable[[dict[str, Any]], None]],
    handlers: tuple[Callable[[ModbusMessage], Any], ...],
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
        # A tuple, typed: the loop below indexes it (no iterator object per message).
        chosen: tuple[Callable[..., Any], ...]
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
