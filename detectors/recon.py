"""Reconnaissance against Modbus devices: sweeps, device identification, probing by errors.

Scanners give themselves away by breadth: many function codes, unit ids or addresses tried
against one device in a short time, requests that only identify devices, errors on many
different requests, and connections to the Modbus port of many hosts that carry nothing.
Normal polling is narrow and repetitive (a fixed poll list, the same misconfigured tag failing
every cycle), so the counters below are of *distinct* things within a window
(``detectors.policy.sweep_window``), per client and server, never of raw messages.

=======  ======================================================  ==========================
id       finding                                                  technique
=======  ======================================================  ==========================
9000201  function code sweep                                      T0888 Remote System Info.
9000202  unit id sweep                                            T0846 Remote System Disc.
9000203  address sweep                                            T0861 Point & Tag Ident.
9000204  device identification from a non-engineering host        T0888 Remote System Info.
9000205  many exception responses (distinct failing requests)     T0888 Remote System Info.
9000206  service sweep: empty connections to many hosts or ports   T0846 Remote System Disc.
=======  ======================================================  ==========================

Thresholds (``sentinel/detector_settings.py``): a function code sweep is ``fc_sweep_distinct`` codes
sent, or ``fc_sweep_illegal`` codes answered ILLEGAL_FUNCTION; a unit id sweep is
``unit_sweep_distinct`` unit ids, or ``unit_sweep_failed`` answered by errors that mean "no
such unit" (0x04 server device failure, as single-unit servers answer, and the gateway errors
0x0A/0x0B); an address sweep is ``address_sweep_distinct`` read start addresses, or
``address_sweep_illegal`` answered ILLEGAL_DATA_ADDRESS; many exceptions is
``exception_distinct`` distinct (unit, function, address, exception code) failures, and is
not reported in a window where a more specific sweep already was. Each is reported at most
once per window and pair. A service sweep is ``scan_targets`` distinct host:port targets of TCP
connections that carried no payload (SYN scans, connect scans), from one client within the
window, a Modbus port among them.

Device identification (FC 43/14 Read Device Identification, FC 17 Report Server ID): when the
config declares engineering workstations (assets with role ``engineering``, or
``engineering_hosts``), every identification request from any other host is reported. With
no such declaration, what can be learned from the traffic is used: a connection whose only
requests identify the device (what nmap's modbus-discover, PLCScan and similar tools do) is
reported when it ends; an HMI that identifies a PLC and then polls it is normal.
"""

from __future__ import annotations

from typing import Any, Final

from sentinel.config import Config
from sentinel.detector_settings import PolicySettings, detector_settings
from sentinel.events import ConnId, ModbusMessage
from sentinel.findings import Finding
from sentinel.pipeline.detector import Detector, ModbusInterest, register

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

RULESET: Final = "sentinel-ot-recon"

FC_SWEEP = PolicyRule(9000201, "Modbus function code sweep", "medium", technique("T0888"))
UNIT_SWEEP = PolicyRule(9000202, "Modbus unit id sweep", "medium", technique("T0846"))
ADDRESS_SWEEP = PolicyRule(9000203, "Modbus address sweep", "medium", technique("T0861"))
DEVICE_ID = PolicyRule(
    9000204,
    "Modbus device identification from a non-engineering host",
    "medium",
    technique("T0888"),
)
EXCEPTIONS = PolicyRule(9000205, "Many Modbus exception responses", "medium", technique("T0888"))
HOST_SWEEP = PolicyRule(
    9000206,
    "Modbus service sweep: empty connections to many hosts or ports",
    "medium",
    technique("T0846"),
)
RULES: tuple[PolicyRule, ...] = (
    FC_SWEEP,
    UNIT_SWEEP,
    ADDRESS_SWEEP,
    DEVICE_ID,
    EXCEPTIONS,
    HOST_SWEEP,
)

