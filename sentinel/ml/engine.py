"""Scoring: traffic checked against a trained model, as the pipeline streams it.

``Engine`` (a ``Tracker``) runs both tiers for every event and returns ``Finding``s:

Tier 1, deterministic and immediate (rule ids in ``sentinel.ml.rules``):

- a Modbus client never seen with a server (new talker), a unit id never used on a pair, a
  connection between hosts (or to a port) never seen, a decoder anomaly never seen on a pair;
- on a channel of the baseline, with the checks the baseline armed: a function code never
  used, an address outside the learned address set, a transition between consecutive
  commands that the Markov chain never saw, and ``k`` of the last ``n`` responses slower than
  the learned latency threshold (a man in the middle adds delay);
- on any channel, known or not, per register: a written value outside the register's
  envelope; a read value that breaks the register's class (a constant or setpoint that
  changed without a write from a baseline writer, a counter that went back or jumped, an
  analog value outside its range or moving faster than ever); a write identical to one
  already sent (same transaction id, function, address and values: a replay).

Tier 2, per window of ``window_seconds`` every ``hop_seconds``: a window of a channel with a
scorer is anomalous when its score is below the calibrated threshold or a feature leaves its
envelope, and a channel alerts when ``k`` of its last ``n`` windows are anomalous (once per
episode). For isolation forests, a lower bound of the score (``scorer.ForestBounds``: the
channel's lowest possible score, or the bound from the trees' roots) decides most windows;
the others are scored all channels at once (``scorer.CompiledForest``), and a window that
raises a finding is always scored, for its explanation.

Every finding explains itself in ``evidence``: the check, the channel, and what was observed
against what the baseline holds (the learned set, the envelope, the transitions that follow
the previous command, the features that deviated with their baseline range).

A novelty already reported for the same channel and item is not reported again within
``realert_seconds``; every table is bounded by ``max_entries``.
"""

from __future__ import annotations

import bisect
import math
from operator import gt as _gt
from operator import lt as _lt
from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from sentinel.events import Anomaly, ConnId, ModbusMessage
from sentinel.findings import Finding, Technique
from sentinel.ml import rules as R
from sentinel.ml.model import Model
from sentinel.ml.rules import READ_FCS, WRITE_FCS, technique_for_function
from sentinel.ml.settings import MLSettings
from sentinel.ml.tracker import (
    ChannelKey,
    ChannelState,
    Command,
    Conn,
    Tracker,
    command_text,
    parse_command,
)
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
)

DT_FLOOR = 1.0  # as in baseline.py
FLOOR_MARGIN = 1e-9  # rounding of the scores' sums, many orders of magnitude over
CONSTANT, SETPOINT, COUNTER, ANALOG, VARYING = range(5)
CLASSES = {
    "constant": CONSTANT,
    "setpoint": SETPOINT,
    "counter": COUNTER,
    "analog": ANALOG,
    "varying": VARYING,
}
CLASS_NAMES = {v: k for k, v in CLASSES.items()}
_log = math.log


class RegisterSpec:
    """What the baseline says about one register (see ``baseline._register_model``)."""

    __slots__ = (
        "env_hi",
        "env_lo",
        "key",
        "kind",
        "range_armed",
        "rate",
        "rate_armed",
        "sensor",
        "value",
        "w_hi",
        "w_lo",
    )

    def __init__(self, key: tuple[str, int, str, int], data: dict[str, Any]) -> None:
        self.key = key
        self.kind = CLASSES.get(str(data.get("class")), VARYING)
        env = data.get("envelope")  # sensors: the range of what is read
        self.env_lo = float(env[0]) if env else -math.inf
        self.env_hi = float(env[1]) if env else math.inf
        env = data.get("write_envelope")  # what may be written (and so read, for setpoints)
        self.w_lo = float(env[0]) if env else -math.inf
        self.w_hi = float(env[1]) if env else math.inf
        self.value = data.get("value")
        self.range_armed = bool(data.get("range_armed", False))
        self.rate_armed = bool(data.get("rate_armed", False))
        rate = data.get("max_rate") if self.kind == ANALOG else data.get("max_inc_rate")
        self.rate = float(rate) if rate is not None else math.inf
        self.sensor = bool(data.get("sensor", False))  # read-only process data
        if self.sensor and self.kind == CONSTANT and not data.get("constant_armed", False):
            self.kind = VARYING  # not enough training to call a process value constant
        if not self.rate_armed and self.kind == ANALOG:
            self.rate = math.inf
            if not self.range_armed:
                self.kind = VARYING  # nothing to check


class ChannelModel:
    """A baseline channel, in the shape the checks need."""

    __slots__ = (
        "checks",
        "commands",
        "data",
        "functions",
        "intervals",
        "known",
        "lat_k",
        "lat_mask",
        "lat_threshold",
        "ok_commands",
        "rate",
        "scorer",
        "server",
        "successors",
        "transitions",
        "wrote",
    )

    def __init__(self, data: dict[str, Any] | None, explain: bool = False) -> None:
        """``explain``: use the function and address sets even where the baseline did not
        arm them (the reference of a new talker's channel, already reported: the checks
        then only say what it did that nobody did)."""
        self.data = data
        self.known = data is not None
        # command -> (value index, register) of the values it reads that have checks
        self.checks: dict[Command, list[tuple[int, RegisterSpec]]] = {}
        self.scorer: int | None = None
        self.functions: set[int] | None = None
        self.intervals: dict[str, tuple[list[int], list[int]]] | None = None
        self.transitions: set[tuple[Command, Command]] | None = None
        self.successors: dict[Command, list[str]] = {}
        self.ok_commands: set[Command] = set()
        self.commands: set[Command] = set()
        self.lat_threshold = math.inf
        self.lat_k = 0
        self.lat_mask = 0
        self.wrote = False
        self.server: ChannelModel | None = None  # unknown channels: the server's baseline
        self.rate = [0, 0, 0]  # hop index, requests in that hop, in the hop before
        if data is None:
            return
        armed = data.get("armed", {})
        self.wrote = int(data.get("writes", 0)) > 0
        self.commands = {parse_command(k) for k in data.get("commands", {})}
        if armed.get("function") or explain:
            self.functions = {int(k) for k in data.get("functions", {})}
        if armed.get("address") or explain:
            self.intervals = {
                table: ([int(a) for a, _ in iv], [int(b) for _, b in iv])
                for table, iv in data.get("addresses", {}).items()
            }
        if armed.get("sequence"):
            self.transitions = set()
            for a, b, _n in data.get("transitions", []):
                pa, pb = parse_command(a), parse_command(b)
                self.transitions.add((pa, pb))
                self.successors.setdefault(pa, []).append(b)
        lat = data.get("latency")
        if armed.get("latency") and lat:
            self.lat_threshold = float(lat["threshold"])
            self.lat_k = int(lat["k"])
            self.lat_mask = (1 << int(lat["n"])) - 1

    def covered(self, table: str, lo: int, hi: int) -> bool | None:
        """Whether [lo, hi) is inside the learned addresses of ``table`` (None: not armed)."""
        if self.intervals is None:
            return None
        iv = self.intervals.get(table)
        if iv is None:
            return False
        starts, ends = iv
        i = bisect.bisect_right(starts, lo) - 1
        return i >= 0 and ends[i] >= hi


