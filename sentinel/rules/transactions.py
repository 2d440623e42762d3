"""Modbus transactions: requests paired with their responses, numbered per flow.

The decoder pairs a response with its request by transaction id (``ModbusMessage.latency``
is set when it did); ``TransactionTracker`` mirrors that pairing to give each transaction a
per-flow number (from 1, as Suricata's EVE ``modbus.id``), the request's fields when the
response arrives, and one completed transaction to log. State is bounded: at most
``max_open`` open requests per flow (the oldest is completed request-only, like the decoder's
own limit) and at most ``max_flows`` flows; a flow's state goes when the flow ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sentinel.events import ConnId, ModbusMessage


@dataclass(slots=True)
class ModbusTransaction:
    id: int
    uid: str
    conn: ConnId
    request: ModbusMessage | None = None
    request_events: tuple[str, ...] = ()
    response: ModbusMessage | None = None
    response_events: tuple[str, ...] = ()

    @property
    def last(self) -> ModbusMessage:
        msg = self.response or self.request
        assert msg is not None
        return msg


class _FlowTx:
    __slots__ = ("by_id", "next_id", "open")

    def __init__(self) -> None:
        self.next_id = 1
        self.open: dict[int, list[ModbusTransaction]] = {}  # tid -> open, oldest first
        self.by_id: dict[int, ModbusTransaction] = {}  # every open one, oldest first

    def take(self, tx: ModbusTransaction) -> None:
        del self.by_id[tx.id]
        assert tx.request is not None
        same = self.open[tx.request.tid]
        same.remove(tx)
        if not same:
            del self.open[tx.request.tid]


class TransactionTracker:
    """Feed every Modbus message in capture order; ``on_done`` receives each transaction once,
    when its response arrives or when it can no longer get one.

    A response completes the *first* open request with the same transaction id, unit and
    function (Suricata's pairing), so a client that reuses a transaction id for pipelined
    requests still gets each response paired with its own request."""

    def __init__(
        self,
        on_done: Callable[[ModbusTransaction], None] | None = None,
        max_open: int = 500,
        max_flows: int = 65536,
    ) -> None:
        self.on_done = on_done
        self.max_open = max_open
        self.max_flows = max_flows
        self._flows: dict[str, _FlowTx] = {}

    def _done(self, tx: ModbusTransaction) -> None:
        if self.on_done is not None:
            self.on_done(tx)

    def message(self, msg: ModbusMessage, events: tuple[str, ...] = ()) -> ModbusTransaction:
        flow = self._flows.get(msg.uid)
        if flow is None:
            if len(self._flows) >= self.max_flows:
                self.flow_ended(next(iter(self._flows)))
            flow = self._flows[msg.uid] = _FlowTx()
        if msg.is_orig:
            if len(flow.by_id) >= self.max_open:
                oldest = next(iter(flow.by_id.values()))
                flow.take(oldest)
                self._done(oldest)
            tx = ModbusTransaction(flow.next_id, msg.uid, msg.conn, msg, events)
            flow.next_id += 1
            flow.open.setdefault(msg.tid, []).append(tx)
            flow.by_id[tx.id] = tx
            return tx
        opened = self._match(flow, msg)
        if opened is None:
            tx = ModbusTransaction(flow.next_id, msg.uid, msg.conn)
            flow.next_id += 1
        else:
            tx = opened
            flow.take(tx)
        tx.response, tx.response_events = msg, events
        self._done(tx)
        return tx

    @staticmethod
    def _match(flow: _FlowTx, msg: ModbusMessage) -> ModbusTransaction | None:
        for tx in flow.open.get(msg.tid, ()):
            req = tx.request
            if req is not None and req.fc == msg.fc and req.unit == msg.unit:
                return tx
        return None

    def request_of(self, msg: ModbusMessage) -> ModbusTransaction | None:
        """The open transaction a response is about to complete (before ``message``)."""
        flow = self._flows.get(msg.uid)
        if flow is None or msg.is_orig:
            return None
        return self._match(flow, msg)

    def flow_ended(self, uid: str) -> None:
        flow = self._flows.pop(uid, None)
        if flow is not None:
            for tx in flow.by_id.values():
                self._done(tx)

    def flush(self) -> None:
        for uid in list(self._flows):
            self.flow_ended(uid)