# Exception codes (spec section 7).
ILLEGAL_FUNCTION: Final = 0x01
ILLEGAL_DATA_ADDRESS: Final = 0x02
# "No such unit": single-unit servers answer 0x04 SERVER_DEVICE_FAILURE, gateways 0x0A
# GATEWAY_PATH_UNAVAILABLE or 0x0B GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND.
UNIT_ERRORS: Final = frozenset({0x04, 0x0A, 0x0B})
SWEEPS: Final = frozenset({9000201, 9000202, 9000203})
# Read functions and the table their address refers to (spec 6.1-6.4, 6.17).
READ_TABLES: Final = {1: "coils", 2: "discretes", 3: "holding", 4: "input", 23: "holding"}
MEI_READ_DEVICE_ID: Final = 0x0E
EXCEPTIONS_ONLY: Final = ModbusInterest(functions=frozenset(), exceptions=True)
MAX_SEEN: Final = 512  # distinct requests remembered per pair and window (the polling fast path)


def is_identification(msg: ModbusMessage) -> bool:
    return msg.fc == 17 or (msg.fc == 43 and msg.fields.get("mei_type") == MEI_READ_DEVICE_ID)


def _address(request: ModbusMessage) -> int | None:
    """The start address a request reads (read_address for FC 23), None when it has none."""
    address = request.fields.get("read_address" if request.fc == 23 else "address")
    return address if isinstance(address, int) else None


class _Scan:
    """What one client tried against one server in the current window."""

    __slots__ = (
        "addresses",
        "evicted",
        "failed_units",
        "failures",
        "fcs",
        "fired",
        "illegal_addresses",
        "illegal_fcs",
        "seen",
        "start",
        "units",
    )

    def __init__(self) -> None:
        # the window's start (a ``common.Window`` kept inline, unboxed: one object less to
        # reach per request); its length is the detector's sweep_window
        self.start: float = NOT_STARTED
        self.evicted = False  # dropped from the detector's table: connections look it up again
        self._reset()

    def _reset(self) -> None:
        self.fcs: set[int] = set()
        self.illegal_fcs: set[int] = set()
        self.units: set[int] = set()
        self.failed_units: set[int] = set()
        self.addresses: set[tuple[str, int]] = set()
        self.illegal_addresses: set[tuple[int, int]] = set()
        self.failures: set[tuple[int, int, int | None, int]] = set()
        self.fired: set[int] = set()
        self.seen: set[int] = set()  # requests sent: their _signature_key

    def roll(self, ts: float, length: float) -> None:
        if starts_window(self.start, length, ts):
            self.start = ts
            self._reset()


class _Flow:
    __slots__ = ("conn", "first_id", "identify", "other", "pair", "scan")

    def __init__(self, conn: ConnId) -> None:
        self.conn = conn
        self.pair = (conn.orig_h, conn.resp_h)  # the key of its _Scan
        self.scan: _Scan | None = None  # that _Scan, kept at hand: no look-up per request
        self.identify = 0
        self.other = 0
        self.first_id: tuple[float, int, int, int, str, int] | None = None


class _Probes:
    """Empty TCP connections of one client in the current window."""

    __slots__ = ("fired", "modbus", "targets", "window")

    def __init__(self, length: float) -> None:
        self.window = Window(length)
        self.targets: set[tuple[str, int]] = set()
        self.modbus = False
        self.fired = False


