"""OT policy for Modbus/TCP: who may talk to a PLC, what it may write, and what it must never do.

Driven by the site configuration (``assets``: allowed masters, allowed function codes,
register ranges with ``writable``, ``min`` and ``max``) and, with no configuration at all, by
what the traffic itself teaches during a learning window (``detectors.policy``, see
``sentinel/detector_settings.py``). Like Zeek's policy scripts on top of its Modbus base
scripts, this module never parses bytes: it reads the decoder's ``ModbusMessage`` fields.

Rules (ids 90001xx, see ``detectors/common.py``; every finding's evidence is in
``sentinel.evidence``):

=======  =========================================================  ======  ===================
id       finding                                                    needs   technique
=======  =========================================================  ======  ===================
9000101  request from a client that is not an allowed master          config  T0848 Rogue Master
9000102  function code not allowed for the device                     config  T0855
9000103  role reversal: a server device acting as a Modbus client     either  T0848 Rogue Master
9000104  write from a host that never wrote before                     learned T0855
9000105  write outside the writable address ranges                    config  T0855
9000106  written value outside the safe limits                        config  T0836 Modify Param.
9000107  diagnostics: force listen only mode (FC 8/4)                 -       T0814 DoS
9000108  diagnostics: restart communications (FC 8/1, FC 19)          -       T0816 Restart
9000109  diagnostics: clear counters (FC 8/10, FC 8/20)               -       T0872 Ind. Removal
9000110  file record write (FC 21)                                    -       T0843 Prog. Download
9000111  file record read (FC 20)                                     -       T0845 Prog. Upload
9000112  vendor programming function (FC 9, 13, 18, 40, 90, 126)      -       T0843 Prog. Download
9000113  firmware replacement function (FC 125)                       -       T0857 Sys. Firmware
9000114  request flood from one client to one server                  -       T0814 DoS
9000115  requests without responses                                   -       T0814 DoS
9000116  new device in the Modbus inventory                           learned T0864 Transient CA
9000117  connection flood: many empty TCP connections to a Modbus port  -       T0814 DoS
=======  =========================================================  ======  ===================

Learning: the first ``learning_seconds`` of Modbus traffic (packet time) are the baseline; a
host writing for the first time then, or a device first seen then, is normal. After it, a new
writer or a new device is reported once, then becomes known. A host declared in the config is
never a new device. Program and file functions are not reported for declared engineering
workstations (and, for FC 20 file reads, historians) that the target device allows; FC 20
reads between a client and a server that did so during learning are normal too.

Flood and unanswered counts are kept per client/server pair in tumbling windows that start at
their first event; each is reported at most once per window. Requests count as unanswered
only on connections where the server was seen answering before (a capture that sees one
direction only must not turn every request into silence). All state is bounded
(``max_hosts``, ``max_pairs``, ``max_flows``); beyond the bounds the oldest entries go first.
"""

from __future__ import annotations

from typing import Any, Final

from sentinel.config import Asset, Config
from sentinel.detector_settings import PolicySettings, detector_settings
from sentinel.events import ConnId, ModbusMessage
from sentinel.findings import Finding
from sentinel.pipeline.detector import Detector, register

from .common import (
    NOT_STARTED,
    PolicyRule,
    Window,
    engineering_hosts,
    make_finding,
    message_finding,
    starts_window,
    technique,
)

RULESET: Final = "sentinel-ot-policy"

