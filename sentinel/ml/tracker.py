"""Streaming bookkeeping shared by training and scoring: channels, commands, windows.

``Tracker`` consumes the pipeline's events in packet-time order (Modbus messages, anomalies,
flow ends, ticks) and keeps, per *channel* (client, server, unit id):

- the current *bucket* of raw window counters (``sentinel.ml.window``) on a grid of
  ``hop`` seconds shared by all channels, and the last buckets that make a *window*;
- per *command* (see ``command``): when it was last sent (inter-arrival times) and the values
  its last response carried (to see which registers changed, and by how much);
- per connection: the requests waiting for their response (to know which command a
  response answers) and the previous command (for the sequence model).

A bucket's counters are final once it closes (``_advance``): the hot path leaves the counts
of inter-arrival times, latencies and read values to the close (``Bucket.counters``), which
adds the requests and responses to what it subtracted.

Subclasses decide what happens with it: ``sentinel.ml.baseline.Learner`` learns a baseline,
``sentinel.ml.engine.Engine`` checks traffic against one. Both see exactly the same counters,
so a window means the same thing in training and in scoring.

Everything is bounded: channels (``max_channels``), connections, pending requests per
connection and commands per channel; beyond the bounds new items are not tracked (counted in
``stats``), nothing grows without end.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final

from mypy_extensions import mypyc_attr

from sentinel.events import Anomaly, ModbusMessage
from sentinel.findings import Finding
from sentinel.ml.rules import READ_FCS, WRITE_FCS
from sentinel.ml.window import Bucket, combine

Command = tuple[int, Any, Any]
ChannelKey = tuple[str, str, int]

MAX_PENDING: Final = 256  # open requests remembered per connection
MAX_COMMANDS: Final = 1024  # distinct commands remembered per channel
MAX_CONNS_FACTOR: Final = 4  # connections tracked: this many times max_channels


def command(fc: int, fields: dict[str, Any]) -> Command:
    """What a request asks, without its data: the unit of the sequence model.

    Reads and writes are (fc, address, quantity), FC 5/6 (fc, address, None); diagnostics
    (8, sub-function, None); encapsulated interface (43, MEI type, read code); other functions
    (fc, None, None). Written values are not part of it: they are checked against the
    register's envelope instead."""
    if fc in READ_FCS or fc in (15, 16):
        return (fc, fields.get("address"), fields.get("quantity"))
    if fc in (5, 6, 22):
        return (fc, fields.get("address"), None)
    if fc == 23:
        return (fc, fields.get("read_address"), fields.get("address"))
    if fc == 8:
        return (fc, fields.get("sub_function"), None)
    if fc == 43:
        return (fc, fields.get("mei_type"), fields.get("read_device_id_code"))
    return (fc, None, None)


def span(cmd: Command, fields: dict[str, Any]) -> tuple[Any, Any]:
    """The addresses a request touches, [lo, end) (None, None: no address)."""
    address = fields.get("address")
    if address is None:
        return None, None
    quantity = cmd[2]
    return address, address + (quantity if isinstance(quantity, int) and cmd[0] != 23 else 1)


# Functions whose ``address`` field is part of their command (``command``): their span is a
# property of the command slot; other requests compute it from their fields every time.
_SPAN_IN_COMMAND = frozenset(READ_FCS) | {5, 6, 15, 16, 22, 23}
assert set(READ_FCS) == {1, 2, 3, 4}  # the hot paths test ``0 < fc < 5``
NO_TID: Final = -1  # ``Conn.last_tid`` when no request is open (ids are 0-65535)