class ModbusRecon(Detector):
    id = "modbus_recon"
    description = (
        "Reconnaissance of Modbus devices: function code, unit id, address and host sweeps, "
        "device identification, probing revealed by exception responses"
    )

    def __init__(self, config: Config, settings: PolicySettings | None = None) -> None:
        super().__init__(config)
        s = settings or detector_settings(config).policy
        self.settings = s
        self._disabled = frozenset(str(sid) for sid in s.disabled_rules)
        self._engineering = engineering_hosts(config, s.engineering_hosts)
        self._names = {a.address: a.name for a in config.assets if a.name}
        self._modbus_ports = frozenset(config.decode.modbus_ports)
        self._scans: dict[tuple[str, str], _Scan] = {}
        self._window = s.sweep_window
        self._flows: dict[str, _Flow] = {}
        self._probes: dict[str, _Probes] = {}

    # ------------------------------------------------------------------ events
    def modbus_interest(self, uid: str, conn: ConnId, is_orig: bool) -> ModbusInterest | None:
        """Every request; of the responses only exceptions, which name the request they
        answer (``msg.request``): normal responses never reach this detector."""
        return None if is_orig else EXCEPTIONS_ONLY

    def on_modbus(self, msg: ModbusMessage) -> list[Finding] | None:
        # The hot path, once per request: one tuple unpack, no allocation for a request that
        # repeats what the client already sent in this window (polling). Normal responses do
        # not come (``modbus_interest``) unless with a protocol event: skipped at once.
        ts, uid, _, is_orig, _, _, unit, fc, _, exception, _, _, fields, _ = msg
        if not is_orig:
            if exception is None:
                return None
        elif fc != 17 and fc != 43:  # a request, not an identification (is_identification)
            flow = self._flows.get(uid)
            if flow is None:
                flow = self._new_flow(msg)
            scan = flow.scan
            if scan is None or scan.evicted:
                scan = flow.scan = self._scan(flow.pair)
            scan.roll(ts, self._window)
            # only FC 23 (read/write multiple) carries a read_address (see _address)
            address = fields.get("read_address" if fc == 23 else "address")
            if not isinstance(address, int):
                address = None
            flow.other += 1
            key = _signature_key(fc, unit, address)
            if key in scan.seen:
                return None  # polling repeats itself: nothing new for any counter
            out: list[Finding] = []
            self._new_signature(msg, (fc, unit, address), scan, out)
            return self._enabled(out)
        out = []
        flow = self._flow(msg)
        scan = self._scan((msg.conn.orig_h, msg.conn.resp_h))
        scan.roll(msg.ts, self._window)
        if msg.is_orig:
            self._request(msg, flow, scan, out)
        else:
            self._exception(msg, flow, scan, out)
        return self._enabled(out)

    def on_flow_end(self, flow: dict) -> list[Finding] | None:
        out: list[Finding] = []
        state = self._flows.pop(flow["uid"], None)
        if state is not None and state.identify and not state.other and not self._engineering:
            ts, frame, tid, unit, func, fc = state.first_id  # type: ignore[misc]
            conn = state.conn
            ev = {
                "client": conn.orig_h,
                "server": conn.resp_h,
                "unit": unit,
                "function_code": fc,
                "function": func,
                "transaction_id": tid,
                "identification_requests": state.identify,
                "basis": "identification-only connection",
            }
            self._name(ev, conn.resp_h)
            out.append(
                make_finding(
                    DEVICE_ID,
                    self.id,
                    RULESET,
                    ts,
                    f"{conn.orig_h} identified {conn.resp_h} ({func}) without polling it",
                    ev,
                    conn=conn,
                    uid=flow["uid"],
                    frame=frame,
                )
            )
        self._probe(flow, out)
        return self._enabled(out)

    # ------------------------------------------------------------------ requests
    def _request(self, msg: ModbusMessage, flow: _Flow | None, scan: _Scan, out: list) -> None:
        fc, unit = msg.fc, msg.unit
        address = _address(msg)
        identification = is_identification(msg)
        if identification:
            if self._engineering:
                if msg.conn.orig_h not in self._engineering:
                    ev = self._evidence(msg)
                    ev["basis"] = "not a declared engineering host"
                    out.append(
                        self._finding(
                            DEVICE_ID,
                            msg,
                            f"{msg.conn.orig_h} (not an engineering host) identifies "
                            f"{msg.conn.resp_h} ({msg.func})",
                            ev,
                        )
                    )
            elif flow is not None:
                flow.identify += 1
                if flow.first_id is None:
                    flow.first_id = (msg.ts, msg.frame, msg.tid, unit, msg.func, fc)
        elif flow is not None:
            flow.other += 1
        key = _signature_key(fc, unit, address)
        if key in scan.seen:
            return  # polling repeats itself: nothing new for any counter
        self._new_signature(msg, (fc, unit, address), scan, out)

    def _new_signature(
        self, msg: ModbusMessage, signature: tuple[int, int, int | None], scan: _Scan, out: list
    ) -> None:
        """A request (function code, unit, address) not seen from this client in the window."""
        s = self.settings
        fc, unit, address = signature
        if len(scan.seen) < MAX_SEEN:
            scan.seen.add(_signature_key(fc, unit, address))
        if FC_SWEEP.sid not in scan.fired:
            scan.fcs.add(fc)
            if len(scan.fcs) >= s.fc_sweep_distinct:
                self._sweep(FC_SWEEP, msg, scan, out, function_codes=sorted(scan.fcs))
        if UNIT_SWEEP.sid not in scan.fired:
            scan.units.add(unit)
            if len(scan.units) >= s.unit_sweep_distinct:
                self._sweep(UNIT_SWEEP, msg, scan, out, unit_ids=_span(scan.units))
        table = READ_TABLES.get(fc)
        if table is not None and address is not None and ADDRESS_SWEEP.sid not in scan.fired:
            scan.addresses.add((table, address))
            if len(scan.addresses) >= s.address_sweep_distinct:
                self._sweep(
                    ADDRESS_SWEEP,
                    msg,
                    scan,
                    out,
                    start_addresses=len(scan.addresses),
                    tables=sorted({t for t, _ in scan.addresses}),
                    address_range=_span(a for _, a in scan.addresses),
                )

    def _exception(self, msg: ModbusMessage, flow: _Flow | None, scan: _Scan, out: list) -> None:
        s = self.settings
        request = msg.request  # paired by the decoder
        if request is not None:
            fc, unit, address = request.fc, request.unit, _address(request)
        else:
            fc, unit, address = msg.fc, msg.unit, None
        code = msg.fields.get("exception_code")
        if not isinstance(code, int):
            return
        if code == ILLEGAL_FUNCTION and FC_SWEEP.sid not in scan.fired:
            scan.illegal_fcs.add(fc)
            if len(scan.illegal_fcs) >= s.fc_sweep_illegal:
                self._sweep(
                    FC_SWEEP, msg, scan, out, illegal_function_codes=sorted(scan.illegal_fcs)
                )
        if code in UNIT_ERRORS and UNIT_SWEEP.sid not in scan.fired:
            scan.failed_units.add(unit)
            if len(scan.failed_units) >= s.unit_sweep_failed:
                self._sweep(UNIT_SWEEP, msg, scan, out, failed_unit_ids=_span(scan.failed_units))
        if (
            code == ILLEGAL_DATA_ADDRESS
            and address is not None
            and ADDRESS_SWEEP.sid not in scan.fired
        ):
            scan.illegal_addresses.add((fc, address))
            if len(scan.illegal_addresses) >= s.address_sweep_illegal:
                self._sweep(
                    ADDRESS_SWEEP,
                    msg,
                    scan,
                    out,
                    illegal_addresses=len(scan.illegal_addresses),
                    address_range=_span(a for _, a in scan.illegal_addresses),
                )
        if EXCEPTIONS.sid not in scan.fired and not scan.fired & SWEEPS:
            scan.failures.add((unit, fc, address, code))
            if len(scan.failures) >= s.exception_distinct:
                self._sweep(
                    EXCEPTIONS,
                    msg,
                    scan,
                    out,
                    distinct_failures=len(scan.failures),
                    exception_codes=sorted({c for *_, c in scan.failures}),
                )

    # ------------------------------------------------------------------ host sweep
    def _probe(self, flow: dict, out: list) -> None:
        """A TCP connection that carried no payload either way (a scan's probe)."""
        if flow.get("proto") != "tcp" or flow.get("orig_bytes") or flow.get("resp_bytes"):
            return
        client = flow["orig_h"]
        entry = self._probes.get(client)
        if entry is None:
            if len(self._probes) >= self.settings.max_hosts:
                del self._probes[next(iter(self._probes))]
            entry = self._probes[client] = _Probes(self.settings.sweep_window)
        if entry.window.roll(flow["ts"]):
            entry.targets.clear()
            entry.fired = False
            entry.modbus = False
        if entry.fired or len(entry.targets) > 4 * self.settings.scan_targets:
            return
        port = flow["resp_p"]
        entry.targets.add((flow["resp_h"], port))
        if port in self._modbus_ports:
            entry.modbus = True
        if entry.modbus and len(entry.targets) >= self.settings.scan_targets:
            entry.fired = True
            hosts = sorted({h for h, _ in entry.targets})
            ports = sorted({p for _, p in entry.targets})
            conn = ConnId(flow["orig_h"], flow["orig_p"], flow["resp_h"], flow["resp_p"])
            ev = {
                "client": client,
                "targets": len(entry.targets),
                "hosts": hosts[:32],
                "ports": ports[:64],
                "modbus_ports": sorted(self._modbus_ports.intersection(ports)),
                "window_seconds": self.settings.sweep_window,
                "window_start": entry.window.start,
            }
            out.append(
                make_finding(
                    HOST_SWEEP,
                    self.id,
                    RULESET,
                    flow["ts"],
                    f"{client} opened empty connections to {len(entry.targets)} services "
                    f"({len(hosts)} hosts, {len(ports)} ports) within "
                    f"{self.settings.sweep_window:g} s",
                    ev,
                    conn=conn,
                    uid=flow["uid"],
                )
            )

    # ------------------------------------------------------------------ helpers
    def _flow(self, msg: ModbusMessage) -> _Flow | None:
        """The connection's state; a response creates none."""
        flow = self._flows.get(msg.uid)
        if flow is None and msg.is_orig:
            flow = self._new_flow(msg)
        return flow

    def _new_flow(self, msg: ModbusMessage) -> _Flow:
        if len(self._flows) >= self.settings.max_flows:
            del self._flows[next(iter(self._flows))]
        flow = self._flows[msg.uid] = _Flow(msg.conn)
        return flow

    def _scan(self, key: tuple[str, str]) -> _Scan:
        scan = self._scans.get(key)
        if scan is None:
            if len(self._scans) >= self.settings.max_pairs:
                oldest = next(iter(self._scans))
                self._scans.pop(oldest).evicted = True
            scan = self._scans[key] = _Scan()
        return scan

    def _sweep(
        self, rule: PolicyRule, msg: ModbusMessage, scan: _Scan, out: list, **counts: Any
    ) -> None:
        scan.fired.add(rule.sid)
        ev = {
            "client": msg.conn.orig_h,
            "server": msg.conn.resp_h,
            **counts,
            "window_seconds": self.settings.sweep_window,
            "window_start": scan.start,
        }
        self._name(ev, msg.conn.resp_h)
        detail = ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if isinstance(v, int)
        )
        what = f" ({detail})" if detail else ""
        out.append(
            self._finding(
                rule, msg, f"{rule.name} from {msg.conn.orig_h} on {msg.conn.resp_h}{what}", ev
            )
        )

    def _evidence(self, msg: ModbusMessage) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "client": msg.conn.orig_h,
            "server": msg.conn.resp_h,
            "unit": msg.unit,
            "function_code": msg.fc,
            "function": msg.func,
            "transaction_id": msg.tid,
        }
        self._name(ev, msg.conn.resp_h)
        return ev

    def _name(self, ev: dict[str, Any], ip: str) -> None:
        name = self._names.get(ip)
        if name:
            ev["asset"] = name

    def _finding(
        self, rule: PolicyRule, msg: ModbusMessage, message: str, evidence: dict[str, Any]
    ) -> Finding:
        return message_finding(rule, self.id, RULESET, msg, message, evidence)

    def _enabled(self, out: list[Finding]) -> list[Finding]:
        if self._disabled and out:
            return [f for f in out if f.rule_id not in self._disabled]
        return out


def _signature_key(fc: int, unit: int, address: int | None) -> int:
    """A request's (function code, unit, address) as one int: a set of ints is cheaper to
    probe than one of tuples (fc and unit are bytes; None is not an address)."""
    return fc | unit << 8 | (0 if address is None else address + 1) << 16


def _span(values: Any) -> list[int]:
    """[lowest, highest] of a set of numbers (evidence stays small whatever the sweep size)."""
    items = list(values)
    return [min(items), max(items)] if items else []


# Registered by a call, not with the decorator: a decorated class is not compiled as a
# native class (docs/native.md).
register(ModbusRecon)
