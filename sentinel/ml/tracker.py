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
of inter-arrival times, latencies and read values (``N_IA``, ``N_LAT``, ``N_VAL``) to the
close, which adds the requests and responses to what it subtracted.

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
from sentinel.ml.window import (
    ADDR_HI,
    ADDR_LO,
    MAX_IA,
    MAX_LAT,
    N_CHG,
    N_EXC,
    N_IA,
    N_LAT,
    N_OTHER,
    N_REQ,
    N_RESP,
    N_VAL,
    N_WRITE,
    S_IA,
    S_IA2,
    S_LAT,
    combine,
    new_bucket,
)

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
_INLINE: list[Any] = []  # a slot's span marker: compute it per request

# A connection's previous slot before its first request (or after an untracked command): no
# slot follows it (its own successor, with a command no request has).
_NO_SLOT: list[Any] = [(-1, None, None), None, None, 0.0, None, None, None, None, None]
_NO_SLOT[4] = _NO_SLOT


def new_slot(cmd: Command, fields: dict[str, Any]) -> list[Any]:
    """A command's slot: [command, when last sent, values of its last read, when read,
    the slot verified to follow it (``Tracker.verify``), address span lo, end, the last bucket
    its span went into, the fields of the request it was made from]."""
    if cmd[0] in _SPAN_IN_COMMAND:
        lo, end = span(cmd, fields)
    else:
        lo = end = _INLINE
    return [cmd, None, None, 0.0, _NO_SLOT, lo, end, None, dict(fields)]


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
        self.bucket = new_bucket()
        self.ring: deque[list[float]] = deque(maxlen=nbuckets)
        self.warm = 0  # buckets closed since the channel (re)activated
        self.windowed = windowed
        # a windowed channel not in ``Tracker.active``: its next request activates it
        self.waiting = windowed
        self.last_req = 0.0
        # command -> its slot (``new_slot``)
        self.slots: dict[Command, list[Any]] = {}
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
        self.last_tid: int | None = None
        self.last_slot: list[Any] | None = None
        self.pending: dict[int, list[Any] | None] = {}  # transaction id -> command slot
        # the previous request's slot (writes aside); _NO_SLOT: none, or an untracked command
        self.prev_slot: list[Any] = _NO_SLOT
        self.untracked_prev: Command | None = None
        self.slot: list[Any] | None = None  # the current request's, for the request hook

    @property
    def prev(self) -> Command | None:
        """The previous request's command (writes aside; None: the connection's first)."""
        if self.prev_slot is _NO_SLOT:
            return self.untracked_prev
        return self.prev_slot[0]  # type: ignore[no-any-return]


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
            c.prev_slot[4] = c.slot

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

    def _new_slot(self, ch: ChannelState, cmd: Command, fields: dict[str, Any]) -> list[Any] | None:
        """A command's first request on a channel: its slot (None beyond ``MAX_COMMANDS``)."""
        if len(ch.slots) < MAX_COMMANDS:
            slot = ch.slots[cmd] = new_slot(cmd, fields)
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
            b[N_REQ] += 1.0  # float constants: the interpreter's fast float add
            ch.last_req = ts
            if ch.waiting:
                self._activate(ch)
            # The verified successor of the previous command: this request's command if the
            # function and fields are those its slot was made from (``command`` depends on
            # nothing else). Its transition needs no check, and it was sent before (its slot
            # got a time before it was verified).
            slot = c.prev_slot[4]
            if slot[0][0] == fc and slot[8] == fields:
                ia = ts - slot[1]
                b[S_IA] += ia
                b[S_IA2] += ia * ia
                if ia > b[MAX_IA]:
                    b[MAX_IA] = ia
                slot[1] = ts
                if slot[7] is not b:
                    self._add_span(slot, fields, b)
                if c.last_tid is not None:
                    self._keep_open(c)
                c.last_tid = tid
                c.last_slot = slot
                c.prev_slot = slot
                return None
            return self._request(c, msg, ts, tid, fc, fields, b)
        else:
            if tid == c.last_tid:
                slot = c.last_slot
                c.last_tid = None
            else:
                slot = c.pending.pop(tid, None)
            b[N_RESP] += 1.0
            if lat is None or exc is not None or slot is None or self.call_response:
                return self._response(c, msg, slot, ts, fc, exc, fields, lat, b)
            found = None
            b[S_LAT] += lat
            if lat > b[MAX_LAT]:
                b[MAX_LAT] = lat
            if ch.lat_mask and (ch.lat_bits or lat > ch.lat_thr):  # else: bits stay 0
                found = self._latency_bits(c, msg, lat)
            vals = fields.get("values") if fc in READ_FCS else None
            if vals:
                pvals = slot[2]
                if pvals is None:
                    more = self._first_values(c, msg, slot, vals)
                    if more:
                        found = (found or []) + more
                elif pvals != vals:
                    b[N_CHG] += 1.0
                    watch = ch.watch
                    if watch is None or slot[0] in watch:
                        more = self.values_changed(c, msg, slot[0], vals, pvals, ts - slot[3])
                        if more:
                            found = (found or []) + more
                    slot[2] = vals
                slot[3] = ts
            else:  # N_VAL is completed when the bucket closes (``_advance``)
                b[N_VAL] -= 1.0
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
    def _add_span(slot: list[Any], fields: dict[str, Any], b: list[float]) -> None:
        """A command's address span into bucket ``b`` (once per bucket if its slot has it)."""
        lo = slot[5]
        if lo is _INLINE:
            lo, end = span(slot[0], fields)
        else:
            end = slot[6]
            slot[7] = b
        if lo is not None:
            if lo < b[ADDR_LO]:
                b[ADDR_LO] = lo
            if end > b[ADDR_HI]:
                b[ADDR_HI] = end

    def _keep_open(self, c: Conn) -> None:
        """A new request while the previous one is still open: the previous waits in
        ``pending`` (up to ``MAX_PENDING``)."""
        pending = c.pending
        if len(pending) < MAX_PENDING:
            pending[c.last_tid] = c.last_slot  # type: ignore[index]
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
        b: list[float],
    ) -> list[Finding] | None:
        """A request the hot path does not handle (counted in ``N_REQ`` already)."""
        ch = c.ch
        if 0 < fc < 5:
            cmd: Command = (fc, fields.get("address"), fields.get("quantity"))
            write = False
        else:
            cmd = command(fc, fields)
            write = fc in WRITE_FCS
            if not write:
                b[N_OTHER] += 1.0
        slot = ch.slots.get(cmd)
        if slot is None:
            slot = self._new_slot(ch, cmd, fields)
        if write:
            b[N_WRITE] += 1.0
        elif slot is not None:
            last = slot[1]
            if last is not None:
                ia = ts - last
                b[S_IA] += ia
                b[S_IA2] += ia * ia
                if ia > b[MAX_IA]:
                    b[MAX_IA] = ia
            else:  # N_IA is completed when the bucket closes (``_advance``)
                b[N_IA] -= 1.0
            slot[1] = ts
        else:
            b[N_IA] -= 1.0
        if slot is None:
            lo, end = span(cmd, fields)
            if lo is not None:
                if lo < b[ADDR_LO]:
                    b[ADDR_LO] = lo
                if end > b[ADDR_HI]:
                    b[ADDR_HI] = end
        elif slot[7] is not b:
            self._add_span(slot, fields, b)
        if c.last_tid is not None:  # the previous request is still open
            self._keep_open(c)
        c.last_tid = tid
        c.last_slot = slot
        found = None
        if write or slot is None or not ch.verified or c.prev_slot[4] is not slot:
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
        slot: list[Any] | None,
        ts: float,
        fc: int,
        exc: str | None,
        fields: dict[str, Any],
        lat: float | None,
        b: list[float],
    ) -> list[Finding] | None:
        """A response the hot path does not handle (counted in ``N_RESP`` already)."""
        ch = c.ch
        found = None
        if exc is not None:
            b[N_EXC] += 1.0
        if lat is not None:
            b[S_LAT] += lat
            if lat > b[MAX_LAT]:
                b[MAX_LAT] = lat
            if ch.lat_mask and (ch.lat_bits or lat > ch.lat_thr):  # else: bits stay 0
                found = self._latency_bits(c, msg, lat)
        else:  # N_LAT is completed when the bucket closes (``_advance``)
            b[N_LAT] -= 1.0
        if self.call_response:
            more = self.response(c, msg, slot[0] if slot is not None else None, ts)
            if more:
                found = (found or []) + more
        vals = fields.get("values") if slot is not None and exc is None and fc in READ_FCS else None
        if vals:
            more = self._read_values(c, msg, slot, vals, ts, b)  # type: ignore[arg-type]
            if more:
                found = (found or []) + more
        else:
            b[N_VAL] -= 1.0
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
        slot: list[Any],
        vals: list[Any],
        ts: float,
        b: list[float],
    ) -> list[Finding] | None:
        """A read response's values against the previous read of its command (the hot path
        in ``modbus`` does the same inline)."""
        pvals = slot[2]
        found = None
        if pvals is None:
            found = self._first_values(c, msg, slot, vals)
        elif pvals != vals:
            b[N_CHG] += 1.0
            watch = c.ch.watch
            if watch is None or slot[0] in watch:
                found = self.values_changed(c, msg, slot[0], vals, pvals, ts - slot[3])
            slot[2] = vals
        slot[3] = ts
        return found

    def _first_values(
        self, c: Conn, msg: ModbusMessage, slot: list[Any], vals: list[Any]
    ) -> list[Finding] | None:
        """The first values a command's reads return on its channel."""
        slot[2] = vals
        return self.values_changed(c, msg, slot[0], vals, None, 0.0)

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
            ch.bucket = new_bucket()
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
                ch.bucket = new_bucket()
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
                b = ch.bucket
                # counts the hot path leaves to the bucket's close: it subtracted the requests
                # (other than writes) without an inter-arrival time, the responses without a
                # latency and those without read values; add the requests and responses
                b[N_IA] += b[N_REQ] - b[N_WRITE]
                b[N_LAT] += b[N_RESP]
                b[N_VAL] += b[N_RESP]
                ch.ring.append(b)
                ch.bucket = new_bucket()
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