class ScorerRuntime:
    """One channel's calibrated scorer, flattened to Python lists for per-window scoring."""

    __slots__ = (
        "bounds",
        "center",
        "debounce_k",
        "decides",
        "fill",
        "high",
        "key",
        "low",
        "ref_ia",
        "ref_lat",
        "row",
        "scale",
        "scorer",
        "threshold",
        "window",
    )

    def __init__(self, key: str, scorer: Any, row: int, window: float, k: int) -> None:
        f = scorer.features_
        self.key = key
        self.scorer = scorer
        self.row = row
        self.window = window
        self.ref_ia = float(f.ref_ia_)
        self.ref_lat = float(f.ref_lat_)
        self.fill = [float(x) for x in f.fill_]
        self.center = [float(x) for x in scorer.scaler_.center_]
        self.scale = [float(x) for x in scorer.scaler_.scale_]
        self.low = [float(x) for x in scorer.low_]
        self.high = [float(x) for x in scorer.high_]
        self.threshold = float(scorer.threshold_)
        self.debounce_k = k
        # Isolation forests: whether the score can decide a window at all (not when the
        # threshold is below every score the forest can give; calibration to a false alarm
        # a day often puts it there), and a bound of each window's score from the roots of
        # the trees (``scorer.ForestBounds``). A window whose bound is above the threshold
        # is decided by its envelopes alone, with the same result, and scored only to
        # explain a finding.
        from sentinel.ml.scorer import forest_bounds

        self.bounds = forest_bounds(scorer.estimator_)
        self.decides = self.bounds is None or self.bounds.floor - FLOOR_MARGIN <= self.threshold

    def features(self, raw: list[float]) -> list[float]:
        """``WindowFeatures.transform`` of one raw window, in plain Python (tested equal)."""
        fill = self.fill
        n_req = raw[N_REQ]
        n_resp = raw[N_RESP]
        n_ia = raw[N_IA]
        n_lat = raw[N_LAT]
        n_val = raw[N_VAL]
        out = [n_req / self.window]
        if n_req > 0:
            out += [n_resp / n_req, raw[N_WRITE] / n_req, raw[N_OTHER] / n_req]
        else:
            out += fill[1:4]
        out.append(raw[N_EXC] / n_resp if n_resp > 0 else fill[4])
        if n_ia > 0:
            mean_ia = raw[S_IA] / n_ia
            out.append(_log(max(mean_ia, 1e-6) / self.ref_ia))
            if n_ia > 1:
                var = raw[S_IA2] / n_ia - mean_ia * mean_ia
                out.append(math.sqrt(max(var, 0.0)) / max(mean_ia, 1e-6))
            else:
                out.append(fill[6])
            out.append(_log(max(raw[MAX_IA], 1e-6) / self.ref_ia))
        else:
            out += fill[5:8]
        if n_lat > 0:
            out.append(_log(max(raw[S_LAT] / n_lat, 1e-7) / self.ref_lat))
            out.append(_log(max(raw[MAX_LAT], 1e-7) / self.ref_lat))
        else:
            out += fill[8:10]
        span = raw[ADDR_HI] - raw[ADDR_LO]
        out.append(math.log1p(span) if span >= 0 else fill[10])
        out.append(raw[N_CHG] / n_val if n_val > 0 else fill[11])
        return out