UNAUTHORIZED_CLIENT = PolicyRule(
    9000101,
    "Modbus request from a client that is not an allowed master",
    "high",
    technique("T0848"),
)
FC_NOT_ALLOWED = PolicyRule(
    9000102, "Modbus function code not allowed for the device", "high", technique("T0855")
)
ROLE_REVERSAL = PolicyRule(
    9000103, "Modbus role reversal: a server device acting as client", "high", technique("T0848")
)
NEW_WRITER = PolicyRule(
    9000104, "Modbus write from a host that never wrote before", "medium", technique("T0855")
)
WRITE_OUT_OF_RANGE = PolicyRule(
    9000105, "Modbus write outside the writable address ranges", "high", technique("T0855")
)
VALUE_OUT_OF_LIMITS = PolicyRule(
    9000106, "Modbus write of a value outside the safe limits", "high", technique("T0836")
)
LISTEN_ONLY = PolicyRule(
    9000107, "Modbus diagnostics: force listen only mode", "high", technique("T0814")
)
RESTART_COMMS = PolicyRule(
    9000108, "Modbus diagnostics: restart communications", "high", technique("T0816")
)
CLEAR_COUNTERS = PolicyRule(
    9000109, "Modbus diagnostics: clear counters", "medium", technique("T0872")
)
FILE_WRITE = PolicyRule(9000110, "Modbus file record write", "high", technique("T0843"))
FILE_READ = PolicyRule(9000111, "Modbus file record read", "medium", technique("T0845"))
PROGRAMMING = PolicyRule(9000112, "Modbus vendor programming function", "high", technique("T0843"))
FIRMWARE = PolicyRule(
    9000113, "Modbus firmware replacement function", "critical", technique("T0857")
)
FLOOD = PolicyRule(9000114, "Modbus request flood", "high", technique("T0814"))
UNANSWERED = PolicyRule(9000115, "Modbus requests without responses", "medium", technique("T0814"))
NEW_DEVICE = PolicyRule(9000116, "New device in the Modbus inventory", "medium", technique("T0864"))
CONNECTION_FLOOD = PolicyRule(9000117, "Modbus connection flood", "high", technique("T0814"))

RULES: tuple[PolicyRule, ...] = (
    UNAUTHORIZED_CLIENT,
    FC_NOT_ALLOWED,
    ROLE_REVERSAL,
    NEW_WRITER,
    WRITE_OUT_OF_RANGE,
    VALUE_OUT_OF_LIMITS,
    LISTEN_ONLY,
    RESTART_COMMS,
    CLEAR_COUNTERS,
    FILE_WRITE,
    FILE_READ,
    PROGRAMMING,
    FIRMWARE,
    FLOOD,
    UNANSWERED,
    NEW_DEVICE,
    CONNECTION_FLOOD,
)

# Function codes that write, and the table they write to (spec 6.5, 6.6, 6.11, 6.12, 6.16, 6.17).
WRITE_TABLES: Final[dict[int, str]] = {
    5: "coils",
    6: "holding",
    15: "coils",
    16: "holding",
    22: "holding",
    23: "holding",
}
# Diagnostics sub-functions (spec 6.8.1) that disturb the device.
DIAG_RULES: Final[dict[int, PolicyRule]] = {
    0x01: RESTART_COMMS,  # Restart Communications Option
    0x04: LISTEN_ONLY,  # Force Listen Only Mode
    0x0A: CLEAR_COUNTERS,  # Clear Counters and Diagnostic Register
    0x14: CLEAR_COUNTERS,  # Clear Overrun Counter and Flag
}
# Program, file and firmware functions (spec 6.14, 6.15; the rest are Modicon/Schneider
# vendor codes as named in Zeek's consts.zeek: 9 PROGRAM_484, 13 PROGRAM_584_984,
# 18 PROGRAM_884_U84, 40 PROGRAM_CONCEPT, 90 PROGRAM_UNITY (UMAS), 126 PROGRAM_584_984_2,
# 125 FIRMWARE_REPLACEMENT, 19 RESET_COMM_LINK_884_U84).
PROGRAM_RULES: Final[dict[int, PolicyRule]] = {
    20: FILE_READ,
    21: FILE_WRITE,
    9: PROGRAMMING,
    13: PROGRAMMING,
    18: PROGRAMMING,
    40: PROGRAMMING,
    90: PROGRAMMING,
    126: PROGRAMMING,
    125: FIRMWARE,
}
RESET_COMM_LINK: Final = 19
# The functions a request is checked for beyond its client and rate
_CHECKED_FUNCTIONS: Final = frozenset({*WRITE_TABLES, 8, RESET_COMM_LINK, *PROGRAM_RULES})
MAX_LISTED: Final = 16  # offending addresses/values listed in one finding's evidence


class _Range:
    __slots__ = ("end", "max", "min", "name", "signed", "start", "writable")

    def __init__(
        self, start: int, end: int, name: str | None, writable: bool, lo: int | None, hi: int | None
    ) -> None:
        self.start, self.end = min(start, end), max(start, end)
        self.name = name
        self.writable = writable
        self.min, self.max = lo, hi
        # Values are unsigned 16-bit registers unless the declared minimum is negative, in
        # which case they are read as two's complement signed 16-bit.
        self.signed = lo is not None and lo < 0


