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

from collections import deque
from typing import Any

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
_UNSET: list[Any] = []  # a slot's "no verified predecessor" (never a command slot)
ChannelKey = tuple[str, str, int]

MAX_PENDING = 256  # open requests remembered per connection
MAX_COMMANDS = 1024  # distinct commands remembered per channel
MAX_CONNS_FACTOR = 4  # connections tracked: this many times max_channels


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


def new_slot(cmd: Command, fields: dict[str, Any]) -> list[Any]:
    """A command's slot: [command, when last sent, values of its last read, when read,
    the slot it was verified after (``Tracker.verify``), address span lo, end, the last bucket
    its span went into]."""
    if cmd[0] in _SPAN_IN_COMMAND:
        lo, end = span(cmd, fields)
    else:
        lo = end = _INLINE
    return [cmd, None, None, 0.0, _UNSET, lo, end, None]


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
        "active",
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
        "warm",
        "watch",
        "windowed",
    )

    def __init__(self, key: ChannelKey, nbuckets: int, windowed: bool) -> None:
        self.key = key
        self.bucket = new_bucket()
        self.ring: deque[list[float]] = deque(maxlen=nbuckets)
        self.warm = 0  # buckets closed since the channel (re)activated
        self.active = False
        self.windowed = windowed
        self.last_req = 0.0
        # command -> [command, when last sent, values of its last read, when read]
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
        "prev",
        "prev_slot",
        "slot",
        "uid",
        "unit",
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
        self.prev: Command | None = None
        self.prev_slot: list[Any] | None = None
        self.slot: list[Any] | None = None  # the current request's, for the request hook


class Tracker:
    """Base of ``Learner`` and ``Engine`` (see the module docstring)."""

    def __init__(
        self, window: float, hop: float, max_channels: int = 4096, idle: float | None = None
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

    @staticmethod
    def verify(c: Conn) -> None:
        """The current request's transition checked out: the next time this command follows
        the same previous command on a channel with ``verified`` set, skip the hook."""
        if c.slot is not None:
            c.slot[4] = c.prev_slot

    # Called for every response only if ``call_response`` (the learner needs them all).
    call_response = False

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
        # One tuple unpack is much cheaper than a dozen NamedTuple attribute look-ups.
        ts, uid, _conn, is_orig, tid, _pid, unit, fc, _func, exc, _len, _frame, fields, lat = msg
        out: list[Finding] | None = None
        if ts >= self.hop_end:
            out = self._advance(ts)
        c = self.conns.get(uid)
        if c is None or c.unit != unit:
            c = self.conns_units.get((uid, unit))
        if c is None:
            c, found = self._connect(msg)
            if c is None:
                return out
            if found:
                out = (out or []) + found
        ch = c.ch
        b = ch.bucket
        found = None
        if is_orig:
            b[N_REQ] += 1.0  # float constants: the interpreter's fast float add
            ch.last_req = ts
            if not ch.active and ch.windowed:
                ch.active = True
                ch.warm = 0
                ch.ring.clear()
                self.active[ch.key] = ch
            if 0 < fc < 5:  # reads, most of the traffic
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
            # The address span: a command's once per bucket (its slot remembers the bucket).
            if slot is None:
                lo, end = span(cmd, fields)
            elif slot[7] is not b:
                lo = slot[5]
                if lo is _INLINE:
                    lo, end = span(cmd, fields)
                else:
                    end = slot[6]
                    slot[7] = b
            else:
                lo = None
            if lo is not None:
                if lo < b[ADDR_LO]:
                    b[ADDR_LO] = lo
                if end > b[ADDR_HI]:
                    b[ADDR_HI] = end
            if c.last_tid is not None:  # the previous request is still open
                pending = c.pending
                if len(pending) < MAX_PENDING:
                    pending[c.last_tid] = c.last_slot
                else:
                    self.stats["pending_dropped"] += 1
            c.last_tid = tid
            c.last_slot = slot
            if write or slot is None or not ch.verified or slot[4] is not c.prev_slot:
                c.slot = slot
                found = self.request(c, msg, cmd, ts)
            if not write:
                c.prev = cmd
                c.prev_slot = slot
        else:
            if tid == c.last_tid:
                slot = c.last_slot
                c.last_tid = None
            else:
                slot = c.pending.pop(tid, None)
            b[N_RESP] += 1.0
            if exc is not None:
                b[N_EXC] += 1.0
            if lat is not None:
                b[S_LAT] += lat
                if lat > b[MAX_LAT]:
                    b[MAX_LAT] = lat
                if ch.lat_mask and (ch.lat_bits or lat > ch.lat_thr):  # else: bits stay 0
                    bits = ((ch.lat_bits << 1) | (lat > ch.lat_thr)) & ch.lat_mask
                    ch.lat_bits = bits
                    if bits == 0:
                        ch.lat_episode = False
                    elif not ch.lat_episode and bits.bit_count() >= ch.lat_k:
                        ch.lat_episode = True
                        found = self.slow_responses(c, msg, bits)
            else:  # N_LAT is completed when the bucket closes (``_advance``)
                b[N_LAT] -= 1.0
            if self.call_response:
                more = self.response(c, msg, slot[0] if slot is not None else None, ts)
                if more:
                    found = (found or []) + more
            if slot is not None and exc is None and 0 < fc < 5:
                vals = fields.get("values")
                if vals:
                    pvals = slot[2]
                    if pvals is None:
                        slot[2] = vals
                        more = self.values_changed(c, msg, slot[0], vals, None, 0.0)
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
                else:
                    b[N_VAL] -= 1.0
            else:
                b[N_VAL] -= 1.0
        if found:
            return (out or []) + found
        return out

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
            ch.active = False
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
                ch.active = False
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
                ch.active = False
                ch.ring.clear()
            self.hop_end = t_end + hop
            if closed:
                found = self.windows(closed, t_end)
                if found:
                    out = (out or []) + found
        return out