class Slot:
    """What a channel keeps of one of its commands (a native class when compiled: the hot
    path reads and sets its fields without boxing them)."""

    def __init__(self, cmd: Command, fields: dict[str, Any]) -> None:
        self.cmd = cmd
        self.fc: int = cmd[0]
        self.fields = dict(fields)  # of the request it was made from
        self.sent = False  # whether a request was counted (then ``last`` is when)
        self.last = 0.0
        self.vals: list[Any] | None = None  # the values of its last read
        self.read_at = 0.0  # when read
        self.next: Slot | None = None  # the slot verified to follow it (``Tracker.verify``)
        # Its address span [lo, end) if the command fixes it (``_SPAN_IN_COMMAND``), and the
        # last bucket the span went into (once per bucket); other commands compute it from
        # each request's fields.
        self.fixed_span = cmd[0] in _SPAN_IN_COMMAND
        self.lo: Any = None
        self.end: Any = None
        if self.fixed_span:
            self.lo, self.end = span(cmd, fields)
        self.bucket: Bucket | None = None


# A connection's previous slot before its first request (or after an untracked command): no
# slot follows it.
_NO_SLOT = Slot((-1, None, None), {})


def command_text(cmd: Command) -> str:
    """``(3, 0, 16)`` -> ``"3:0:16"`` (``-`` for None); the key used in model files."""
    return ":".join("-" if v is None else str(v) for v in cmd)


def parse_command(text: str) -> Command:
    parts = [None if p == "-" else int(p) for p in text.split(":")]
    if len(parts) != 3 or parts[0] is None:
        raise ValueError(f"not a command: {text!r}")
    return (parts[0], parts[1], parts[2])


class ChannelState:
    """Runtime state of one channel (shared by its connections)."""

    __slots__ = (
        "bucket",
        "debounce",
        "episode",
        "extra",
        "key",
        "last_req",
        "lat_bits",
        "lat_episode",
        "lat_k",
        "lat_mask",
        "lat_thr",
        "ring",
        "slots",
        "verified",
        "waiting",
        "warm",
        "watch",
        "windowed",
    )

    def __init__(self, key: ChannelKey, nbuckets: int, windowed: bool) -> None:
        self.key = key
        self.bucket = Bucket()
        self.ring: deque[list[float]] = deque(maxlen=nbuckets)
        self.warm = 0  # buckets closed since the channel (re)activated
        self.windowed = windowed
        # a windowed channel not in ``Tracker.active``: its next request activates it
        self.waiting = windowed
        self.last_req = 0.0
        self.slots: dict[Command, Slot] = {}
        self.debounce: deque[bool] = deque()
        self.episode = False
        # Fast paths (set by the subclass): ``verified`` lets requests skip the ``request``
        # hook when ``verify`` marked their (previous command, command) transition; commands
        # whose changed values need the ``values_changed`` hook (None: all); the latency
        # check: slow above lat_thr, alert at lat_k slow among the last bits of lat_mask
        # (0: no check).
        self.verified = False
        self.watch: set[Command] | None = None
        self.lat_thr = 0.0
        self.lat_mask = 0
        self.lat_k = 0
        self.lat_bits = 0
        self.lat_episode = False
        self.extra: Any = None  # the subclass's per-channel data


class Conn:
    """Runtime state of one (connection, unit id)."""

    __slots__ = (
        "ch",
        "conn",
        "last_slot",
        "last_tid",
        "pending",
        "prev_slot",
        "slot",
        "uid",
        "unit",
        "untracked_prev",
    )

    def __init__(self, ch: ChannelState, uid: str, conn: Any, unit: int = 0) -> None:
        self.ch = ch
        self.uid = uid
        self.unit = unit
        self.conn = conn
        # The last request's transaction id and command slot (a poller waits for each
        # answer: no dictionary needed); older open requests wait in ``pending``.
        self.last_tid = NO_TID
        self.last_slot: Slot | None = None
        self.pending: dict[int, Slot | None] = {}  # transaction id -> command slot
        # the previous request's slot (writes aside); _NO_SLOT: none, or an untracked command
        self.prev_slot: Slot = _NO_SLOT
        self.untracked_prev: Command | None = None
        self.slot: Slot | None = None  # the current request's, for the request hook

    @property
    def prev(self) -> Command | None:
        """The previous request's command (writes aside; None: the connection's first)."""
        if self.prev_slot is _NO_SLOT:
            return self.untracked_prev
        return self.prev_slot.cmd