class _Policy:
    """One declared asset, prepared for fast checks."""

    __slots__ = ("asset", "fcs", "masters", "tables")

    def __init__(self, asset: Asset) -> None:
        self.asset = asset
        self.masters = frozenset(asset.allowed_masters)
        self.fcs = frozenset(asset.allowed_function_codes)
        self.tables: dict[str, list[_Range]] = {}
        for r in asset.registers:
            self.tables.setdefault(r.table, []).append(
                _Range(r.start, r.end, r.name, r.writable, r.min, r.max)
            )

    def allows_master(self, ip: str) -> bool:
        return not self.masters or ip in self.masters

    def allows_fc(self, fc: int) -> bool:
        return not self.fcs or fc in self.fcs


class _Pair:
    """Per client/server counters: flood and unanswered windows (each a tumbling window as
    ``common.Window``, its start kept here, unboxed: one object to reach per request)."""

    __slots__ = (
        "flood_count",
        "flood_fired",
        "flood_start",
        "peak",
        "ua_count",
        "ua_fired",
        "ua_requests",
        "ua_start",
    )

    def __init__(self) -> None:
        self.flood_start: float = NOT_STARTED
        self.flood_count = 0
        self.flood_fired = False
        self.peak = 0  # busiest flood window seen while learning
        self.ua_start: float = NOT_STARTED
        self.ua_requests = 0
        self.ua_count = 0
        self.ua_fired = False

    def flood_roll(self, ts: float, length: float) -> None:
        if starts_window(self.flood_start, length, ts):
            self.flood_start = ts
            self.flood_count = 0
            self.flood_fired = False

    def ua_roll(self, ts: float, length: float) -> None:
        if starts_window(self.ua_start, length, ts):
            self.ua_start = ts
            self.ua_requests = self.ua_count = 0
            self.ua_fired = False


class _Flow:
    """A Modbus connection: its pair's counters and its requests waiting for an answer."""

    __slots__ = ("answered", "conn", "pair", "pending")

    def __init__(self, conn: ConnId, pair: _Pair) -> None:
        self.conn = conn
        self.pair = pair
        # tid -> the open request, oldest first (a plain dict keeps insertion order)
        self.pending: dict[int, ModbusMessage] = {}
        # Only where the server was seen answering is silence meaningful (a capture that
        # sees one direction only must not make every request "unanswered").
        self.answered = False


class _Host:
    __slots__ = ("client", "server")

    def __init__(self) -> None:
        self.client = False
        self.server = False


def _items(msg: ModbusMessage) -> tuple:
    """The message as a plain tuple: its items as the objects they are."""
    return msg


def _value(v: Any, signed: bool) -> int:
    n = int(v)
    if signed and n >= 0x8000:
        n -= 0x10000
    return n


def _written(msg: ModbusMessage) -> tuple[int, list[int]] | None:
    """(first address, addresses) that a write request touches, or None when undecodable."""
    f = msg.fields
    address = f.get("address")
    if not isinstance(address, int):
        return None
    if msg.fc in (5, 6, 22):
        return address, [address]
    quantity = f.get("quantity")
    if not isinstance(quantity, int):
        values = f.get("values")
        quantity = len(values) if isinstance(values, list) else 1
    end = min(address + quantity, 0x10000)
    return address, list(range(address, end))


def _evidence(msg: ModbusMessage, policy: _Policy | None) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "client": msg.conn.orig_h,
        "server": msg.conn.resp_h,
        "unit": msg.unit,
        "function_code": msg.fc,
        "function": msg.func,
        "transaction_id": msg.tid,
    }
    if policy is not None and policy.asset.name:
        ev["asset"] = policy.asset.name
    return ev


