"""The rule engine: which rules apply to an event, whether they match, and alert frequency.

Three inspection paths (a rule's ``kind`` says which, see docs/rules.md):

- **stream**: TCP rules with payload keywords see every in-order segment payload of the
  reassembled stream (``StreamData``); retransmissions are not inspected twice.
- **packet**: rules without payload keywords, ``flow:no_stream``, ``tcp-pkt`` and UDP/IP
  payload rules see every packet (``PacketEvent``).
- **app**: ``modbus:`` and ``app-layer-event:`` rules see decoded Modbus messages with the
  protocol events raised for them, and events raised outside any message; ``dnp3`` rules
  (DNP3 keywords, ``dnp3_data``, ``app-layer-event:dnp3.*``) see the tshark-decoded DNP3
  messages (``OTEvent``), one transaction each (``inspect_ot``).

Speed: header matching (proto, addresses, ports, direction) runs once per flow direction; the
result is a ``Plan`` shared by every flow direction with the same rule subset. Stream rules
whose fast pattern sits at a fixed position are grouped so one slice and one dict lookup
find the candidates; Modbus rules are indexed by function code. Per event the engine then
evaluates only candidates, cheapest checks first (flowbits, dsize, length, payload).

State (flowbits, thresholds, per-flow plans) is bounded and dropped when a flow ends.
Alert frequency follows Suricata: at most one alert per signature per event (packet, segment,
or Modbus message, which is one transaction direction).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Final, NamedTuple

from sentinel.decode.flow import GateAlternative
from sentinel.decode.modbus_codes import FUNC_BY_RAW
from sentinel.decode.packet import PROTO_TCP, PROTO_UDP
from sentinel.events import Anomaly, ConnId, ModbusMessage, OTEvent, PacketEvent, StreamData
from sentinel.rules import dnp3 as dn
from sentinel.rules import modbus as mb
from sentinel.rules.model import (
    KIND_APP,
    KIND_PACKET,
    KIND_STREAM,
    ByteTest,
    Content,
    Rule,
    Threshold,
)
from sentinel.rules.payload import PayloadMatcher, byte_test

ACTION_RANK = {
    "pass": 0,
    "drop": 1,
    "reject": 2,
    "rejectsrc": 2,
    "rejectdst": 2,
    "rejectboth": 2,
    "alert": 3,
}


class Alert(NamedTuple):
    """One rule match that raised an alert (not aggregated)."""

    rule: Rule
    ts: float
    frame: int
    uid: str
    conn: ConnId
    is_orig: bool
    kind: str
    message: ModbusMessage | None = None
    events: tuple[Anomaly | str, ...] = ()
    payload_length: int | None = None
    ot: OTEvent | None = None  # the DNP3 transaction (message) that matched
    # The packet or stream chunk matched (a reference, not a copy); a sink stores it only
    # where privacy.minimization.payload allows it for the flow's protocol (EveSink).
    payload: bytes | None = None


class Compiled:
    """A rule with everything precomputed for matching."""

    __slots__ = (
        "actions",
        "anchor",
        "app_modbus_only",
        "conditions",
        "dnp3",
        "dnp3_data",
        "dsize",
        "established",
        "event_names",
        "functions",
        "index",
        "is_pass",
        "matcher",
        "modbus",
        "needs_modbus_flow",
        "rank",
        "rule",
        "to_server",
    )

    def __init__(self, rule: Rule, index: int) -> None:
        self.rule = rule
        self.index = index
        flow = rule.flow
        self.to_server = flow.to_server
        self.established = flow.established
        self.conditions = tuple(f for f in rule.flowbits if f.command in ("isset", "isnotset"))
        self.actions = tuple(f for f in rule.flowbits if f.command in ("set", "unset", "toggle"))
        self.dsize = rule.dsize
        self.matcher = PayloadMatcher(rule.payload) if rule.payload else None
        self.modbus = rule.modbus
        self.dnp3 = rule.dnp3
        self.dnp3_data = PayloadMatcher(rule.dnp3_data) if rule.dnp3_data else None
        self.event_names = frozenset(e.name for e in rule.events)
        self.app_modbus_only = rule.kind != KIND_APP and rule.app_proto == "modbus"
        self.needs_modbus_flow = self.app_modbus_only
        functions: frozenset[int] | None = None
        for m in rule.modbus:
            fcs = mb.possible_functions(m)
            if fcs is not None:
                functions = fcs if functions is None else functions & fcs
        self.functions = functions
        flowbit_rank = 1
        if self.actions and not self.conditions:
            flowbit_rank = 0
        elif self.conditions and not self.actions:
            flowbit_rank = 2
        self.rank = (ACTION_RANK.get(rule.header.action, 3), flowbit_rank, index)
        self.is_pass = rule.header.action == "pass"  # read per candidate: no look-up chain
        self.anchor = _anchor(rule) if not rule.flowbits and not self.is_pass else None


def _anchor(rule: Rule) -> tuple[int, bytes] | None:
    """(offset, bytes) of a content that must sit exactly at a fixed position: the one
    marked fast_pattern if it qualifies, else the longest."""
    best: Content | None = None
    for step in rule.payload:
        if not isinstance(step, Content) or step.negated or step.nocase or step.relative:
            continue
        if step.depth != len(step.pattern):
            continue
        if step.fast_pattern:
            best = step
            break
        if best is None or len(step.pattern) >= len(best.pattern):
            best = step
    return (best.offset or 0, best.pattern) if best is not None else None


class Plan:
    """The rules that apply to one flow direction, indexed for the event types."""

    __slots__ = (
        "anchored", "app_by_fc", "app_events", "app_generic", "dnp3", "gate", "packet", "stream",
    )  # fmt: skip

    def __init__(self, rules: list[Compiled]) -> None:
        rules = sorted(rules, key=lambda c: c.rank)
        self.packet = tuple(c for c in rules if c.rule.kind == KIND_PACKET)
        stream = [c for c in rules if c.rule.kind == KIND_STREAM]
        groups: dict[tuple[int, int], dict[bytes, list[Compiled]]] = {}
        always = []
        for c in stream:
            if c.anchor is None:
                always.append(c)
            else:
                off, pat = c.anchor
                groups.setdefault((off, len(pat)), {}).setdefault(pat, []).append(c)
        self.stream = tuple(always)
        # (start, end, {pattern: rules}); one-byte patterns are keyed by the byte's value
        self.anchored = tuple(
            (off, off + n if n > 1 else -1,
             {(p[0] if n == 1 else p): tuple(cs) for p, cs in d.items()})
            for (off, n), d in groups.items()
        )  # fmt: skip
        app = [c for c in rules if c.rule.kind == KIND_APP and c.rule.app_proto != "dnp3"]
        self.dnp3 = tuple(
            c for c in rules if c.rule.kind == KIND_APP and c.rule.app_proto == "dnp3"
        )
        self.app_events = tuple(c for c in app if c.event_names)
        plain = [c for c in app if not c.event_names]
        self.app_generic = tuple(c for c in plain if c.functions is None)
        by_fc: dict[int, list[Compiled]] = {}
        for c in plain:
            if c.functions is not None:
                for fc in c.functions:
                    by_fc.setdefault(fc, []).append(c)
        self.app_by_fc = {
            fc: tuple(sorted([*cs, *self.app_generic], key=lambda c: c.rank))
            for fc, cs in by_fc.items()
        }

        self.gate = _stream_gate(stream)

    @property
    def empty(self) -> bool:
        return not (
            self.packet
            or self.stream
            or self.anchored
            or self.app_events
            or self.app_generic
            or self.app_by_fc
            or self.dnp3
        )


Gate = tuple[GateAlternative, ...]
_BYTES = frozenset(range(256))
MAX_ALTERNATIVES: Final = 8


def _conditions(c: Compiled) -> tuple[int, dict[int, frozenset[int]], list[int]]:
    """What every chunk the stream rule matches has: a least size, and the values of bytes at
    fixed positions (contents at a fixed offset, one-byte absolute byte_tests); with the
    offsets in the order to test them (the fast pattern first, then byte tests)."""
    low = 1
    d = c.dsize
    if d is not None:
        low = {"=": d.value, ">": d.value + 1, ">=": d.value, "<>": d.value + 1}.get(d.op, 1)
    conds: dict[int, frozenset[int]] = {}
    order: list[int] = []
    if c.anchor is not None:
        order.extend(range(c.anchor[0], c.anchor[0] + len(c.anchor[1])))
    tests: list[int] = []
    for step in c.rule.payload:
        if isinstance(step, Content) and not step.negated and not step.relative:
            low = max(low, (step.offset or 0) + len(step.pattern))
            if not step.nocase and step.depth == len(step.pattern):
                for k, b in enumerate(step.pattern, start=step.offset or 0):
                    conds[k] = conds.get(k, _BYTES) & {b}
        elif (
            isinstance(step, ByteTest)
            and step.nbytes == 1
            and not step.relative
            and step.base is None
        ):
            probe = replace(step, offset=0)
            values = frozenset(x for x in range(256) if byte_test(probe, bytes([x]), 0))
            conds[step.offset] = conds.get(step.offset, _BYTES) & values
            low = max(low, step.offset + 1)
            tests.append(step.offset)
    order += tests + sorted(conds, key=lambda k: len(conds[k]))
    return low, conds, list(dict.fromkeys(k for k in order if k in conds))


def _stream_gate(stream: list[Compiled]) -> Gate:
    """Which chunks a plan's stream rules can match, as alternatives ``(min_size,
    ((offset, values), ...))``: a chunk can match only if, for one alternative, it has at
    least min_size bytes and each listed byte is one of the values. Rules with the same size
    and byte positions share one alternative (the union of their values)."""
    groups: dict[tuple[int, frozenset[int]], tuple[dict[int, set[int]], list[int]]] = {}
    for c in stream:
        low, conds, order = _conditions(c)
        key = (low, frozenset(conds))
        entry = groups.get(key)
        if entry is None:
            groups[key] = ({k: set(v) for k, v in conds.items()}, order)
        else:
            for k, v in conds.items():
                entry[0][k] |= v
    if len(groups) > MAX_ALTERNATIVES:  # one alternative: the bytes all of them test
        common = set.intersection(*(set(conds) for conds, _ in groups.values()))
        merged = {k: set().union(*(conds[k] for conds, _ in groups.values())) for k in common}
        first = next(iter(groups.values()))[1]
        low = min(low for low, _ in groups)
        groups = {(low, frozenset(common)): (merged, [k for k in first if k in common])}
    return tuple(
        (low, tuple((k, frozenset(conds[k])) for k in order if len(conds[k]) < 256))
        for (low, _), (conds, order) in groups.items()
    )


EMPTY_PLAN = Plan([])


def _rank(c: Compiled) -> tuple[int, int, int]:
    return c.rank


class ThresholdTable:
    """Threshold and detection_filter counters, bounded (oldest entry evicted first)."""

    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self.entries: dict[tuple, list] = {}
        self.by_flow: dict[str, list[tuple]] = {}
        self.evicted = 0

    def allow(
        self,
        rule: Rule,
        t: Threshold,
        ts: float,
        src: str,
        dst: str,
        uid: str,
        sport: int,
        dport: int,
    ) -> bool:
        track = t.track
        if track == "by_src":
            tv: object = src
        elif track == "by_dst":
            tv = dst
        elif track == "by_both":
            tv = (src, dst) if src <= dst else (dst, src)
        elif track == "by_flow":
            tv = uid
        else:
            tv = None
        key = (rule.gid, rule.sid, tv)
        e = self.entries.get(key)
        kind = t.type
        if e is None:
            if len(self.entries) >= self.max_entries:
                del self.entries[next(iter(self.entries))]
                self.evicted += 1
            e = self.entries[key] = [ts, 0, t.count, set()]
            if track == "by_flow":
                self.by_flow.setdefault(uid, []).append(key)
        if kind == "backoff":  # e = [_, count, next alert at, _]
            e[1] += 1
            if e[1] == e[2]:
                e[2] *= t.multiplier
                return True
            return False
        if ts - e[0] > t.seconds:
            e[0], e[1] = ts, 0
            e[3] = set()
        if kind == "detection_filter" and t.unique_on is not None:
            port = sport if t.unique_on == "src_port" else dport
            if port in e[3]:
                return e[1] > t.count
            e[3].add(port)
        e[1] += 1
        count = e[1]
        if kind == "limit":
            return count <= t.count
        if kind == "threshold":
            if count >= t.count:
                e[1] = 0
                return True
            return False
        if kind == "both":
            return count == t.count
        return count > t.count  # detection_filter

    def flow_ended(self, uid: str) -> None:
        for key in self.by_flow.pop(uid, ()):
            self.entries.pop(key, None)


MAX_CACHED_VALUES: Final = 65536  # addresses or ports whose matching rules are kept


def _bits(mask: int) -> list[int]:
    """The positions of the bits set in ``mask``, ascending (linear in its size)."""
    return [i for i, bit in enumerate(reversed(bin(mask)[2:])) if bit == "1"]


class HeaderIndex:
    """Which rules' headers fit a flow direction, as a bitmask over the rules' indices.

    Asked once per flow direction, so it must stay cheap with many short flows: each
    distinct address or port spec of the rule set (most rules share a few: ``any``,
    ``$HOME_NET``, ``502``) is evaluated once per value seen, and the rules it stands for
    kept as a bitmask per value (at most ``MAX_CACHED_VALUES`` per header part, then started
    over), instead of every rule's four specs evaluated for every flow direction."""

    def __init__(self, compiled: list[Compiled]) -> None:
        self.compiled = compiled
        # Per header part (src, src_ports, dst, dst_ports): the rules whose spec is ``any``,
        # and each other distinct spec with the rules that use it.
        self.parts: list[tuple[int, list[tuple[Any, int]]]] = []
        for name in ("src", "src_ports", "dst", "dst_ports"):
            anything = 0
            by_spec: dict[Any, int] = {}
            for c in compiled:
                spec = getattr(c.rule.header, name)
                if spec.is_any:
                    anything |= 1 << c.index
                else:
                    by_spec[spec] = by_spec.get(spec, 0) | 1 << c.index
            self.parts.append((anything, list(by_spec.items())))
        self.cached: list[dict[Any, int]] = [{}, {}, {}, {}]
        self.static: dict[tuple[int, bool], int] = {}  # (proto, is_orig) -> rules

    def matching(
        self, proto: int, is_orig: bool, src: str, sport: int, dst: str, dport: int
    ) -> int:
        """The rules whose transport, direction (``flow:to_server``, ``to_client``),
        addresses and ports fit this flow direction."""
        return (
            self._static(proto, is_orig)
            & self._part(0, src)
            & self._part(1, sport)
            & self._part(2, dst)
            & self._part(3, dport)
        )

    def _static(self, proto: int, is_orig: bool) -> int:
        key = (proto, is_orig)
        mask = self.static.get(key)
        if mask is None:
            mask = 0
            for c in self.compiled:
                transport = c.rule.transport
                if (transport is None or transport == proto) and (
                    c.to_server is None or c.to_server == is_orig
                ):
                    mask |= 1 << c.index
            self.static[key] = mask
        return mask

    def _part(self, part: int, value: Any) -> int:
        cached = self.cached[part]
        mask = cached.get(value)
        if mask is None:
            mask, specs = self.parts[part]
            for spec, rules in specs:
                if spec.match(value):
                    mask |= rules
            if len(cached) >= MAX_CACHED_VALUES:
                cached.clear()
            cached[value] = mask
        return mask