# subclassed by interpreted code (the learner, the calibration engine) when compiled
@mypyc_attr(allow_interpreted_subclasses=True)
class Tracker:
    """Base of ``Learner`` and ``Engine`` (see the module docstring)."""

    def __init__(
        self,
        window: float,
        hop: float,
        max_channels: int = 4096,
        idle: float | None = None,
        call_response: bool = False,
    ) -> None:
        self.window = window
        self.hop = hop
        self.nbuckets = max(1, round(window / hop))
        # a channel that sent nothing for this long stops producing windows until it does
        self.idle = idle if idle is not None else max(3 * window, 30.0)
        self.max_channels = max_channels
        self.channels: dict[ChannelKey, ChannelState] = {}
        self.conns: dict[str, Conn] = {}  # uid -> its first unit's state
        self.conns_units: dict[tuple[str, int], Conn] = {}  # (uid, unit) -> state
        self.active: dict[ChannelKey, ChannelState] = {}
        self.hop_end = 0.0
        self.clock = 0.0
        # whether ``response`` is called for every response (the learner needs them all)
        self.call_response = call_response
        self.stats: dict[str, int] = {
            "channels_untracked": 0,
            "pending_dropped": 0,
            "commands_untracked": 0,
        }

    # ------------------------------------------------------------------ subclass hooks
    def windowed(self, key: ChannelKey) -> bool:
        """Whether a channel produces windows."""
        return True

    def new_channel(self, ch: ChannelState, msg: ModbusMessage) -> list[Finding] | None:
        return None

    def request(self, c: Conn, msg: ModbusMessage, cmd: Command, ts: float) -> list[Finding] | None:
        return None

    def verify(self, c: Conn) -> None:
        """The current request's transition checked out: the next time this command follows
        the same previous command on a channel with ``verified`` set, skip the hook (the hook
        must not have found anything nor changed any state for this transition). A command
        remembers one verified successor: the one of a poller's cycle."""
        if c.slot is not None and c.prev_slot is not _NO_SLOT:
            c.prev_slot.next = c.slot

    # Called for every response only if ``call_response``.
    def response(
        self, c: Conn, msg: ModbusMessage, cmd: Command | None, ts: float
    ) -> list[Finding] | None:
        return None

    def slow_responses(self, c: Conn, msg: ModbusMessage, bits: int) -> list[Finding] | None:
        """``lat_k`` of the last responses of a channel were slow (once per episode)."""
        return None

    def values_changed(
        self,
        c: Conn,
        msg: ModbusMessage,
        cmd: Command,
        vals: list[Any],
        prev: list[Any] | None,
        dt: float,
    ) -> list[Finding] | None:
        """Values of a read differ from the previous read of the same command on the channel
        (``prev`` None: the first read; otherwise only for commands in ``watch``)."""
        return None

    def windows(self, closed: list[tuple[ChannelState, list[float]]], t_end: float) -> Any:
        """The windows that closed at ``t_end`` (one per active windowed channel)."""
        return None

    # ------------------------------------------------------------------ events
    def _connect(self, msg: ModbusMessage) -> tuple[Conn | None, list[Finding] | None]:
        """The connection state of a message not seen before (and its channel's)."""
        conn = msg.conn
        key = (conn.orig_h, conn.resp_h, msg.unit)
        found = None
        ch = self.channels.get(key)
        if ch is None:
            if len(self.channels) >= self.max_channels:
                self.stats["channels_untracked"] += 1
                return None, None
            ch = ChannelState(key, self.nbuckets, self.windowed(key))
            self.channels[key] = ch
            found = self.new_channel(ch, msg)
        if len(self.conns_units) >= MAX_CONNS_FACTOR * self.max_channels:
            self.conns.clear()  # connections are cheap to rebuild; channels keep state
            self.conns_units.clear()
        c = Conn(ch, msg.uid, conn, msg.unit)
        if msg.uid not in self.conns:  # a connection's first unit id: found by uid alone
            self.conns[msg.uid] = c
        self.conns_units[(msg.uid, msg.unit)] = c
        return c, found

    def _new_slot(self, ch: ChannelState, cmd: Command, fields: dict[str, Any]) -> Slot | None:
        """A command's first request on a channel: its slot (None beyond ``MAX_COMMANDS``)."""
        if len(ch.slots) < MAX_COMMANDS:
            slot = ch.slots[cmd] = Slot(cmd, fields)
            return slot
        self.stats["commands_untracked"] += 1
        return None

    def modbus(self, msg: ModbusMessage) -> list[Finding] | None:
        # The hot path: runs for every Modbus message; keep it lean (see docs/ml.md, cost).
        # Inline: the steady traffic of a verified poller (a read request whose command is
        # the verified successor of the connection's previous one; a read response with
        # values and a latency). Everything else: ``_request`` and ``_response``.
        # One tuple unpack is much cheaper than a dozen NamedTuple attribute look-ups.
        ts, uid, _conn, is_orig, tid, _pid, unit, fc, _func, exc, _len, _frame, fields, lat = msg
        if ts >= self.hop_end:
            return self._first_of_hop(msg)
        c = self.conns.get(uid)
        if c is None or c.unit != unit:
            c = self.conns_units.get((uid, unit))
            if c is None:
                return self._first_of_connection(msg)
        ch = c.ch
        b = ch.bucket
        if is_orig:
            b.n_req += 1.0
            ch.last_req = ts
            if ch.waiting:
                self._activate(ch)
            # The verified successor of the previous command: this request's command if the
            # function and fields are those its slot was made from (``command`` depends on
            # nothing else). Its transition needs no check, and it was sent before (its slot
            # got a time before it was verified).
            slot = c.prev_slot.next
            if slot is not None and slot.fc == fc and slot.fields == fields:
                ia = ts - slot.last
                b.sum_ia += ia
                b.sum_ia2 += ia * ia
                if ia > b.max_ia:
                    b.max_ia = ia
                slot.last = ts
                if slot.bucket is not b:
                    self._add_span(slot, fields, b)
                if c.last_tid != NO_TID:
                    self._keep_open(c)
                c.last_tid = tid
                c.last_slot = slot
                c.prev_slot = slot
                return None
            return self._request(c, msg, ts, tid, fc, fields, b)
        else:
            if tid == c.last_tid:
                slot = c.last_slot
                c.last_tid = NO_TID
            else:
                slot = c.pending.pop(tid, None)
            b.n_resp += 1.0
            if lat is None or exc is not None or slot is None or self.call_response:
                return self._response(c, msg, slot, ts, fc, exc, fields, lat, b)
            found = None
            b.sum_lat += lat
            if lat > b.max_lat:
                b.max_lat = lat
            if ch.lat_mask and (ch.lat_bits or lat > ch.lat_thr):  # else: bits stay 0
                found = self._latency_bits(c, msg, lat)
            vals = fields.get("values") if 0 < fc < 5 else None  # READ_FCS
            if vals:
                pvals = slot.vals
                if pvals is None:
                    more = self._first_values(c, msg, slot, vals)
                    if more:
                        found = (found or []) + more
                elif pvals != vals:
                    b.n_changed += 1.0
                    watch = ch.watch
                    if watch is None or slot.cmd in watch:
                        more = self.values_changed(c, msg, slot.cmd, vals, pvals, ts - slot.read_at)
                        if more:
                            found = (found or []) + more
                    slot.vals = vals
                slot.read_at = ts
            else:  # n_reads is completed when the bucket closes
                b.n_reads -= 1.0
            return found

    def _first_of_hop(self, msg: ModbusMessage) -> list[Finding] | None:
        """A message at or past the end of the current hop: close the buckets, then count it
        in the bucket that opened (even if the grid's float end rounds to its time)."""
        out = self._advance(msg.ts)
        hop_end = self.hop_end
        self.hop_end = math.inf
        try:
            found = self.modbus(msg)
        finally:
            self.hop_end = hop_end
        if found:
            return (out or []) + found
        return out

    def _first_of_connection(self, msg: ModbusMessage) -> list[Finding] | None:
        """The first message of a (connection, unit id): its state, then the message."""
        c, out = self._connect(msg)
        if c is None:
            return None
        found = self.modbus(msg)
        if found:
            return (out or []) + found
        return out

    def _activate(self, ch: ChannelState) -> None:
        """A windowed channel's request after a silence: it produces windows again."""
        ch.waiting = False
        ch.warm = 0
        ch.ring.clear()
        self.active[ch.key] = ch

    @staticmethod
    def _add_span(slot: Slot, fields: dict[str, Any], b: Bucket) -> None:
        """A command's address span into bucket ``b`` (once per bucket if its slot has it)."""
        if slot.fixed_span:
            lo, end = slot.lo, slot.end
            slot.bucket = b
        else:
            lo, end = span(slot.cmd, fields)
        b.add_span(lo, end)

    def _keep_open(self, c: Conn) -> None:
        """A new request while the previous one is still open: the previous waits in
        ``pending`` (up to ``MAX_PENDING``)."""
        pending = c.pending
        if len(pending) < MAX_PENDING:
            pending[c.last_tid] = c.last_slot
        else:
            self.stats["pending_dropped"] += 1

    def _request(
        self,
        c: Conn,
        msg: ModbusMessage,
        ts: float,
        tid: int,
        fc: int,
        fields: dict[str, Any],
        b: Bucket,
    ) -> list[Finding] | None:
        """A request the hot path does not handle (counted in ``n_req`` already)."""
        ch = c.ch
        if 0 < fc < 5:
            cmd: Command = (fc, fields.get("address"), fields.get("quantity"))
            write = False
        else:
            cmd = command(fc, fields)
            write = fc in WRITE_FCS
            if not write:
                b.n_other += 1.0
        slot = ch.slots.get(cmd)
        if slot is None:
            slot = self._new_slot(ch, cmd, fields)
        if write:
            b.n_write += 1.0
        elif slot is not None:
            if slot.sent:
                ia = ts - slot.last
                b.sum_ia += ia
                b.sum_ia2 += ia * ia
                if ia > b.max_ia:
                    b.max_ia = ia
            else:  # n_ia is completed when the bucket closes
                b.n_ia -= 1.0
            slot.last = ts
            slot.sent = True
        else:
            b.n_ia -= 1.0
        if slot is None:
            b.add_span(*span(cmd, fields))
        elif slot.bucket is not b:
            self._add_span(slot, fields, b)
        if c.last_tid != NO_TID:  # the previous request is still open
            self._keep_open(c)
        c.last_tid = tid
        c.last_slot = slot
        found = None
        if write or slot is None or not ch.verified or c.prev_slot.next is not slot:
            c.slot = slot
            found = self.request(c, msg, cmd, ts)
        if not write:
            if slot is None:
                c.prev_slot = _NO_SLOT
                c.untracked_prev = cmd
            else:
                c.prev_slot = slot
        return found

    def _response(
        self,
        c: Conn,
        msg: ModbusMessage,
        slot: Slot | None,
        ts: float,
        fc: int,
        exc: str | None,
        fields: dict[str, Any],
        lat: float | None,
        b: Bucket,
    ) -> list[Finding] | None:
        """A response the hot path does not handle (counted in ``n_resp`` already)."""
        ch = c.ch
        found = None
        if exc is not None:
            b.n_exc += 1.0
        if lat is not None:
            b.sum_lat += lat
            if lat > b.max_lat:
                b.max_lat = lat
            if ch.lat_mask and (ch.lat_bits or lat > ch.lat_thr):  # else: bits stay 0
                found = self._latency_bits(c, msg, lat)
        else:  # n_lat is completed when the bucket closes
            b.n_lat -= 1.0
        if self.call_response:
            more = self.response(c, msg, slot.cmd if slot is not None else None, ts)
            if more:
                found = (found or []) + more
        vals = fields.get("values") if slot is not None and exc is None and fc in READ_FCS else None
        if vals:
            more = self._read_values(c, msg, slot, vals, ts, b)  # type: ignore[arg-type]
            if more:
                found = (found or []) + more
        else:
            b.n_reads -= 1.0
        return found

    def _latency_bits(self, c: Conn, msg: ModbusMessage, lat: float) -> list[Finding] | None:
        """Shift a response's latency into its channel's slow-response bits."""
        ch = c.ch
        bits = ((ch.lat_bits << 1) | (lat > ch.lat_thr)) & ch.lat_mask
        ch.lat_bits = bits
        if bits == 0:
            ch.lat_episode = False
        elif not ch.lat_episode and bits.bit_count() >= ch.lat_k:
            ch.lat_episode = True
            return self.slow_responses(c, msg, bits)
        return None

    def _read_values(
        self,
        c: Conn,
        msg: ModbusMessage,
        slot: Slot,
        vals: list[Any],
        ts: float,
        b: Bucket,
    ) -> list[Finding] | None:
        """A read response's values against the previous read of its command (the hot path
        in ``modbus`` does the same inline)."""
        pvals = slot.vals
        found = None
        if pvals is None:
            found = self._first_values(c, msg, slot, vals)
        elif pvals != vals:
            b.n_changed += 1.0
            watch = c.ch.watch
            if watch is None or slot.cmd in watch:
                found = self.values_changed(c, msg, slot.cmd, vals, pvals, ts - slot.read_at)
            slot.vals = vals
        slot.read_at = ts
        return found

    def _first_values(
        self, c: Conn, msg: ModbusMessage, slot: Slot, vals: list[Any]
    ) -> list[Finding] | None:
        """The first values a command's reads return on its channel."""
        slot.vals = vals
        return self.values_changed(c, msg, slot.cmd, vals, None, 0.0)

    def anomaly(self, event: Anomaly) -> list[Finding] | None:
        if event.ts > self.clock:
            self.clock = event.ts
        return None

    def flow_end(self, record: dict[str, Any]) -> list[Finding] | None:
        return None

    def tick(self, now: float) -> list[Finding] | None:
        if now > self.clock:
            self.clock = now
        if now >= self.hop_end:
            return self._advance(now)
        return None

    def reset_streams(self) -> None:
        """Forget connections and timing (a new capture starts: no continuity with the last)."""
        self.conns.clear()
        self.conns_units.clear()
        for ch in self.channels.values():
            ch.waiting = ch.windowed
            ch.ring.clear()
            ch.bucket = Bucket()
            ch.slots.clear()
            ch.debounce.clear()
            ch.episode = False
            ch.lat_bits = 0
            ch.lat_episode = False
        self.active.clear()
        self.hop_end = 0.0
        self.clock = 0.0

    # ------------------------------------------------------------------ windows
    def _advance(self, now: float) -> list[Finding] | None:
        if now > self.clock:
            self.clock = now
        hop = self.hop
        if self.hop_end == 0.0 or now - self.hop_end > self.idle:
            # first event, or a long silence: restart the grid; nothing spans the gap
            for ch in self.active.values():
                ch.waiting = True
                ch.ring.clear()
                ch.bucket = Bucket()
            self.active.clear()
            self.hop_end = (now // hop + 1) * hop
            return None
        out: list[Finding] | None = None
        while now >= self.hop_end:
            t_end = self.hop_end
            closed: list[tuple[ChannelState, list[float]]] = []
            idle = self.idle
            nb = self.nbuckets
            dormant = []
            for key, ch in self.active.items():
                ch.ring.append(ch.bucket.counters())
                ch.bucket = Bucket()
                ch.warm += 1
                if t_end - ch.last_req > idle:
                    dormant.append(key)
                    continue
                if ch.warm > nb:  # the ring holds no partial first bucket
                    ring = ch.ring
                    closed.append((ch, combine(list(ring)) if nb > 1 else list(ring[0])))
            for key in dormant:
                ch = self.active.pop(key)
                ch.waiting = True
                ch.ring.clear()
            self.hop_end = t_end + hop
            if closed:
                found = self.windows(closed, t_end)
                if found:
                    out = (out or []) + found
        return out
