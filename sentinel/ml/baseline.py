"""Tier 1: the deterministic, explainable baseline, learned from clean traffic.

``Learner`` (a ``Tracker``) watches the training part of the captures and ``build()`` turns
what it saw into a *baseline*: plain data (dicts, lists, numbers, strings) that the model file
stores readably and the engine checks traffic against:

- **talkers**: which client talked Modbus to which server, which hosts opened connections to
  which server ports, and which decoder anomalies each pair produced;
- per **channel** (client, server, unit id): the function codes used, the addresses touched
  per table (as intervals), the *commands* (``tracker.command``) and the transitions between
  consecutive non-write commands on a connection (a first-order Markov chain whose support is
  the automaton of Goldenberg & Wool), the polling period and jitter, and the response
  latencies;
- per **register** (server, unit, table, address): its *class* and envelope:
  ``constant`` (one value), ``setpoint`` (changes only by writes), ``counter`` (only goes up,
  by bounded steps), ``analog`` (range and largest rate of change), or for coils and discrete
  inputs ``constant``/``varying``; and who wrote it.

Each check is *armed* only when the baseline says it can keep the false-alarm target:

- novelty checks (function, address, sequence) use the Good-Turing estimate of the chance
  that the next observation is new: items seen exactly once, per hour of training. With
  ``false_alarms_per_day`` 1 and 4 hours of training that means no singleton at all;
- the latency check alerts on ``k`` slow responses among the last ``n``; ``k`` is the
  smallest the binomial tail allows for the target, given how often a training response was
  slow; too few responses, or no such ``k``: not armed;
- a register's range check is armed only if its envelope learned on the first half of the
  training never failed on the second half (an envelope still growing, a slow daily cycle,
  needs a longer baseline); its rate-of-change check is always armed.

Calibration on a separate clean window (``sentinel.ml.train``) then disarms any check that
still fires there, so the numbers of the training report are the ones the detector runs with.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sentinel.events import Anomaly, ModbusMessage
from sentinel.findings import Finding
from sentinel.ml.rules import READ_FCS, WRITE_FCS
from sentinel.ml.settings import MLTrainSettings
from sentinel.ml.tracker import (
    ChannelKey,
    ChannelState,
    Command,
    Conn,
    Tracker,
    command_text,
)

MAX_SAMPLES = 200_000  # latency and inter-arrival samples kept per channel (then thinned)
MAX_REGISTERS = 65_536
DT_FLOOR = 1.0  # seconds: rates of change are per max(dt, DT_FLOOR)
# A counter only goes up (16-bit wrap allowed), by at least MIN_COUNTER_STEPS increments in
# all, and keeps counting: increments in at least half of the training's 10-minute periods
# (a fan speed that rose after a setpoint change and then held is not a counter).
MIN_COUNTER_STEPS = 20
COUNTER_SLOT = 600.0
BIT_TABLES = ("coils", "discretes")


def key_text(*parts: Any) -> str:
    """The key of a channel, pair or register in the model file: parts joined by ``|``."""
    return "|".join(str(p) for p in parts)


@dataclass
class ChannelLearn:
    requests: int = 0
    writes: int = 0
    first: float = 0.0
    last: float = 0.0
    functions: Counter[int] = field(default_factory=Counter)
    commands: Counter[Command] = field(default_factory=Counter)
    transitions: Counter[tuple[Command, Command]] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    inter_arrivals: list[float] = field(default_factory=list)
    windows: list[list[float]] = field(default_factory=list)
    window_ends: list[float] = field(default_factory=list)


@dataclass
class RegisterLearn:
    bits: bool
    reads: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    first_value: Any = None
    distinct: int = 0
    half_lo: float = math.inf  # envelope of the first half of the training
    half_hi: float = -math.inf
    half_pad: float | None = None
    excursions: int = 0  # second-half episodes outside the first half's widened envelope
    outside: bool = False
    prev: Any = None
    prev_ts: float = 0.0
    changes: int = 0
    explained: int = 0
    decreases: int = 0
    max_rate: float = 0.0  # largest |change| / max(dt, DT_FLOOR) between reads
    max_inc_rate: float = 0.0
    inc_slots: set[int] = field(default_factory=set)  # COUNTER_SLOT periods with increments
    writes: int = 0
    write_lo: float = math.inf
    write_hi: float = -math.inf
    write_half_lo: float = math.inf  # written values of the first half of the training
    write_half_hi: float = -math.inf
    write_excursions: int = 0  # second-half writes outside the first half's envelope
    writers: set[str] = field(default_factory=set)
    last_write: Any = None


class Learner(Tracker):
    """Learns the baseline from the training part of the traffic (see the module docstring)."""

    def __init__(self, settings: MLTrainSettings, midpoint: float, max_channels: int = 4096):
        # every response: unchanged reads count too
        super().__init__(
            settings.window_seconds, settings.hop_seconds, max_channels, call_response=True
        )
        self.settings = settings
        self.midpoint = midpoint  # packet time halfway through the training span
        self.learn: dict[ChannelKey, ChannelLearn] = {}
        self.registers: dict[tuple[str, int, str, int], RegisterLearn] = {}
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.flow_pairs: Counter[tuple[str, str, int]] = Counter()
        self.anomalies: Counter[tuple[str, str, str]] = Counter()
        self.flow_counts: Counter[tuple[str, int]] = Counter()  # (server, hop) -> connections
        self.start: float | None = None
        self.end: float = 0.0

    # ------------------------------------------------------------------ hooks
    def new_channel(self, ch: ChannelState, msg: ModbusMessage) -> list[Finding] | None:
        ch.extra = self.learn.setdefault(ch.key, ChannelLearn(first=msg.ts))
        return None

    def request(self, c: Conn, msg: ModbusMessage, cmd: Command, ts: float) -> list[Finding] | None:
        if self.start is None:
            self.start = ts
        self.end = ts
        lc: ChannelLearn = c.ch.extra
        lc.requests += 1
        lc.last = ts
        lc.functions[msg.fc] += 1
        lc.commands[cmd] += 1
        conn = msg.conn
        self.pairs[(conn.orig_h, conn.resp_h)] += 1
        if c.prev is None:  # a connection's first request: its flow may end after training
            self.flow_pairs[(conn.orig_h, conn.resp_h, conn.resp_p)] += 1
        if msg.fc in WRITE_FCS:
            lc.writes += 1
            self._write(conn.orig_h, conn.resp_h, msg, ts)
        elif c.prev is not None:
            lc.transitions[(c.prev, cmd)] += 1
        return None

    def response(
        self, c: Conn, msg: ModbusMessage, cmd: Command | None, ts: float
    ) -> list[Finding] | None:
        lat = msg.latency
        if lat is not None:
            _sample(c.ch.extra.latencies, lat)
        if cmd is not None and msg.exception is None and cmd[0] in READ_FCS:
            # reads whose values did not change still count as reads of their registers
            vals = msg.fields.get("values")
            slot = c.ch.slots.get(cmd)
            if vals and slot is not None and slot.vals == vals:
                self._reads_unchanged(c, cmd, vals, ts)
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
        server, unit = c.ch.key[1], c.ch.key[2]
        table = READ_FCS[cmd[0]]
        base = cmd[1] or 0
        ts = msg.ts
        for i, v in enumerate(vals):
            reg = self._register(server, unit, table, base + i)
            if reg is not None:
                self._read(reg, v, ts)
        return None

    def windows(self, closed: list[tuple[ChannelState, list[float]]], t_end: float) -> Any:
        for ch, raw in closed:
            lc: ChannelLearn = ch.extra
            lc.windows.append(raw)
            lc.window_ends.append(t_end)
            if raw[5] > 0:  # mean inter-arrival of the window (period / jitter report)
                _sample(lc.inter_arrivals, raw[6] / raw[5])
        return None

    def anomaly(self, event: Anomaly) -> list[Finding] | None:
        super().anomaly(event)
        self.anomalies[(event.conn.orig_h, event.conn.resp_h, event.name)] += 1
        return None

    def flow_end(self, record: dict[str, Any]) -> list[Finding] | None:
        try:
            key = (str(record["orig_h"]), str(record["resp_h"]), int(record["resp_p"]))
        except (KeyError, TypeError, ValueError):
            return None
        self.flow_pairs[key] += 1
        try:  # connections a server got per hop (by when they started)
            bucket = int(float(record["ts"]) // self.hop)
        except (KeyError, TypeError, ValueError):
            return None
        self.flow_counts[(key[1], bucket)] += 1
        return None

    # ------------------------------------------------------------------ registers
    def _register(self, server: str, unit: int, table: str, address: int) -> RegisterLearn | None:
        key = (server, unit, table, address)
        reg = self.registers.get(key)
        if reg is None:
            if len(self.registers) >= MAX_REGISTERS:
                return None
            reg = self.registers[key] = RegisterLearn(bits=table in BIT_TABLES)
        return reg

    def _reads_unchanged(self, c: Conn, cmd: Command, vals: list[Any], ts: float) -> None:
        server, unit = c.ch.key[1], c.ch.key[2]
        table = READ_FCS[cmd[0]]
        base = cmd[1] or 0
        for i, v in enumerate(vals):
            reg = self.registers.get((server, unit, table, base + i))
            if reg is not None:
                self._read(reg, v, ts)

    def _read(self, reg: RegisterLearn, value: Any, ts: float) -> None:
        v = float(value)
        reg.reads += 1
        if reg.first_value is None:
            reg.first_value = v
            reg.distinct = 1
        elif reg.distinct == 1 and v != reg.first_value:
            reg.distinct = 2
        reg.lo = min(reg.lo, v)
        reg.hi = max(reg.hi, v)
        if ts < self.midpoint:
            reg.half_lo = min(reg.half_lo, v)
            reg.half_hi = max(reg.half_hi, v)
        elif reg.half_lo <= reg.half_hi:
            if reg.half_pad is None:
                reg.half_pad = _pad(reg.half_lo, reg.half_hi, self.settings.sensor_margin)
            out = v < reg.half_lo - reg.half_pad or v > reg.half_hi + reg.half_pad
            if out and not reg.outside:
                reg.excursions += 1
            reg.outside = out
        if reg.prev is not None and v != reg.prev:
            reg.changes += 1
            lw = reg.last_write
            if lw is not None and float(lw) == v:
                reg.explained += 1
            else:
                rate = abs(v - reg.prev) / max(ts - reg.prev_ts, DT_FLOOR)
                reg.max_rate = max(reg.max_rate, rate)
                if v < reg.prev and not (reg.prev > 60000 and v < 5536):  # 16-bit wrap
                    reg.decreases += 1
                else:
                    inc = (v - reg.prev) % 65536
                    reg.max_inc_rate = max(reg.max_inc_rate, inc / max(ts - reg.prev_ts, DT_FLOOR))
                    if len(reg.inc_slots) < 100_000:
                        reg.inc_slots.add(int(ts // COUNTER_SLOT))
        reg.prev = v
        reg.prev_ts = ts
        reg.last_write = None

    def _write(self, client: str, server: str, msg: ModbusMessage, ts: float) -> None:
        fields = msg.fields
        address = fields.get("address")
        values = fields.get("values")
        if address is None or not values:
            return
        table = WRITE_FCS[msg.fc]
        for i, value in enumerate(values):
            reg = self._register(server, msg.unit, table, address + i)
            if reg is None:
                continue
            v = float(value)
            reg.writes += 1
            reg.writers.add(client)
            reg.write_lo = min(reg.write_lo, v)
            reg.write_hi = max(reg.write_hi, v)
            reg.last_write = v
            if ts < self.midpoint:
                reg.write_half_lo = min(reg.write_half_lo, v)
                reg.write_half_hi = max(reg.write_half_hi, v)
            elif reg.write_half_lo <= reg.write_half_hi:
                pad = _pad(reg.write_half_lo, reg.write_half_hi, self.settings.value_margin)
                if not reg.write_half_lo - pad <= v <= reg.write_half_hi + pad:
                    reg.write_excursions += 1
            else:
                reg.write_excursions += 1  # first written in the second half

    # ------------------------------------------------------------------ the baseline
    def build(
        self,
        limits: dict[tuple[str, str, int], tuple[int, int]],
        declared: set[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The baseline (plain data), with every check armed or not and why.

        ``limits`` are the config's safe limits of writable registers; ``declared`` the
        (master, device) pairs the config allows (``allowed_masters``): a declared master is
        not a new talker even if the training window never saw it (an engineering
        workstation that retunes a PLC once a week); its traffic is still checked against
        what the device's clients and the master itself did in the baseline."""
        s = self.settings
        start = self.start or 0.0
        hours = max((self.end - start) / 3600.0, 1e-9)
        budget = s.false_alarms_per_day / 24.0  # per hour
        channels: dict[str, Any] = {}
        for key, lc in sorted(self.learn.items()):
            channels[key_text(*key)] = self._channel(key, lc, hours, budget)
        writers: dict[tuple[str, int], set[str]] = {}
        registers: dict[str, Any] = {}
        for (server, unit, table, address), reg in sorted(self.registers.items()):
            registers[key_text(server, unit, table, address)] = _register_model(
                reg, table, limits.get((server, table, address)), s, hours
            )
            if reg.writers:
                writers.setdefault((server, unit), set()).update(reg.writers)
        flow_pairs = set(self.flow_pairs)
        declared = set(declared or ())
        for client, server in declared:  # a declared master may connect to the device's ports
            ports = {p for _o, r, p in self.flow_pairs if r == server} or {502}
            flow_pairs.update((client, server, p) for p in ports)
        return {
            "span": [start, self.end],
            "hours": round(hours, 6),
            "servers": self._servers(hours, budget),
            "clients": self._clients(hours, budget),
            "declared": sorted(key_text(c, srv) for c, srv in declared),
            "pairs": sorted(key_text(c, srv) for c, srv in self.pairs),
            "flow_pairs": sorted(key_text(*k) for k in flow_pairs),
            "anomalies": sorted(key_text(*k) for k in self.anomalies),
            "writers": {key_text(*k): sorted(v) for k, v in sorted(writers.items())},
            # the config's safe limits of writable registers (also of registers the traffic
            # never touched): what may be written there, whatever the baseline saw
            "limits": {key_text(*k): list(v) for k, v in sorted(limits.items())},
            "channels": channels,
            "registers": registers,
        }

    def _clients(self, hours: float, budget: float) -> dict[str, Any]:
        """Per client: what it did with all its servers together (a client's habits: the
        reference, with the server's, for a known client on a channel the baseline lacks)."""
        merged: dict[str, ChannelLearn] = {}
        for (client, _server, _unit), lc in self.learn.items():
            m = merged.setdefault(client, ChannelLearn())
            m.requests += lc.requests
            m.functions.update(lc.functions)
            m.commands.update(lc.commands)
        out: dict[str, Any] = {}
        for client, m in sorted(merged.items()):
            data = self._novelty(m, hours, budget, {})
            out[client] = {
                "client": client,
                "requests": m.requests,
                "functions": data["functions"],
                "addresses": data["addresses"],
            }
        return out

    def _servers(self, hours: float, budget: float) -> dict[str, Any]:
        """Per server and unit: what every baseline client together did (the reference for
        clients the baseline never saw), and the busiest window of requests and connections."""
        merged: dict[tuple[str, int], ChannelLearn] = {}
        load: Counter[tuple[str, float]] = Counter()
        for (_client, server, unit), lc in self.learn.items():
            m = merged.setdefault((server, unit), ChannelLearn())
            m.requests += lc.requests
            m.functions.update(lc.functions)
            m.commands.update(lc.commands)
            for raw, t_end in zip(lc.windows, lc.window_ends, strict=True):
                load[(server, t_end)] += raw[0]
        busiest: dict[str, float] = {}
        for (server, _t), n in load.items():
            busiest[server] = max(busiest.get(server, 0.0), n)
        conns: dict[str, int] = {}
        per_window: Counter[tuple[str, int]] = Counter()
        for (server, bucket), n in self.flow_counts.items():
            for b in range(bucket, bucket + self.nbuckets):  # windows holding this hop
                per_window[(server, b)] += n
        for (server, _b), n in per_window.items():
            conns[server] = max(conns.get(server, 0), n)
        out: dict[str, Any] = {}
        for (server, unit), m in sorted(merged.items()):
            notes: dict[str, str] = {}
            data = self._novelty(m, hours, budget, notes)
            out[key_text(server, unit)] = {
                "server": server,
                "unit": unit,
                "requests": m.requests,
                "functions": data["functions"],
                "addresses": data["addresses"],
                "armed": data["armed"],
                "notes": notes,
                "max_requests_per_window": busiest.get(server, 0.0),
                "max_connections_per_window": conns.get(server, 0),
            }
        return out

    def _novelty(
        self, lc: ChannelLearn, hours: float, budget: float, notes: dict[str, str]
    ) -> dict[str, Any]:
        """Function codes and address sets, and whether their novelty checks are armed."""
        armed: dict[str, bool] = {}
        singles = sum(1 for n in lc.functions.values() if n == 1)
        armed["function"] = _novelty_ok("function", singles, lc.requests, hours, budget, notes)
        coverage: Counter[tuple[str, int]] = Counter()
        intervals: dict[str, list[list[int]]] = {}
        for cmd, n in lc.commands.items():
            span = _command_span(cmd)
            if span is None:
                continue
            table, lo, hi = span
            intervals.setdefault(table, []).append([lo, hi])
            if hi - lo <= 2000:
                for a in range(lo, hi):
                    coverage[(table, a)] += n
        singles = sum(1 for n in coverage.values() if n == 1)
        armed["address"] = _novelty_ok("address", singles, lc.requests, hours, budget, notes)
        return {
            "functions": {str(k): v for k, v in sorted(lc.functions.items())},
            "addresses": {t: _merge(iv) for t, iv in sorted(intervals.items())},
            "armed": armed,
        }

    def _channel(
        self, key: ChannelKey, lc: ChannelLearn, hours: float, budget: float
    ) -> dict[str, Any]:
        s = self.settings
        notes: dict[str, str] = {}
        novelty = self._novelty(lc, hours, budget, notes)
        armed: dict[str, bool] = novelty["armed"]
        # sequence: transitions between consecutive non-write commands on a connection
        total = sum(lc.transitions.values())
        singles = sum(1 for n in lc.transitions.values() if n == 1)
        armed["sequence"] = _novelty_ok("sequence", singles, total, hours, budget, notes)
        latency = _latency_model(lc.latencies, lc, s, budget, notes)
        armed["latency"] = latency is not None
        period = None
        if lc.inter_arrivals:
            ia = sorted(lc.inter_arrivals)
            med = ia[len(ia) // 2]
            mad = sorted(abs(x - med) for x in ia)[len(ia) // 2]
            period = {"median_s": round(med, 6), "mad_s": round(mad, 6)}
        active_windows = sum(1 for w in lc.windows if w[0] > 0)
        return {
            "client": key[0],
            "server": key[1],
            "unit": key[2],
            "requests": lc.requests,
            "writes": lc.writes,
            "first": lc.first,
            "last": lc.last,
            "windows": active_windows,
            "functions": novelty["functions"],
            "addresses": novelty["addresses"],
            "commands": {command_text(k): v for k, v in sorted(lc.commands.items(), key=_ck)},
            "transitions": sorted(
                [command_text(a), command_text(b), n] for (a, b), n in lc.transitions.items()
            ),
            "period": period,
            "latency": latency,
            "armed": armed,
            "notes": notes,
            "scorer": False,
        }


def _ck(item: tuple[Command, int]) -> tuple:
    return tuple(-1 if v is None else v for v in item[0])


def _sample(samples: list[float], value: float) -> None:
    samples.append(value)
    if len(samples) >= MAX_SAMPLES:
        del samples[::2]  # thin evenly: the distribution keeps its shape


def _novelty_ok(
    name: str, singles: int, observations: int, hours: float, budget: float, notes: dict
) -> bool:
    if observations < 20:
        notes[name] = f"not armed: {observations} observations (at least 20 needed)"
        return False
    rate = singles / hours
    if rate > budget:
        notes[name] = (
            f"not armed: {singles} item(s) seen only once in {hours:.2f} h of training "
            f"(Good-Turing: {rate:.2f} new per hour, target {budget:.3f})"
        )
        return False
    return True


def _latency_model(
    samples: list[float], lc: ChannelLearn, s: MLTrainSettings, budget: float, notes: dict
) -> dict[str, Any] | None:
    n = len(samples)
    if n < s.min_latency_samples:
        notes["latency"] = f"not armed: {n} latency samples (at least {s.min_latency_samples})"
        return None
    ordered = sorted(samples)
    threshold = ordered[min(n - 1, int(s.latency_quantile * n))]
    p50 = ordered[n // 2]
    threshold = max(threshold, 1.2 * p50)
    slow = sum(1 for x in samples if x > threshold)
    p = max(slow / n, 1.0 / n)  # never assume a slow response impossible
    hours_active = max((lc.last - lc.first) / 3600.0, 1e-9)
    per_hour = n / hours_active
    k = None
    for kk in range(1, s.latency_n + 1):
        if per_hour * _binom_tail(s.latency_n, kk, p) <= budget:
            k = kk
            break
    if k is None:
        notes["latency"] = f"not armed: slow responses too common ({100 * p:.2f} %)"
        return None
    return {
        "p50": p50,
        "p99": ordered[min(n - 1, int(0.99 * n))],
        "threshold": threshold,
        "p_slow": p,
        "k": k,
        "n": s.latency_n,
        "samples": n,
    }


def _binom_tail(n: int, k: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _command_span(cmd: Command) -> tuple[str, int, int] | None:
    fc, a, b = cmd
    table = READ_FCS.get(fc) or WRITE_FCS.get(fc)
    if table is None or a is None:
        return None
    if fc == 23:
        return None  # read and write ranges: the write range is not in the command
    quantity = b if isinstance(b, int) and b > 0 else 1
    return table, int(a), int(a) + min(quantity, 65536)


def _merge(intervals: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def _pad(lo: float, hi: float, margin: float) -> float:
    return max(margin * (hi - lo), 1.0 + 0.02 * max(abs(lo), abs(hi)))


def _register_model(
    reg: RegisterLearn,
    table: str,
    limit: tuple[int, int] | None,
    s: MLTrainSettings,
    hours: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {"reads": reg.reads, "writes": reg.writes}
    if reg.writers:
        out["writers"] = sorted(reg.writers)
    lo = min(reg.lo, reg.write_lo)
    hi = max(reg.hi, reg.write_hi)
    if lo > hi:  # written, never read
        out["class"] = "setpoint"
    elif reg.bits:
        out["class"] = "constant" if reg.distinct == 1 and reg.writes == 0 else "varying"
        out["value"] = reg.first_value
    elif reg.distinct == 1 and reg.writes == 0:
        out["class"] = "constant"
        out["value"] = reg.first_value
    elif reg.changes == reg.explained:
        out["class"] = "setpoint"
    elif (
        reg.decreases == 0
        and reg.changes - reg.explained >= MIN_COUNTER_STEPS
        and len(reg.inc_slots) >= 0.5 * hours * 3600.0 / COUNTER_SLOT
    ):
        out["class"] = "counter"
        out["max_inc_rate"] = reg.max_inc_rate
    else:
        out["class"] = "analog"
        out["max_rate"] = reg.max_rate
        enough = hours >= s.min_sensor_hours
        out["range_armed"] = reg.excursions == 0 and reg.reads >= 100 and enough
        out["rate_armed"] = enough and reg.reads >= 100
        if not enough:
            out["note"] = (
                f"sensor checks not armed: {hours:.1f} h of training "
                f"(at least {s.min_sensor_hours:g} h)"
            )
        elif reg.reads < 100:
            out["note"] = f"sensor checks not armed: {reg.reads} reads"
        elif not out["range_armed"]:
            out["note"] = (
                f"range check not armed: {reg.excursions} excursion(s) of the second half of "
                "the training outside the envelope of its first half"
            )
        pad = _pad(reg.lo, reg.hi, s.sensor_margin)
        out["min"], out["max"] = reg.lo, reg.hi
        out["envelope"] = [reg.lo - pad, reg.hi + pad]
    if table in ("input", "discretes") and out["class"] == "constant":
        # read-only process data: nobody writes it, so a change is a process event (a bank
        # changeover after a day), a sensor check that needs a day of training
        out["sensor"] = True
        out["constant_armed"] = hours >= s.min_sensor_hours
        if not out["constant_armed"]:
            out["note"] = (
                f"constant check not armed: {hours:.1f} h of training "
                f"(at least {s.min_sensor_hours:g} h for process data)"
            )
    if reg.bits:
        return out
    # what may be written there
    if reg.writes >= s.min_writes and reg.write_excursions == 0 and lo <= hi:
        pad = _pad(lo, hi, s.value_margin)
        w_lo, w_hi = lo - pad, hi + pad
        if limit is not None:  # never beyond the config's safe limits
            w_lo, w_hi = max(w_lo, limit[0]), min(w_hi, limit[1])
        out["write_envelope"] = [w_lo, w_hi]
        out["write_envelope_from"] = "learned"
    elif limit is not None:
        out["write_envelope"] = [float(limit[0]), float(limit[1])]
        out["write_envelope_from"] = "config limits"
    if out["class"] != "analog" and lo <= hi:
        out["min"], out["max"] = lo, hi
    return out