class RuleEngine:
    """Matching state for one run (one per pipeline run; not thread-safe)."""

    def __init__(self, rules: Iterable[Rule], max_flows: int = 65536) -> None:
        self.rules = list(rules)
        self.compiled = [Compiled(r, i) for i, r in enumerate(self.rules)]
        kinds = {r.kind for r in self.rules}
        self.wants_packets = KIND_PACKET in kinds
        self.wants_stream = KIND_STREAM in kinds
        self.wants_app = any(
            r.kind == KIND_APP and r.app_proto != "dnp3" for r in self.rules
        )  # Modbus transactions and events
        self.wants_dnp3 = any(r.kind == KIND_APP and r.app_proto == "dnp3" for r in self.rules)
        self.wants_events = any(c.event_names for c in self.compiled)
        self.derived = frozenset(
            n for c in self.compiled for n in c.event_names if n in mb.DERIVED_EVENTS
        )
        self.needs_modbus_flows = any(c.needs_modbus_flow for c in self.compiled)
        self.max_flows = max_flows
        self.plans: dict[tuple[str, bool], Plan] = {}
        self.headers = HeaderIndex(self.compiled)
        self._interned: dict[int, Plan] = {}  # by the bitmask of its rules
        self._interests: dict[tuple[Plan, bool], tuple[frozenset[int] | None, bool] | None] = {}
        self.flowbits: dict[str, set[str]] = {}
        self.thresholds = ThresholdTable()
        self.udp_directions: dict[str, int] = {}
        self.modbus_flows: set[str] = set()
        # Open write requests (FC 5/6/15/16/22) for value_mismatch: (uid, tid) -> requests
        self.writes: dict[tuple[str, int], list[ModbusMessage]] = {}
        self.stats = {"alerts": 0, "suppressed": 0, "plans": 0}

    # ------------------------------------------------------------------ plans
    def plan(self, uid: str, conn: ConnId, is_orig: bool, proto: int) -> Plan:
        key = (uid, is_orig)
        plan = self.plans.get(key)
        if plan is not None:
            return plan
        if is_orig:
            src, sport, dst, dport = conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p
        else:
            src, sport, dst, dport = conn.resp_h, conn.resp_p, conn.orig_h, conn.orig_p
        chosen = self.headers.matching(proto, is_orig, src, sport, dst, dport)
        plan = self._interned.get(chosen)
        if plan is None:
            rules = [self.compiled[i] for i in _bits(chosen)]
            plan = Plan(rules) if rules else EMPTY_PLAN
            self._interned[chosen] = plan
            self.stats["plans"] = len(self._interned)
        if len(self.plans) >= 2 * self.max_flows:
            del self.plans[next(iter(self.plans))]
        self.plans[key] = plan
        return plan

    def flow_ended(self, uid: str) -> None:
        self.plans.pop((uid, True), None)
        self.plans.pop((uid, False), None)
        self.flowbits.pop(uid, None)
        self.udp_directions.pop(uid, None)
        self.modbus_flows.discard(uid)
        self.thresholds.flow_ended(uid)
        if self.writes:
            for key in [k for k in self.writes if k[0] == uid]:
                del self.writes[key]

    # ------------------------------------------------------------------ common tail
    def _flowbits_ok(self, c: Compiled, uid: str) -> bool:
        bits = self.flowbits.get(uid)
        for f in c.conditions:
            if f.command == "isset":
                if not bits or not any(n in bits for n in f.names):
                    return False
            elif bits and all(n in bits for n in f.names):  # isnotset: one unset suffices
                return False
        return True

    def _fire(self, c: Compiled, ts: float, uid: str, conn: ConnId, is_orig: bool) -> bool:
        """Flowbit actions, then noalert and thresholds: whether the match alerts."""
        rule = c.rule
        if c.actions:
            bits = self.flowbits.get(uid)
            if bits is None:
                if len(self.flowbits) >= self.max_flows:
                    del self.flowbits[next(iter(self.flowbits))]
                bits = self.flowbits[uid] = set()
            for f in c.actions:
                name = f.names[0]
                if f.command == "set":
                    bits.add(name)
                elif f.command == "unset" or name in bits:
                    bits.discard(name)
                else:
                    bits.add(name)
        if rule.noalert or rule.header.action == "pass":
            return False
        t = rule.threshold or rule.detection_filter
        if t is not None:
            if is_orig:
                src, sport, dst, dport = conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p
            else:
                src, sport, dst, dport = conn.resp_h, conn.resp_p, conn.orig_h, conn.orig_p
            if not self.thresholds.allow(rule, t, ts, src, dst, uid, sport, dport):
                self.stats["suppressed"] += 1
                return False
        self.stats["alerts"] += 1
        return True

    # ------------------------------------------------------------------ packets
    def inspect_packet(self, p: PacketEvent) -> list[Alert]:
        plan = self.plans.get((p.uid, p.is_orig)) or self.plan(p.uid, p.conn, p.is_orig, p.proto)
        if not plan.packet:
            return []
        return self._match_payload(
            plan.packet, p.payload, p.established, p.ts, p.frame, p.uid, p.conn, p.is_orig,
            KIND_PACKET,
        )  # fmt: skip

    def modbus_interest(
        self, uid: str, conn: ConnId, is_orig: bool
    ) -> tuple[frozenset[int] | None, bool] | None:
        """Which messages of a flow direction ``inspect_modbus`` can alert on or must track:
        ``(function codes, function bytes with the exception bit)``, None for all. Messages
        with decoder events are always inspected (the pipeline sees to it); beyond them,
        event rules need the messages their derived events come from."""
        if self.needs_modbus_flows:
            return None
        plan = self.plans.get((uid, is_orig)) or self.plan(uid, conn, is_orig, PROTO_TCP)
        key = (plan, is_orig)  # plans are shared (interned): so is their interest
        if key not in self._interests:
            self._interests[key] = self._modbus_interest(plan, is_orig)
        return self._interests[key]

    def _modbus_interest(
        self, plan: Plan, is_orig: bool
    ) -> tuple[frozenset[int] | None, bool] | None:
        if plan.app_generic:
            return None
        functions = set(plan.app_by_fc)
        exceptions = False
        for c in plan.app_events:
            derived = c.event_names & mb.DERIVED_EVENTS
            if "invalid_function_code" in derived and is_orig:
                functions.add(0)
                exceptions = True
            if "invalid_exception_code" in derived and not is_orig:
                exceptions = True
        if plan.app_events and "value_mismatch" in self.derived:
            functions.update(mb.ECHOED)  # write requests are kept for their responses
        return frozenset(functions), exceptions

    # ------------------------------------------------------------------ stream
    def stream_gate(self, uid: str, conn: ConnId, is_orig: bool, proto: int) -> Gate | None:
        """Which chunks of a flow direction ``inspect_stream`` can alert on (see
        ``_stream_gate``); None: every chunk (UDP: each datagram counts for ``established``)."""
        if proto != PROTO_TCP:
            return None
        plan = self.plans.get((uid, is_orig)) or self.plan(uid, conn, is_orig, proto)
        return plan.gate

    def inspect_stream(self, s: StreamData) -> list[Alert]:
        proto = s.proto
        plan = self.plans.get((s.uid, s.is_orig)) or self.plan(s.uid, s.conn, s.is_orig, proto)
        data = s.data
        candidates: tuple[Compiled, ...] | list[Compiled] = plan.stream
        if plan.anchored:
            extra: list[Compiled] = []
            size = len(data)
            for start, end, table in plan.anchored:
                if end < 0:  # one byte
                    hit = table.get(data[start]) if start < size else None
                else:
                    hit = table.get(data[start:end])
                if hit:
                    extra.extend(hit)
            if extra:
                candidates = sorted([*plan.stream, *extra], key=_rank) if plan.stream else extra
        if not candidates:
            return []
        established = True
        if proto == PROTO_UDP:
            seen = self.udp_directions.get(s.uid, 0) | (1 << s.is_orig)
            self.udp_directions[s.uid] = seen
            established = seen == 3
        return self._match_payload(
            candidates, data, established, s.ts, s.frame, s.uid, s.conn, s.is_orig, KIND_STREAM
        )

    def _match_payload(
        self,
        candidates: Sequence[Compiled],
        payload: bytes,
        established: bool,
        ts: float,
        frame: int,
        uid: str,
        conn: ConnId,
        is_orig: bool,
        kind: str,
    ) -> list[Alert]:
        """The rules of a packet or a stream chunk that match its payload (one alert per
        signature)."""
        out: list[Alert] = []
        n = len(payload)
        for c in candidates:
            if c.established is not None and c.established != established:
                continue
            if c.needs_modbus_flow and uid not in self.modbus_flows:
                continue
            if c.conditions and not self._flowbits_ok(c, uid):
                continue
            if c.dsize is not None and not c.dsize(n):
                continue
            if c.matcher is not None and not c.matcher.match(payload):
                continue
            if c.is_pass:
                self._fire(c, ts, uid, conn, is_orig)
                break
            if self._fire(c, ts, uid, conn, is_orig):
                alert = Alert(
                    c.rule, ts, frame, uid, conn, is_orig, kind, payload_length=n, payload=payload
                )
                out.append(alert)
        return out if len(out) < 2 else _one_per_signature(out)

    # ------------------------------------------------------------------ Modbus
    def inspect_modbus(
        self,
        msg: ModbusMessage,
        events: tuple[Anomaly, ...] = (),
        request: dict | None = None,
        has_request: bool | None = None,
    ) -> list[Alert]:
        """A decoded message, with the protocol events raised while decoding it.

        ``request`` is the paired request's fields (for responses, when known) and
        ``has_request`` whether the transaction has a request (default: the decoder paired
        the response, ``latency`` is set)."""
        # Once per message: one tuple unpack instead of attribute look-ups.
        _, uid, conn, is_orig, _, _, _, fc, func, exception, _, _, _, _ = msg
        if self.needs_modbus_flows:
            self.modbus_flows.add(uid)
        plan = self.plans.get((uid, is_orig)) or self.plan(uid, conn, is_orig, PROTO_TCP)
        candidates: tuple[Compiled, ...] | list[Compiled] = plan.app_by_fc.get(fc, plan.app_generic)
        derived: list[str] = []
        if plan.app_events and self.derived:
            if fc in mb.ECHOED and request is None and "value_mismatch" in self.derived:
                request = self._write_request(msg)
            # Only three kinds of message can carry a derived event (see derived_events).
            if (
                (fc == 0 or FUNC_BY_RAW[fc] != func)
                if is_orig
                else (exception is not None or fc in mb.ECHOED)
            ):
                derived = [n for n in mb.derived_events(msg, request) if n in self.derived]
        names: frozenset[str] | set[str] = frozenset()
        if events or derived:
            names = {e.name.split(".", 1)[1] for e in events}
            names.update(derived)
            if plan.app_events:
                candidates = sorted([*candidates, *plan.app_events], key=_rank)
        if not candidates:
            return []
        # The modbus keyword inspects requests, and responses only without a request.
        if has_request is None:
            has_request = msg.latency is not None
        keyword_ok = msg.is_orig or not has_request
        out: list[Alert] = []
        for c in candidates:
            if c.event_names and not c.event_names <= names:
                continue
            if c.modbus:
                if not keyword_ok:
                    continue
                if not all(mb.match(m, msg) for m in c.modbus):
                    continue
            if c.conditions and not self._flowbits_ok(c, msg.uid):
                continue
            if c.is_pass:
                self._fire(c, msg.ts, msg.uid, msg.conn, msg.is_orig)
                break
            if self._fire(c, msg.ts, msg.uid, msg.conn, msg.is_orig):
                matched: tuple[Any, ...] = tuple(
                    e for e in events if e.name.split(".", 1)[1] in c.event_names
                )
                matched += tuple(n for n in derived if n in c.event_names)
                out.append(
                    Alert(
                        c.rule,
                        msg.ts,
                        msg.frame,
                        msg.uid,
                        msg.conn,
                        msg.is_orig,
                        KIND_APP,
                        msg,
                        matched,
                    )
                )
        return out if len(out) < 2 else _one_per_signature(out)

    def _write_request(self, msg: ModbusMessage) -> dict[str, Any] | None:
        """Track write requests; for a write response, the fields of its request."""
        if msg.fc not in mb.ECHOED:
            return None
        key = (msg.uid, msg.tid)
        if msg.is_orig:
            if len(self.writes) >= self.max_flows:
                del self.writes[next(iter(self.writes))]
            self.writes.setdefault(key, []).append(msg)
            return None
        queue = self.writes.get(key)
        if not queue:
            return None
        for i, req in enumerate(queue):
            if req.fc == msg.fc and req.unit == msg.unit:
                del queue[i]
                if not queue:
                    del self.writes[key]
                return req.fields
        return None

    def inspect_ot(self, ev: OTEvent) -> list[Alert]:
        """A DNP3 message (one transaction direction) with the DNP3 events attached to it.

        Other OT protocols have no rule keywords: their events are ignored here."""
        if ev.protocol != "dnp3" or ev.uid is None:
            return []
        plan = self.plans.get((ev.uid, ev.is_orig)) or self.plan(
            ev.uid, ev.conn, ev.is_orig, PROTO_TCP if ev.transport == "tcp" else PROTO_UDP
        )
        if not plan.dnp3:
            return []
        tx = dn.is_transaction(ev)
        names = dn.events_of(ev)
        out: list[Alert] = []
        for c in plan.dnp3:
            if c.established is False:  # DNP3 messages are TCP data: past the handshake
                continue
            if c.event_names and not c.event_names.issubset(names):
                continue
            if c.dnp3 or c.dnp3_data is not None:
                if not tx:
                    continue
                if c.dnp3 and not all(dn.option_matches(o, ev) for o in c.dnp3):
                    continue
                if c.dnp3_data is not None and (ev.data is None or not c.dnp3_data.match(ev.data)):
                    continue
            elif not c.event_names and not tx:
                continue
            if c.conditions and not self._flowbits_ok(c, ev.uid):
                continue
            if c.is_pass:
                self._fire(c, ev.ts, ev.uid, ev.conn, ev.is_orig)
                break
            if self._fire(c, ev.ts, ev.uid, ev.conn, ev.is_orig):
                matched = tuple(n for n in names if n in c.event_names)
                alert = Alert(c.rule, ev.ts, ev.frame, ev.uid, ev.conn, ev.is_orig, KIND_APP)
                out.append(alert._replace(events=matched, ot=ev))
        return out if len(out) < 2 else _one_per_signature(out)

    def inspect_event(self, ev: Anomaly) -> list[Alert]:
        """A protocol event raised outside any message (framing error, non-Modbus bytes, the
        DNP3 link checker's ``dnp3.*`` events): ``dnp3`` rules see the DNP3 events, the
        other app rules the others."""
        plan = self.plans.get((ev.uid, ev.is_orig)) or self.plan(
            ev.uid, ev.conn, ev.is_orig, PROTO_TCP
        )
        proto, _, name = ev.name.partition(".")
        candidates = plan.dnp3 if proto == "dnp3" else plan.app_events
        if not candidates:
            return []
        out: list[Alert] = []
        for c in candidates:
            if c.dnp3 or c.dnp3_data is not None or not c.event_names:
                continue  # DNP3 keywords need a message (inspect_ot)
            if proto == "dnp3" and c.established is False:  # TCP data: past the handshake
                continue
            if c.modbus or name not in c.event_names or len(c.event_names) > 1:
                continue
            if c.conditions and not self._flowbits_ok(c, ev.uid):
                continue
            if c.is_pass:
                self._fire(c, ev.ts, ev.uid, ev.conn, ev.is_orig)
                break
            if self._fire(c, ev.ts, ev.uid, ev.conn, ev.is_orig):
                out.append(
                    Alert(
                        c.rule, ev.ts, ev.frame, ev.uid, ev.conn, ev.is_orig, KIND_APP, None, (ev,)
                    )
                )
        return out


def _one_per_signature(alerts: list[Alert]) -> list[Alert]:
    """A ``<>`` rule loads twice; both halves matching one event alert once."""
    seen: set[tuple[int, int]] = set()
    out = []
    for a in alerts:
        if a.rule.key not in seen:
            seen.add(a.rule.key)
            out.append(a)
    return out