class ModbusPolicy(Detector):
    id = "modbus_policy"
    description = (
        "OT policy for Modbus/TCP: allowed masters, function codes, writable ranges and safe "
        "values, dangerous operations, floods, unanswered requests, learned writers and devices"
    )

    def __init__(self, config: Config, settings: PolicySettings | None = None) -> None:
        super().__init__(config)
        s = settings or detector_settings(config).policy
        self.settings = s
        self._disabled = frozenset(str(sid) for sid in s.disabled_rules)
        self._policies = {a.address: _Policy(a) for a in config.assets}
        self._engineering = engineering_hosts(config, s.engineering_hosts)
        self._historians = frozenset(a.address for a in config.assets if a.role == "historian")
        self._declared_plcs = frozenset(a.address for a in config.assets if a.role == "plc")
        self._learn_until: float | None = None
        self._hosts: dict[str, _Host] = {}
        self._known: set[str] = set(self._policies)  # the inventory: declared and learned
        self._writers: set[str] = set()
        self._file_readers: set[tuple[str, str]] = set()
        self._reversals: set[tuple[str, str]] = set()
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._flows: dict[str, _Flow] = {}
        # server ip -> (window, connections, clients, fired) of connections that carried nothing
        self._syns: dict[str, tuple[Window, list[int], set[str], list[bool]]] = {}
        self._modbus_ports = frozenset(config.decode.modbus_ports)
        self._flood_min = s.flood_min_requests  # per request: one attribute, not two
        self._flood_window = s.flood_window
        self._ua_window = s.unanswered_window
        self._max_pending = s.max_pending_per_flow

    # ------------------------------------------------------------------ events
    def on_modbus(self, msg: ModbusMessage) -> list[Finding] | None:
        # The hot path, once per message. Learning starts at the run's first message.
        learn_until = self._learn_until
        if learn_until is None:
            learn_until = self._learn_until = msg[0] + self.settings.learning_seconds
        # The transaction id as the message's own int object (Any: not unboxed, then boxed
        # again, which allocates, to key the open requests).
        tid: Any = _items(msg)[4]
        if not msg[3]:  # a response only closes its request: uid by index
            response_flow = self._flows.get(msg[1])
            if response_flow is not None:
                pending = response_flow.pending
                if tid in pending:
                    del pending[tid]
                response_flow.answered = True
            return None
        ts, uid, conn, _, _, _, _, fc, _, _, _, _, fields, _ = msg
        flow = self._flows.get(uid)
        out: list[Finding] = []
        learning = ts < learn_until
        policy = self._policies.get(conn.resp_h)
        if flow is None:  # the hosts of a connection never change: check them once
            flow = self._new_flow(msg)
            self._inventory(msg, learning, out)
            self._roles(msg, learning, out)
        if policy is not None:
            if not policy.allows_master(conn.orig_h):
                out.append(self._unauthorized(msg, policy))
            if not policy.allows_fc(fc):
                out.append(self._fc_not_allowed(msg, policy))
        if fc in _CHECKED_FUNCTIONS:  # reads, most of the traffic, are not
            if fc in WRITE_TABLES:
                self._write(msg, learning, policy, out)
            elif fc == 8:
                rule = DIAG_RULES.get(fields.get("sub_function", -1))
                if rule is not None:
                    out.append(self._dangerous(rule, msg, policy))
            elif fc == RESET_COMM_LINK:
                out.append(self._dangerous(RESTART_COMMS, msg, policy))
            else:
                self._program(msg, learning, policy, out)
        # Request rates; past learning, only a count above flood_min_requests (the least
        # any limit is) can be a flood.
        pair = flow.pair
        pair.flood_roll(ts, self._flood_window)
        pair.flood_count += 1
        pair.ua_roll(ts, self._ua_window)
        pair.ua_requests += 1
        if learning:
            if pair.flood_count > pair.peak:
                pair.peak = pair.flood_count
        elif pair.flood_count > self._flood_min and not pair.flood_fired:
            self._flood(msg, pair, out)
        pending = flow.pending
        if tid in pending:  # a reused transaction id replaces the older request
            del pending[tid]
        elif len(pending) >= self._max_pending:
            del pending[next(iter(pending))]
        pending[tid] = msg
        if not out:
            return None
        if self._disabled:
            out = [f for f in out if f.rule_id not in self._disabled]
        return out

    def on_tick(self, now: float) -> list[Finding] | None:
        timeout = self.settings.response_timeout
        out: list[Finding] = []
        for uid, flow in self._flows.items():
            pending = flow.pending
            while pending:
                tid, request = next(iter(pending.items()))
                if now - request.ts < timeout:
                    break
                del pending[tid]
                if flow.answered:
                    self._unanswered(flow, uid, request.frame, now, out)
        if self._disabled:
            out = [f for f in out if f.rule_id not in self._disabled]
        return out

    def on_flow_end(self, flow: dict) -> list[Finding] | None:
        state = self._flows.pop(flow["uid"], None)
        if state is None:
            if flow.get("orig_bytes") or flow.get("resp_bytes") or flow.get("proto") != "tcp":
                return None
            return self._empty_connection(flow)
        if not state.answered or not state.pending:
            return None
        out: list[Finding] = []
        last = flow.get("last_ts", 0.0)
        for request in state.pending.values():
            if last - request.ts >= self.settings.response_timeout:
                self._unanswered(state, flow["uid"], request.frame, last, out)
        if self._disabled:
            out = [f for f in out if f.rule_id not in self._disabled]
        return out

    # ------------------------------------------------------------------ learned facts
    def _host(self, ip: str) -> _Host | None:
        host = self._hosts.get(ip)
        if host is None:
            if len(self._hosts) >= self.settings.max_hosts:
                return None
            host = self._hosts[ip] = _Host()
        return host

    def _inventory(self, msg: ModbusMessage, learning: bool, out: list[Finding]) -> None:
        known = self._known
        new: list[dict[str, str]] = []
        for ip, role in ((msg.conn.orig_h, "client"), (msg.conn.resp_h, "server")):
            if ip in known:
                continue
            if len(known) >= self.settings.max_hosts + len(self._policies):
                break
            known.add(ip)
            if not learning:
                new.append({"ip": ip, "role": role})
        if new:
            ev = _evidence(msg, self._policies.get(msg.conn.resp_h))
            ev["devices"] = new
            names = " and ".join(f"{d['role']} {d['ip']}" for d in new)
            out.append(self._finding(NEW_DEVICE, msg, f"New Modbus {names}", ev))

    def _roles(self, msg: ModbusMessage, learning: bool, out: list[Finding]) -> None:
        client_ip, server_ip = msg.conn.orig_h, msg.conn.resp_h
        client, server = self._host(client_ip), self._host(server_ip)
        if server is not None:
            server.server = True
        declared = client_ip in self._declared_plcs
        if client is not None and not client.client:
            # Learned: a host first seen as a server that starts acting as a client after the
            # learning window (a gateway doing both from the start is baseline).
            client.client = True
            if not learning and client.server and not declared:
                self._reversal(msg, "learned", out)
        if declared:
            self._reversal(msg, "declared", out)

    def _reversal(self, msg: ModbusMessage, basis: str, out: list[Finding]) -> None:
        ip = msg.conn.orig_h
        key = (ip, msg.conn.resp_h)
        if key in self._reversals or len(self._reversals) >= self.settings.max_pairs:
            return
        self._reversals.add(key)
        ev = _evidence(msg, self._policies.get(msg.conn.resp_h))
        own = self._policies.get(ip)
        ev.update({"device": ip, "basis": basis})
        if own is not None:
            ev["declared_role"] = own.asset.role
            if own.asset.name:
                ev["device_name"] = own.asset.name
        what = "declared PLC" if basis == "declared" else "device seen as a Modbus server"
        out.append(
            self._finding(
                ROLE_REVERSAL, msg, f"{what} {ip} acts as Modbus client of {msg.conn.resp_h}", ev
            )
        )

    # ------------------------------------------------------------------ config policy
    def _unauthorized(self, msg: ModbusMessage, policy: _Policy) -> Finding:
        ev = _evidence(msg, policy)
        ev["allowed_masters"] = sorted(policy.masters)
        return self._finding(
            UNAUTHORIZED_CLIENT,
            msg,
            f"{msg.conn.orig_h} is not an allowed master of {msg.conn.resp_h} ({msg.func})",
            ev,
        )

    def _fc_not_allowed(self, msg: ModbusMessage, policy: _Policy) -> Finding:
        ev = _evidence(msg, policy)
        ev["allowed_function_codes"] = sorted(policy.fcs)
        return self._finding(
            FC_NOT_ALLOWED,
            msg,
            f"function code {msg.fc} ({msg.func}) is not allowed on {msg.conn.resp_h}",
            ev,
        )

    def _write(
        self, msg: ModbusMessage, learning: bool, policy: _Policy | None, out: list[Finding]
    ) -> None:
        client = msg.conn.orig_h
        if client not in self._writers:
            if learning or len(self._writers) < self.settings.max_hosts:
                self._writers.add(client)
            if not learning:
                ev = _evidence(msg, policy)
                out.append(
                    self._finding(
                        NEW_WRITER,
                        msg,
                        f"{client} writes to {msg.conn.resp_h} ({msg.func}) for the first time",
                        ev,
                    )
                )
        if policy is None:
            return
        table = WRITE_TABLES[msg.fc]
        ranges = policy.tables.get(table)
        if not ranges:
            return  # a table with no declared ranges is not policed
        written = _written(msg)
        if written is None:
            return
        first, addresses = written
        outside = [
            a for a in addresses if not any(r.writable and r.start <= a <= r.end for r in ranges)
        ]
        if outside:
            ev = _evidence(msg, policy)
            ev.update(
                {
                    "table": table,
                    "address": first,
                    "quantity": len(addresses),
                    "outside": outside[:MAX_LISTED],
                    "outside_count": len(outside),
                    "writable_ranges": [
                        [r.start, r.end]
                        for r in sorted(ranges, key=lambda r: r.start)
                        if r.writable
                    ],
                }
            )
            out.append(
                self._finding(
                    WRITE_OUT_OF_RANGE,
                    msg,
                    f"{msg.func} to {table} {first} on {msg.conn.resp_h}: "
                    f"{len(outside)} address(es) not writable",
                    ev,
                )
            )
        values = msg.fields.get("values")
        if msg.fc == 22 or not isinstance(values, list):
            return
        violations = []
        for address, raw in zip(addresses, values, strict=False):
            for r in ranges:
                if r.start <= address <= r.end and (r.min is not None or r.max is not None):
                    v = _value(raw, r.signed)
                    if (r.min is not None and v < r.min) or (r.max is not None and v > r.max):
                        violations.append(
                            {
                                "address": address,
                                "value": v,
                                "min": r.min,
                                "max": r.max,
                                "name": r.name,
                            }
                        )
                    break
        if violations:
            ev = _evidence(msg, policy)
            ev.update(
                {
                    "table": table,
                    "violations": violations[:MAX_LISTED],
                    "violation_count": len(violations),
                }
            )
            v0 = violations[0]
            label = f" ({v0['name']})" if v0["name"] else ""
            out.append(
                self._finding(
                    VALUE_OUT_OF_LIMITS,
                    msg,
                    f"{msg.func} writes {v0['value']} to {table} {v0['address']}{label} on "
                    f"{msg.conn.resp_h}, outside [{v0['min']}, {v0['max']}]",
                    ev,
                )
            )

    # ------------------------------------------------------------------ dangerous operations
    def _dangerous(self, rule: PolicyRule, msg: ModbusMessage, policy: _Policy | None) -> Finding:
        ev = _evidence(msg, policy)
        sub = msg.fields.get("sub_function")
        if sub is not None:
            ev["sub_function"] = sub
            ev["sub_function_name"] = msg.fields.get("sub_function_name")
        what = ev.get("sub_function_name") or msg.func
        return self._finding(
            rule, msg, f"{rule.name}: {what} from {msg.conn.orig_h} to {msg.conn.resp_h}", ev
        )

    def _program(
        self, msg: ModbusMessage, learning: bool, policy: _Policy | None, out: list[Finding]
    ) -> None:
        client = msg.conn.orig_h
        rule = PROGRAM_RULES[msg.fc]
        trusted = client in self._engineering or (rule is FILE_READ and client in self._historians)
        if trusted and (
            policy is None or (policy.allows_master(client) and policy.allows_fc(msg.fc))
        ):
            return
        if rule is FILE_READ:
            key = (client, msg.conn.resp_h)
            if key in self._file_readers:
                return
            if learning:
                if len(self._file_readers) < self.settings.max_pairs:
                    self._file_readers.add(key)
                return
        ev = _evidence(msg, policy)
        records = msg.fields.get("records")
        if isinstance(records, list):
            ev["files"] = sorted({r.get("file") for r in records if isinstance(r, dict)} - {None})
        out.append(
            self._finding(
                rule, msg, f"{msg.func} from {client} to {msg.conn.resp_h} (unit {msg.unit})", ev
            )
        )

    # ------------------------------------------------------------------ rates
    def _pair(self, key: tuple[str, str]) -> _Pair:
        pair = self._pairs.get(key)
        if pair is None:
            if len(self._pairs) >= self.settings.max_pairs:
                del self._pairs[next(iter(self._pairs))]
            pair = self._pairs[key] = _Pair()
        return pair

    def _flood(self, msg: ModbusMessage, pair: _Pair, out: list[Finding]) -> None:
        """Past learning, after the request was counted: a flood finding once per window."""
        s = self.settings
        limit = max(s.flood_min_requests, int(s.flood_factor * pair.peak))
        if pair.flood_count > limit and not pair.flood_fired:
            pair.flood_fired = True
            ev = _evidence(msg, self._policies.get(msg.conn.resp_h))
            ev.update(
                {
                    "requests": pair.flood_count,
                    "window_seconds": s.flood_window,
                    "window_start": pair.flood_start,
                    "limit": limit,
                    "learned_peak": pair.peak,
                }
            )
            out.append(
                self._finding(
                    FLOOD,
                    msg,
                    f"more than {limit} requests from {msg.conn.orig_h} to {msg.conn.resp_h} "
                    f"within {s.flood_window:g} s",
                    ev,
                )
            )

    def _new_flow(self, msg: ModbusMessage) -> _Flow:
        flows = self._flows
        if len(flows) >= self.settings.max_flows:
            del flows[next(iter(flows))]
        flow = flows[msg.uid] = _Flow(msg.conn, self._pair((msg.conn.orig_h, msg.conn.resp_h)))
        return flow

    def _unanswered(
        self, flow: _Flow, uid: str, frame: int, now: float, out: list[Finding]
    ) -> None:
        s = self.settings
        conn, pair = flow.conn, flow.pair
        pair.ua_roll(now, self._ua_window)
        pair.ua_count += 1
        if pair.ua_fired or pair.ua_count < s.unanswered_min:
            return
        if pair.ua_count < s.unanswered_ratio * pair.ua_requests:
            return
        pair.ua_fired = True
        evidence = {
            "client": conn.orig_h,
            "server": conn.resp_h,
            "unanswered": pair.ua_count,
            "requests": pair.ua_requests,
            "window_seconds": s.unanswered_window,
            "window_start": pair.ua_start,
            "response_timeout": s.response_timeout,
        }
        policy = self._policies.get(conn.resp_h)
        if policy is not None and policy.asset.name:
            evidence["asset"] = policy.asset.name
        out.append(
            make_finding(
                UNANSWERED,
                self.id,
                RULESET,
                now,
                f"{pair.ua_count} of {pair.ua_requests} requests from {conn.orig_h} to "
                f"{conn.resp_h} got no response within {s.response_timeout:g} s",
                evidence,
                conn=conn,
                uid=uid,
                frame=frame,
            )
        )

    def _empty_connection(self, flow: dict) -> list[Finding] | None:
        """A TCP connection to a Modbus port that carried nothing: counted per server; a SYN
        flood fills the device's connection backlog with them."""
        port = flow.get("resp_p")
        if port not in self._modbus_ports:
            return None
        server = flow["resp_h"]
        entry = self._syns.get(server)
        if entry is None:
            if len(self._syns) >= self.settings.max_hosts:
                del self._syns[next(iter(self._syns))]
            entry = self._syns[server] = (Window(self.settings.flood_window), [0], set(), [False])
        window, count, clients, fired = entry
        if window.roll(flow["ts"]):
            count[0] = 0
            clients.clear()
            fired[0] = False
        count[0] += 1
        if len(clients) < 64:
            clients.add(flow["orig_h"])
        if fired[0] or count[0] < self.settings.connection_flood:
            return None
        fired[0] = True
        s = self.settings
        conn = ConnId(flow["orig_h"], flow["orig_p"], server, port)
        evidence = {
            "server": server,
            "port": port,
            "connections": count[0],
            "clients": sorted(clients)[:16],
            "client_count": len(clients),
            "window_seconds": s.flood_window,
            "window_start": window.start,
        }
        policy = self._policies.get(server)
        if policy is not None and policy.asset.name:
            evidence["asset"] = policy.asset.name
        finding = make_finding(
            CONNECTION_FLOOD,
            self.id,
            RULESET,
            flow["ts"],
            f"{count[0]} connections without payload to {server}:{port} within "
            f"{s.flood_window:g} s",
            evidence,
            conn=conn,
            uid=flow["uid"],
        )
        if finding.rule_id in self._disabled:
            return None
        return [finding]

    # ------------------------------------------------------------------ helpers
    def _finding(
        self, rule: PolicyRule, msg: ModbusMessage, message: str, evidence: dict[str, Any]
    ) -> Finding:
        return message_finding(rule, self.id, RULESET, msg, message, evidence)


# Registered by a call, not with the decorator: a decorated class is not compiled as a
# native class (docs/native.md).
register(ModbusPolicy)
