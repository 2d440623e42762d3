"""The route from the Modbus decoder to the detectors that runs once per message: a Modbus
connection's dispatch. The pipeline (``engine.py``) builds one per connection; it is compiled
with the decoder that calls it (docs/native.md). (A flow direction's stream gate is a
``sentinel.decode.flow.FilteredHook``, checked by the flow table itself.)"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sentinel.events import ModbusMessage

HandlerTable = dict[str, tuple[Callable[..., Any], ...]]


class ConnectionDispatch:
    """The Modbus dispatch of one connection: each message's record to the ``writers``, the
    message to the handlers its direction's ``table`` gives for its function (asked at the
    direction's first message), or to every handler after a protocol event.

    A class rather than a closure: its state is in the object the decoder calls, where a
    closure keeps it in a second object (its environment) to reach per message, one more
    memory location that is cold by the time its connection's next message comes."""

    def __init__(
        self,
        record: Callable[[ModbusMessage], dict[str, Any]],
        writers: list[Callable[[dict[str, Any]], None]],
        handlers: tuple[Callable[[ModbusMessage], Any], ...],
        table: Callable[[ModbusMessage], HandlerTable],
        after_event: list[bool],
        raise_: Callable[[Iterable[Any]], None],
    ) -> None:
        self.record = record
        self.writers = writers
        self.handlers = handlers
        self.table = table
        self.after_event = after_event
        self.raise_ = raise_
        self.to_server: HandlerTable | None = None  # the directions' tables, when first asked
        self.to_client: HandlerTable | None = None

    def __call__(self, msg: ModbusMessage) -> None:
        rec = self.record(msg)
        for write in self.writers:
            write(rec)
        # A tuple, typed: the loop below indexes it (no iterator object per message).
        chosen: tuple[Callable[..., Any], ...]
        after_event = self.after_event
        if after_event[0]:
            after_event[0] = False
            chosen = self.handlers
        elif msg.is_orig:
            t = self.to_server
            if t is None:
                t = self.to_server = self.table(msg)
            chosen = t[msg.func]
        else:
            t = self.to_client
            if t is None:
                t = self.to_client = self.table(msg)
            chosen = t[msg.func]
        for handler in chosen:
            findings = handler(msg)
            if findings:
                self.raise_(findings)