# subclassed by interpreted code (the learner, the calibration engine) when compiled
@mypyc_attr(allow_interpreted_subclasses=True)
class Engine(Tracker):
    """Checks traffic against ``model`` (see the module docstring)."""

    def __init__(self, model: Model, settings: MLSettings | None = None) -> None:
        settings = settings or MLSettings()
        train = model.settings
        super().__init__(train.window_seconds, train.hop_seconds, settings.max_channels)
        self.model = model
        self.settings = settings
        self.max_entries = settings.max_entries
        self.realert = settings.realert_seconds
        self.replay_seconds = settings.replay_seconds
        self.debounce_k = train.debounce_k
        self.debounce_n = train.debounce_n
        self.step_factor = train.step_factor
        b = model.baseline
        self.pairs = {tuple(p.split("|")) for p in b.get("pairs", [])}
        self.declared = {tuple(p.split("|")) for p in b.get("declared", [])}
        self.clients = {c["client"]: c for c in b.get("clients", {}).values()}
        self.flow_pairs: set[tuple[str, str, int]] = set()
        self.flow_hosts: set[tuple[str, str]] = set()
        for p in b.get("flow_pairs", []):
            o, r, port = p.split("|")
            self.flow_pairs.add((o, r, int(port)))
            self.flow_hosts.add((o, r))
        self.flow_hosts |= self.pairs | self.declared  # type: ignore[arg-type]
        self.hosts = {h for pair in self.flow_hosts for h in pair}
        self.clients_of: dict[str, list[str]] = {}
        for c, s in sorted(self.pairs):  # type: ignore[misc]
            self.clients_of.setdefault(s, []).append(c)
        self.anomaly_keys = {tuple(a.split("|")) for a in b.get("anomalies", [])}
        self.writers: dict[tuple[str, int], set[str]] = {}
        for k, clients in b.get("writers", {}).items():
            server, unit = k.split("|")
            self.writers[(server, int(unit))] = set(clients)
        self.site_writers = {w for ws in self.writers.values() for w in ws}
        self.limits: dict[tuple[str, str, int], tuple[float, float]] = {}
        for k, (lo, hi) in b.get("limits", {}).items():
            server, table, address = k.split("|")
            self.limits[(server, table, int(address))] = (float(lo), float(hi))
        self.registers: dict[tuple[str, int, str, int], RegisterSpec] = {}
        for k, data in b.get("registers", {}).items():
            server, unit, table, address = k.split("|")
            reg = (server, int(unit), table, int(address))
            self.registers[reg] = RegisterSpec(reg, data)
        self.servers: dict[tuple[str, int], dict[str, Any]] = {}
        self.server_load: dict[str, tuple[float, int]] = {}
        for data in b.get("servers", {}).values():
            self.servers[(data["server"], int(data["unit"]))] = data
            self.server_load[data["server"]] = (
                float(data.get("max_requests_per_window", 0.0)),
                int(data.get("max_connections_per_window", 0)),
            )
        self.server_models: dict[ChannelKey, ChannelModel] = {}
        self.conn_rate: dict[tuple[str, str], list[int]] = {}
        self.channel_data: dict[ChannelKey, dict[str, Any]] = {}
        for data in b.get("channels", {}).values():
            self.channel_data[(data["client"], data["server"], int(data["unit"]))] = data
        # tier 2
        self.runtimes: dict[ChannelKey, ScorerRuntime] = {}
        forests: list[Any] = []
        for key_text_, scorer in sorted(model.scorers.items()):
            client, server, unit = key_text_.split("|")
            key = (client, server, int(unit))
            rt = ScorerRuntime(
                key_text_, scorer, len(forests), train.window_seconds, train.debounce_k
            )
            self.runtimes[key] = rt
            forests.append(scorer.estimator_)
        self.forest = None
        if forests and train.estimator == "isolation_forest":
            from sentinel.ml.scorer import CompiledForest

            self.forest = CompiledForest(forests)
        # windows whose score was computed, and those decided by ``ForestBounds`` alone
        self.stats["windows_scored"] = 0
        self.stats["windows_bounded"] = 0
        # bounded tables
        self.reported: dict[tuple, float] = {}
        self.last_write: dict[tuple[str, int, str, int], tuple[float, str, bool, float]] = {}
        self.fingerprints: dict[tuple, tuple[str, str, float]] = {}
        self.reg_seen: dict[tuple[str, int, str, int], float] = {}  # last value any reader saw

    # ------------------------------------------------------------------ helpers
    def windowed(self, key: ChannelKey) -> bool:
        return key in self.runtimes

    def _once(self, key: tuple, ts: float) -> bool:
        """Whether an occurrence of novelty ``key`` starts a new episode: it is reported when
        first seen, and again only after it was absent for ``realert_seconds`` (a rogue
        master that keeps polling is one alert; the same host back minutes later, another)."""
        last = self.reported.get(key)
        if last is None and len(self.reported) >= self.max_entries:
            _trim(self.reported)
        self.reported[key] = ts
        return last is None or ts - last > self.realert

    def _ongoing(self, key: tuple, ts: float) -> bool:
        """Whether novelty ``key`` is in an episode (seen within ``realert_seconds``)."""
        last = self.reported.get(key)
        return last is not None and ts - last <= self.realert

    def _finding(
        self,
        rule: R.Rule,
        ts: float,
        conn: ConnId | None,
        message: str,
        evidence: dict[str, Any],
        uid: str | None = None,
        frame: int | None = None,
        technique: Technique | None = None,
        severity: str | None = None,
        protocol: str = "modbus",
        transport: str = "tcp",
    ) -> Finding:
        return Finding(
            ts=ts,
            rule_id=rule.rule_id,
            rule_name=rule.name,
            ruleset=R.RULESET,
            severity=severity or rule.severity,
            technique=technique or rule.technique,
            message=message,
            detector=R.DETECTOR_ID,
            conn=conn,
            uid=uid,
            transport=transport,
            protocol=protocol,
            dataset=f"sentinel.{protocol}",
            frame=frame,
            evidence=evidence,
        )

    @staticmethod
    def _channel_evidence(key: ChannelKey) -> dict[str, Any]:
        return {"client": key[0], "server": key[1], "unit": key[2]}

    # ------------------------------------------------------------------ tier 1: talkers
    def new_channel(self, ch: ChannelState, msg: ModbusMessage) -> list[Finding] | None:
        key = ch.key
        model = ChannelModel(self.channel_data.get(key))
        ch.extra = model
        rt = self.runtimes.get(key)
        if rt is not None:
            model.scorer = rt.row
        ch.watch = set()
        if not model.known:
            model.server = self._reference(key)
        if model.known:
            ch.verified = True  # verified (previous, command) transitions skip the hook
            ch.lat_thr = model.lat_threshold
            ch.lat_mask = model.lat_mask
            ch.lat_k = model.lat_k
        return None

    def _reference(self, key: ChannelKey) -> ChannelModel | None:
        """What a channel the baseline lacks is checked against: what every baseline client
        did with the server and unit, widened by what the client itself did elsewhere."""
        ref = self.server_models.get(key)
        if ref is not None:
            return ref
        client, server, unit = key
        sdata = self.servers.get((server, unit))
        if sdata is None:
            return None
        new_talker = (client, server) not in self.pairs and (client, server) not in self.declared
        ref = ChannelModel(sdata, explain=new_talker)
        cdata = self.clients.get(client)
        if cdata is not None:
            if ref.functions is not None:
                ref.functions |= {int(f) for f in cdata.get("functions", {})}
            if ref.intervals is not None:
                for table, iv in cdata.get("addresses", {}).items():
                    starts, ends = ref.intervals.get(table, ([], []))
                    merged = _merge_intervals([*zip(starts, ends, strict=True), *iv])
                    ref.intervals[table] = ([a for a, _ in merged], [z for _, z in merged])
        if len(self.server_models) < self.max_entries:
            self.server_models[key] = ref
        return ref

    def _talker(self, c: Conn, msg: ModbusMessage, ts: float) -> list[Finding] | None:
        """A request on a channel the baseline does not have: a new talker or unit id."""
        key = c.ch.key
        client, server, unit = key
        if (client, server) not in self.pairs and (client, server) not in self.declared:
            if not self._once(("talker", client, server), ts):
                return None
            known = self.clients_of.get(server, [])
            return [
                self._finding(
                    R.NEW_TALKER,
                    ts,
                    msg.conn,
                    f"{client} sent Modbus to {server} (unit {unit}, function {msg.fc}); in "
                    f"the baseline only {', '.join(known) or 'nobody'} did"
                    + ("" if client in self.hosts else f"; {client} is a host never seen before"),
                    {
                        "check": "talker",
                        "channel": self._channel_evidence(key),
                        "function": msg.fc,
                        "baseline_clients": known,
                        "host_known": client in self.hosts,
                    },
                    uid=msg.uid,
                    frame=msg.frame,
                )
            ]
        return None

    def _unit(self, c: Conn, msg: ModbusMessage, ts: float) -> list[Finding] | None:
        """A unit id that no baseline client used with the server (or this client never did)."""
        key = c.ch.key
        client, server, unit = key
        served = sorted(u for s, u in self.servers if s == server)
        if (server, unit) in self.servers:
            if (client, server) not in self.pairs:
                return None  # a new (or declared) talker, to a unit the server serves
            mine = sorted(k[2] for k in self.channel_data if k[0] == client and k[1] == server)
            what = f"{client} never used it with {server} (it used {_codes(set(mine))})"
        else:
            what = f"{server} served only unit(s) {_codes(set(served))} in the baseline"
        if not self._once(("unit", client, server, unit), ts):
            return None
        return [
            self._finding(
                R.NEW_UNIT,
                ts,
                msg.conn,
                f"{client} addressed unit {unit} of {server}; {what}",
                {
                    "check": "unit",
                    "channel": self._channel_evidence(key),
                    "baseline_units": served,
                },
                uid=msg.uid,
                frame=msg.frame,
            )
        ]

    def flow_end(self, record: dict[str, Any]) -> list[Finding] | None:
        try:
            orig, resp, port = str(record["orig_h"]), str(record["resp_h"]), int(record["resp_p"])
            # when the flow ended: its last packet, or later (the clock of the last event)
            ts = max(self.clock, float(record.get("last_ts") or record.get("ts") or 0.0))
            start = float(record.get("ts") or ts)
        except (KeyError, TypeError, ValueError):
            return None
        out = self._connection_burst(orig, resp, start, ts, record)
        if (orig, resp, port) in self.flow_pairs:
            return out
        found = self._new_connection(orig, resp, port, ts, record)
        if found:
            out = (out or []) + found
        return out

    def _connection_burst(
        self, orig: str, resp: str, start: float, ts: float, record: dict[str, Any]
    ) -> list[Finding] | None:
        """Connections from one client to one server, counted by when they started."""
        load = self.server_load.get(resp)
        limit = max(2 * (load[1] if load else 0), (load[1] if load else 0) + 10)
        rate = self.conn_rate.get((orig, resp))
        if rate is None:
            if len(self.conn_rate) >= self.max_entries:
                _trim(self.conn_rate)
            rate = self.conn_rate[(orig, resp)] = [0, 0, 0]
        hop = int(start // self.hop)
        if hop > rate[0]:
            rate[2] = rate[1] if hop == rate[0] + 1 else 0
            rate[0], rate[1] = hop, 0
        elif hop < rate[0] - 1:
            return None  # late: a long flow that started well before
        if hop == rate[0]:
            rate[1] += 1
        else:
            rate[2] += 1
        n = rate[1] + rate[2]
        if n <= limit or not self._once(("connection_burst", orig, resp), ts):
            return None
        return [
            self._finding(
                R.CONNECTION_BURST,
                ts,
                ConnId(orig, int(record.get("orig_p") or 0), resp, int(record["resp_p"])),
                f"{orig} opened {n} connections to {resp} within {2 * self.hop:g} s; "
                f"{resp} never got more than {load[1] if load else 0} in {self.window:g} s "
                "in the baseline",
                {
                    "check": "connection_burst",
                    "connections": n,
                    "seconds": 2 * self.hop,
                    "baseline_max_per_window": load[1] if load else 0,
                    "conn_state": record.get("conn_state"),
                },
                uid=record.get("uid"),
                protocol="tcp",
                transport=str(record.get("proto") or "tcp"),
            )
        ]

    def _new_connection(
        self, orig: str, resp: str, port: int, ts: float, record: dict[str, Any]
    ) -> list[Finding] | None:
        new_pair = (orig, resp) not in self.flow_hosts
        if new_pair:
            if self._ongoing(("talker", orig, resp), ts) or not self._once(
                ("host", orig, resp), ts
            ):
                return None
        elif not self._once(("port", orig, resp, port), ts):
            return None
        conn = ConnId(orig, int(record.get("orig_p") or 0), resp, port)
        what = (
            f"{orig} connected to {resp}:{port}; the two never talked in the baseline"
            if new_pair
            else f"{orig} connected to {resp}:{port}, a port it never used with {resp}"
        )
        return [
            self._finding(
                R.NEW_CONNECTION,
                ts,
                conn,
                what,
                {
                    "check": "connection",
                    "new_pair": new_pair,
                    "port": port,
                    "conn_state": record.get("conn_state"),
                    "history": record.get("history"),
                    "flow_start": record.get("ts"),
                    "host_known": orig in self.hosts,
                },
                uid=record.get("uid"),
                protocol=str(record.get("service") or "tcp") if record.get("service") else "tcp",
                transport=str(record.get("proto") or "tcp"),
            )
        ]

    def anomaly(self, event: Anomaly) -> list[Finding] | None:
        super().anomaly(event)
        c = event.conn
        if (c.orig_h, c.resp_h, event.name) in self.anomaly_keys:
            return None
        if not self._once(("anomaly", c.orig_h, c.resp_h, event.name), event.ts):
            return None
        return [
            self._finding(
                R.NEW_ANOMALY,
                event.ts,
                c,
                f"{event.name} between {c.orig_h} and {c.resp_h}: never seen on this pair in "
                "the baseline",
                {"check": "anomaly", "anomaly": event.name, "detail": event.detail[:200]},
                uid=event.uid,
                frame=event.frame,
            )
        ]

    # ------------------------------------------------------------------ tier 1: requests
    def request(self, c: Conn, msg: ModbusMessage, cmd: Command, ts: float) -> list[Finding] | None:
        m: ChannelModel = c.ch.extra
        fc = cmd[0]
        out: list[Finding] | None = None
        if not m.known:
            out = self._talker(c, msg, ts)
            found = self._unit(c, msg, ts)
            if found:
                out = (out or []) + found
            found = self._unknown_channel(c, m, msg, cmd, ts)
            if found:
                out = (out or []) + found
        elif cmd not in m.ok_commands:
            out = self._novel_command(c, m, msg, cmd, ts)
        if fc in WRITE_FCS:
            found = self._write(c, m, msg, ts)
            if found:
                out = (out or []) + found
            return out
        prev = c.prev
        if m.transitions is not None and prev is not None and (prev, cmd) not in m.transitions:
            f = self._transition(c, m, msg, prev, cmd, ts)
            if f is not None:
                out = (out or []) + [f]
        elif m.known and cmd in m.ok_commands:
            self.verify(c)  # nothing to check the next time it follows the same command
        return out

    def _unknown_channel(
        self, c: Conn, m: ChannelModel, msg: ModbusMessage, cmd: Command, ts: float
    ) -> list[Finding] | None:
        """A channel the baseline does not have: its commands against what every baseline
        client did with the server, and its request rate against the server's busiest window."""
        out: list[Finding] | None = None
        server = m.server
        if server is not None and cmd not in server.ok_commands:
            out = self._novel_command(c, server, msg, cmd, ts, scope="server")
        rate = m.rate
        hop = int(ts // self.hop)
        if hop != rate[0]:
            rate[2] = rate[1] if hop == rate[0] + 1 else 0
            rate[0], rate[1] = hop, 0
        rate[1] += 1
        load = self.server_load.get(c.ch.key[1])
        if load is not None:
            limit = max(2.0 * load[0], load[0] + 20.0) * self.hop / self.window
            n = rate[1] + rate[2]
            if n > 2 * limit and self._once(("burst", c.ch.key), ts):
                key = c.ch.key
                f = self._finding(
                    R.REQUEST_BURST,
                    ts,
                    msg.conn,
                    f"{key[0]} sent {n} requests to {key[1]} unit {key[2]} within "
                    f"{2 * self.hop:g} s; the whole server never received more than "
                    f"{load[0]:.0f} in {self.window:g} s in the baseline",
                    {
                        "check": "request_burst",
                        "channel": self._channel_evidence(key),
                        "requests": n,
                        "seconds": 2 * self.hop,
                        "baseline_max_per_window": load[0],
                        "window_seconds": self.window,
                    },
                    uid=msg.uid,
                    frame=msg.frame,
                )
                out = (out or []) + [f]
        return out

    def _novel_command(
        self,
        c: Conn,
        m: ChannelModel,
        msg: ModbusMessage,
        cmd: Command,
        ts: float,
        scope: str = "channel",
    ) -> list[Finding] | None:
        """Function and address checks of a command not yet verified on this channel (or,
        ``scope`` "server", against what every baseline client did with the server)."""
        fc = cmd[0]
        key = c.ch.key
        who = (
            "the baseline channel only"
            if scope == "channel"
            else f"the baseline clients of {key[1]} unit {key[2]} together only"
        )
        out: list[Finding] = []
        ok = True
        if m.functions is not None and fc not in m.functions:
            ok = False
            if self._once(("function", key, fc), ts):
                sub = msg.fields.get("sub_function")
                out.append(
                    self._finding(
                        R.NEW_FUNCTION,
                        ts,
                        msg.conn,
                        f"{key[0]} sent function {fc} ({msg.func}) to {key[1]} unit {key[2]}; "
                        f"{who} used {_codes(m.functions)}",
                        {
                            "check": "function",
                            "scope": scope,
                            "channel": self._channel_evidence(key),
                            "function": fc,
                            "baseline_functions": sorted(m.functions),
                            "command": command_text(cmd),
                        },
                        uid=msg.uid,
                        frame=msg.frame,
                        technique=technique_for_function(fc, sub),
                    )
                )
        table = READ_FCS.get(fc) or WRITE_FCS.get(fc)
        address = cmd[1]
        if m.intervals is not None and table is not None and isinstance(address, int):
            quantity = cmd[2] if isinstance(cmd[2], int) and cmd[2] > 0 else 1
            if fc == 23:
                quantity = 1
            if not m.covered(table, address, address + quantity):
                ok = False
                if self._once(("address", key, cmd), ts):
                    iv = m.intervals.get(table)
                    learned = [[a, b - 1] for a, b in zip(*iv, strict=True)] if iv else []
                    out.append(
                        self._finding(
                            R.NEW_ADDRESS,
                            ts,
                            msg.conn,
                            f"{key[0]} {'wrote' if fc in WRITE_FCS else 'read'} {table} "
                            f"{address}-{address + quantity - 1} of {key[1]} unit {key[2]}; "
                            f"{who} touched {_ranges(learned) or 'none'}",
                            {
                                "check": "address",
                                "scope": scope,
                                "channel": self._channel_evidence(key),
                                "table": table,
                                "address": address,
                                "quantity": quantity,
                                "baseline_ranges": learned,
                            },
                            uid=msg.uid,
                            frame=msg.frame,
                            technique=R.T["T0836"] if fc in WRITE_FCS else R.T["T0861"],
                        )
                    )
        if ok and len(m.ok_commands) < 4096:
            m.ok_commands.add(cmd)
        return out or None

    def _transition(
        self,
        c: Conn,
        m: ChannelModel,
        msg: ModbusMessage,
        prev: Command,
        cmd: Command,
        ts: float,
    ) -> Finding | None:
        key = c.ch.key
        if not self._once(("transition", key, prev, cmd), ts):
            return None
        expected = sorted(m.successors.get(prev, []))
        return self._finding(
            R.NEW_TRANSITION,
            ts,
            msg.conn,
            f"on {key[0]} -> {key[1]} unit {key[2]}, {command_text(cmd)} followed "
            f"{command_text(prev)}; the baseline only saw "
            f"{', '.join(expected) or 'nothing'} after it",
            {
                "check": "sequence",
                "channel": self._channel_evidence(key),
                "previous": command_text(prev),
                "command": command_text(cmd),
                "baseline_successors": expected,
                "command_known": cmd in m.commands,
            },
            uid=msg.uid,
            frame=msg.frame,
        )

    def _write(
        self, c: Conn, m: ChannelModel, msg: ModbusMessage, ts: float
    ) -> list[Finding] | None:
        fields = msg.fields
        address = fields.get("address")
        values = fields.get("values")
        if address is None or not values:
            return None
        key = c.ch.key
        client, server, unit = key
        table = WRITE_FCS[msg.fc]
        # a baseline writer: wrote to this server in the baseline, or to another one (the
        # engineering workstation does not retune every PLC within a few hours)
        known_writer = client in self.writers.get((server, unit), ()) or client in self.site_writers
        out: list[Finding] = []
        # replay: the very same request (transaction id included) seen before
        fp = (server, unit, msg.tid, msg.fc, address, tuple(values))
        seen = self.fingerprints.get(fp)
        if seen is not None and 0 <= ts - seen[2] <= self.replay_seconds:
            if self._once(("replay", fp), ts):
                same = seen[0] == msg.uid
                out.append(
                    self._finding(
                        R.REPLAY,
                        ts,
                        msg.conn,
                        f"{client} sent a write to {server} identical to one {seen[1]} sent "
                        f"{ts - seen[2]:.1f} s earlier on "
                        f"{'the same' if same else 'another'} connection (transaction id "
                        f"{msg.tid}, function {msg.fc}, {table} {address}, values "
                        f"{_short(values)})",
                        {
                            "check": "replay",
                            "channel": self._channel_evidence(key),
                            "transaction_id": msg.tid,
                            "function": msg.fc,
                            "address": address,
                            "values": list(values)[:16],
                            "first_sent_by": seen[1],
                            "first_sent_at": seen[2],
                            "same_connection": same,
                        },
                        uid=msg.uid,
                        frame=msg.frame,
                    )
                )
        else:
            if len(self.fingerprints) >= self.max_entries:
                _trim(self.fingerprints)
            self.fingerprints[fp] = (msg.uid, client, ts)
        regs = self.registers
        for i, value in enumerate(values):
            rkey = (server, unit, table, address + i)
            v = float(value)
            if len(self.last_write) >= self.max_entries:
                _trim(self.last_write)
            self.last_write[rkey] = (v, client, known_writer, ts)
            spec = regs.get(rkey)
            if table != "holding":
                continue
            if spec is not None:
                w_lo, w_hi, kind = spec.w_lo, spec.w_hi, CLASS_NAMES[spec.kind]
            elif (server, table, address + i) in self.limits:
                (w_lo, w_hi), kind = self.limits[(server, table, address + i)], "unseen"
            else:
                continue
            if w_lo <= v <= w_hi:
                continue
            if not self._once(("write_value", rkey, v), ts):
                continue
            out.append(
                self._finding(
                    R.WRITE_VALUE,
                    ts,
                    msg.conn,
                    f"{client} wrote {value:g} to {table} register {address + i} of {server} "
                    f"unit {unit}; what may be written there is {w_lo:g} to {w_hi:g}",
                    {
                        "check": "write_value",
                        "channel": self._channel_evidence(key),
                        "register": _reg_evidence(rkey),
                        "value": v,
                        "envelope": [w_lo, w_hi],
                        "class": kind,
                        "baseline_writer": known_writer,
                    },
                    uid=msg.uid,
                    frame=msg.frame,
                )
            )
        return out or None

    # ------------------------------------------------------------------ tier 1: responses
    def slow_responses(self, c: Conn, msg: ModbusMessage, bits: int) -> list[Finding] | None:
        return [self._latency(c, c.ch.extra, msg, bits, msg.ts)]

    def _latency(
        self, c: Conn, m: ChannelModel, msg: ModbusMessage, bits: int, ts: float
    ) -> Finding:
        key = c.ch.key
        lat = m.data["latency"] if m.data else {}
        n = lat.get("n", 0)
        slow = bits.bit_count()
        return self._finding(
            R.LATENCY,
            ts,
            msg.conn,
            f"{slow} of the last {n} responses of {key[1]} unit {key[2]} to {key[0]} took "
            f"longer than {1000 * m.lat_threshold:.3f} ms (baseline median "
            f"{1000 * float(lat.get('p50', 0)):.3f} ms); the last took "
            f"{1000 * (msg.latency or 0):.3f} ms",
            {
                "check": "latency",
                "channel": self._channel_evidence(key),
                "slow_responses": slow,
                "of_last": n,
                "threshold_ms": round(1000 * m.lat_threshold, 4),
                "baseline_median_ms": round(1000 * float(lat.get("p50", 0)), 4),
                "baseline_p99_ms": round(1000 * float(lat.get("p99", 0)), 4),
                "latency_ms": round(1000 * (msg.latency or 0), 4),
            },
            uid=msg.uid,
            frame=msg.frame,
        )

    def values_changed(
        self,
        c: Conn,
        msg: ModbusMessage,
        cmd: Command,
        vals: list[Any],
        prev: list[Any] | None,
        dt: float,
    ) -> list[Finding] | None:
        m: ChannelModel = c.ch.extra
        checks = m.checks.get(cmd)
        if checks is None:
            specs = self._specs(c.ch.key, cmd, len(vals))
            checks = [(i, s) for i, s in enumerate(specs) if s is not None and s.kind != VARYING]
            if len(m.checks) < 4096:
                m.checks[cmd] = checks
            if checks and c.ch.watch is not None:
                c.ch.watch.add(cmd)
        out: list[Finding] | None = None
        if prev is None:
            for i, spec in checks:
                if i < len(vals):
                    f = self._first_read(c, msg, spec, vals[i])
                    if f is not None:
                        out = (out or []) + [f]
            return out
        step = self.step_factor * max(dt, DT_FLOOR)
        n = min(len(vals), len(prev))
        for i, spec in checks:
            if i >= n:
                break
            v = vals[i]
            p = prev[i]
            if v == p:
                continue
            kind = spec.kind
            f = None
            if kind == ANALOG:
                if (spec.range_armed and not spec.env_lo <= v <= spec.env_hi) or abs(
                    v - p
                ) > step * spec.rate + 1:
                    f = self._analog(c, msg, spec, v, p, dt)
            elif kind == COUNTER:
                if (v - p) % 65536 > step * spec.rate + 2:
                    f = self._counter(c, msg, spec, v, p, dt)
            elif spec.sensor:  # process data that never changed in the baseline
                f = self._register_finding(
                    R.REGISTER_VALUE,
                    c,
                    msg,
                    spec,
                    f"{_reg_text(spec.key)} changed from {p:g} to {v:g}; it was "
                    f"{spec.value:g} throughout the baseline",
                    {
                        "check": "constant",
                        "value": float(v),
                        "previous": float(p),
                        "baseline_value": spec.value,
                    },
                    msg.ts,
                    item=float(v),
                )
            else:
                f = self._explain_change(c, msg, spec, v, p)
            if f is not None:
                out = (out or []) + [f]
        return out

    def _specs(self, key: ChannelKey, cmd: Command, n: int) -> list[RegisterSpec | None]:
        table = READ_FCS.get(cmd[0])
        base = cmd[1] if isinstance(cmd[1], int) else 0
        if table is None:
            return [None] * n
        regs = self.registers
        return [regs.get((key[1], key[2], table, base + i)) for i in range(n)]

    def _register_finding(
        self,
        rule: R.Rule,
        c: Conn,
        msg: ModbusMessage,
        spec: RegisterSpec,
        message: str,
        evidence: dict[str, Any],
        ts: float,
        item: Any = None,
    ) -> Finding | None:
        if not self._once(("register", rule.sid, spec.key, item), ts):
            return None
        return self._finding(
            rule,
            ts,
            msg.conn,
            message,
            {
                "check": evidence.pop("check"),
                "channel": self._channel_evidence(c.ch.key),
                "register": _reg_evidence(spec.key),
                "class": CLASS_NAMES[spec.kind],
                **evidence,
            },
            uid=msg.uid,
            frame=msg.frame,
        )

    def _first_read(
        self, c: Conn, msg: ModbusMessage, spec: RegisterSpec, v: Any
    ) -> Finding | None:
        kind = spec.kind
        if kind in (CONSTANT, SETPOINT) and self._seen(spec, float(v)) == float(v):
            return None  # another reader already saw (and checked) this value
        if kind == CONSTANT and spec.value is not None and float(v) != float(spec.value):
            if self._explained(spec, v, msg.ts) is not None:
                return None
            return self._register_finding(
                R.REGISTER_VALUE,
                c,
                msg,
                spec,
                f"{_reg_text(spec.key)} reads {v:g}; it was {spec.value:g} throughout the baseline",
                {"check": "constant", "value": float(v), "baseline_value": spec.value},
                msg.ts,
            )
        if kind == ANALOG and spec.range_armed:
            lo, hi = spec.env_lo, spec.env_hi
        elif kind == SETPOINT:
            lo, hi = spec.w_lo, spec.w_hi
        else:
            return None
        if lo <= v <= hi:
            return None
        return self._register_finding(
            R.REGISTER_VALUE,
            c,
            msg,
            spec,
            f"{_reg_text(spec.key)} reads {v:g}, outside its envelope {lo:g} to {hi:g}",
            {"check": "range", "value": float(v), "envelope": [lo, hi]},
            msg.ts,
        )

    def _analog(
        self, c: Conn, msg: ModbusMessage, spec: RegisterSpec, v: Any, p: Any, dt: float
    ) -> Finding | None:
        if spec.range_armed and not spec.env_lo <= v <= spec.env_hi:
            return self._register_finding(
                R.REGISTER_VALUE,
                c,
                msg,
                spec,
                f"{_reg_text(spec.key)} reads {v:g}, outside its learned envelope "
                f"{spec.env_lo:g} to {spec.env_hi:g}",
                {
                    "check": "range",
                    "value": float(v),
                    "previous": float(p),
                    "envelope": [spec.env_lo, spec.env_hi],
                },
                msg.ts,
            )
        rate = abs(v - p) / max(dt, DT_FLOOR)
        return self._register_finding(
            R.REGISTER_VALUE,
            c,
            msg,
            spec,
            f"{_reg_text(spec.key)} moved from {p:g} to {v:g} in {dt:.2f} s "
            f"({rate:.3g}/s); the baseline never moved faster than {spec.rate:.3g}/s",
            {
                "check": "rate",
                "value": float(v),
                "previous": float(p),
                "seconds": round(dt, 3),
                "rate": rate,
                "baseline_max_rate": spec.rate,
            },
            msg.ts,
        )

    def _counter(
        self, c: Conn, msg: ModbusMessage, spec: RegisterSpec, v: Any, p: Any, dt: float
    ) -> Finding | None:
        back = v < p and not (p > 60000 and v < 5536)
        what = "went back" if back else "jumped"
        return self._register_finding(
            R.REGISTER_VALUE,
            c,
            msg,
            spec,
            f"counter {_reg_text(spec.key)} {what} from {p:g} to {v:g} in {dt:.2f} s; the "
            f"baseline only counted up, at most {spec.rate:.3g}/s",
            {
                "check": "counter",
                "value": float(v),
                "previous": float(p),
                "seconds": round(dt, 3),
                "baseline_max_rate": spec.rate,
            },
            msg.ts,
        )

    def _explained(
        self, spec: RegisterSpec, v: Any, ts: float
    ) -> tuple[float, str, bool, float] | None:
        """The last write to the register if it wrote ``v`` from a baseline writer."""
        lw = self.last_write.get(spec.key)
        if lw is not None and lw[0] == float(v) and lw[2]:
            return lw
        return None

    def _seen(self, spec: RegisterSpec, fv: float) -> float | None:
        """Record ``fv`` as the register's current value (whoever read it); returns the value
        it had before, or ``fv`` itself if another reader already saw this change."""
        seen = self.reg_seen.get(spec.key)
        if seen == fv:
            return fv
        if seen is None and len(self.reg_seen) >= self.max_entries:
            _trim(self.reg_seen)
        self.reg_seen[spec.key] = fv
        return seen

    def _explain_change(
        self, c: Conn, msg: ModbusMessage, spec: RegisterSpec, v: Any, p: Any
    ) -> Finding | None:
        fv = float(v)
        seen = self._seen(spec, fv)
        if seen == fv:
            return None  # a change already checked when another reader saw it
        if seen is not None:
            p = seen
        lw = self.last_write.get(spec.key)
        if lw is not None and lw[0] == fv and lw[2]:
            return None  # a baseline writer wrote exactly this
        ts = msg.ts
        if lw is not None and lw[0] == fv:
            why = f"written by {lw[1]} {ts - lw[3]:.1f} s earlier, not a baseline writer"
            writer: str | None = lw[1]
        else:
            why = "no write of this value was seen"
            writer = None
        return self._register_finding(
            R.UNEXPLAINED_CHANGE,
            c,
            msg,
            spec,
            f"{_reg_text(spec.key)} changed from {p:g} to {v:g}: {why}",
            {
                "check": "provenance",
                "value": fv,
                "previous": float(p),
                "writer": writer,
                "baseline_writers": sorted(self.writers.get((spec.key[0], spec.key[1]), ())),
            },
            ts,
            item=fv,
        )

    # ------------------------------------------------------------------ tier 2
    def windows(self, closed: list[tuple[ChannelState, list[float]]], t_end: float) -> Any:
        runtimes = self.runtimes
        # (channel, runtime, raw window, scaled features or None, a feature outside)
        items: list[tuple[ChannelState, ScorerRuntime, list[float], list[float] | None, bool]] = []
        need: list[tuple[ScorerRuntime, list[float]]] = []  # windows the score may decide
        for ch, raw in closed:
            rt = runtimes.get(ch.key)
            if rt is None:
                continue
            f = rt.features(raw)
            low, high = rt.low, rt.high
            outside = any(map(_lt, f, low)) or any(map(_gt, f, high))
            s = None
            if rt.decides:
                s = [(x - m) / d for x, m, d in zip(f, rt.center, rt.scale, strict=True)]
                b = rt.bounds
                if b is not None and b.lower(s) - FLOOR_MARGIN > rt.threshold:
                    s = None  # its score cannot make it anomalous
                else:
                    need.append((rt, s))
            items.append((ch, rt, raw, s, outside))
        if not items:
            return None
        self.stats["windows_scored"] += len(need)
        self.stats["windows_bounded"] += len(items) - len(need)
        scores = iter(self._scores(need) if need else ())
        out: list[Finding] | None = None
        n, k = self.debounce_n, self.debounce_k
        for ch, rt, raw, s, outside in items:
            score = next(scores) if s is not None else None
            bad = outside or (score is not None and score < rt.threshold)
            d = ch.debounce
            d.append(bad)
            if len(d) > n:
                d.popleft()
            hits = sum(d)
            if hits == 0:
                ch.episode = False
            elif hits >= k and not ch.episode:
                ch.episode = True
                if score is None:  # for the explanation only
                    f = rt.features(raw)
                    scaled = [(x - m) / d for x, m, d in zip(f, rt.center, rt.scale, strict=True)]
                    score = self._scores([(rt, scaled)])[0]
                out = (out or []) + [self._window_finding(ch, rt, raw, score, hits, t_end)]
        return out

    def _scores(self, need: list[tuple[ScorerRuntime, list[float]]]) -> list[float]:
        """The estimator's scores of scaled windows, all at once for isolation forests."""
        if self.forest is not None:
            rows = np.array([rt.row for rt, _s in need])
            scores: list[float] = self.forest.score(rows, np.array([s for _rt, s in need])).tolist()
            return scores
        from sentinel.ml.scorer import fast_score_samples

        return [float(fast_score_samples(rt.scorer.estimator_, np.array([s]))[0]) for rt, s in need]

    def _window_finding(
        self,
        ch: ChannelState,
        rt: ScorerRuntime,
        raw: list[float],
        score: float,
        hits: int,
        t_end: float,
    ) -> Finding:
        key = ch.key
        explanation = rt.scorer.explain(raw, top=3)
        top = explanation[0]
        technique = _WINDOW_TECHNIQUES.get(top["feature"], R.T["T0855"])
        parts = [
            f"{e['feature']} {e['observed']} (baseline {e['baseline']}, range "
            f"{e['range'][0]} to {e['range'][1]})"
            for e in explanation
            if e["outside_envelope"] or abs(e["deviation"]) >= 1
        ] or [f"{top['feature']} {top['observed']} (baseline {top['baseline']})"]
        return self._finding(
            R.WINDOW,
            t_end,
            ConnId(key[0], 0, key[1], 502),
            f"{key[0]} -> {key[1]} unit {key[2]}: {hits} of the last {self.debounce_n} "
            f"windows anomalous; " + "; ".join(parts),
            {
                "check": "window",
                "channel": self._channel_evidence(key),
                "window": [round(t_end - self.window, 6), round(t_end, 6)],
                "score": round(score, 6),
                "threshold": round(rt.threshold, 6),
                "anomalous_windows": hits,
                "of_last": self.debounce_n,
                "features": explanation,
            },
            technique=technique,
        )


_WINDOW_TECHNIQUES = {
    "req_rate": R.T["T0814"],
    "resp_ratio": R.T["T0814"],
    "lat_mean": R.T["T0830"],
    "lat_max": R.T["T0830"],
    "ia_mean": R.T["T0830"],
    "ia_max": R.T["T0830"],
    "ia_cv": R.T["T0830"],
    "exc_ratio": R.T["T0888"],
    "addr_span": R.T["T0861"],
    "write_ratio": R.T["T0855"],
    "other_ratio": R.T["T0855"],
    "change_ratio": R.T["T0831"],
}


def _merge_intervals(intervals: list[Any]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted((int(a), int(b)) for a, b in intervals):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def _trim(table: dict) -> None:
    """Drop the oldest half of an insertion-ordered table (bounded memory)."""
    for key in list(table)[: len(table) // 2]:
        del table[key]


def _codes(codes: set[int]) -> str:
    return ", ".join(str(c) for c in sorted(codes)) or "none"


def _ranges(ranges: list[list[int]]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def _short(values: Any) -> str:
    vals = list(values)
    text = ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in vals[:8])
    return f"[{text}{', ...' if len(vals) > 8 else ''}]"


def _reg_text(key: tuple[str, int, str, int]) -> str:
    server, unit, table, address = key
    return f"{table} register {address} of {server} unit {unit}"


def _reg_evidence(key: tuple[str, int, str, int]) -> dict[str, Any]:
    server, unit, table, address = key
    return {"server": server, "unit": unit, "table": table, "address": address}
