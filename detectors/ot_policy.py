"""OT policy for DNP3, IEC 60870-5-104, S7comm, EtherNet/IP-CIP and BACnet: dangerous operations.

Like Zeek's policy scripts over its base scripts, this module never parses bytes: it reads the
normalised ``OTEvent`` (``operation``, ``function``, ``status``, protocol detail) built by
``sentinel.decode.ot`` from Wireshark's dissections. Settings: ``ot.policy``
(``sentinel/decode/ot_settings.py``); assets and their ``allowed_masters`` and ``role`` from
the site configuration.

Rules (ids 90007xx, next to the Modbus policy's 90001xx, see ``detectors/common.py``; 22700xx
belongs to Suricata's DNP3 app-layer event rules, which the rule engine ships):

=======  ====================================================  =======  =======================
id       finding (on requests unless said otherwise)           needs    technique
=======  ====================================================  =======  =======================
9000701  controller or application stopped                     -        T0858 Change Op. Mode
9000702  controller or application started                     -        T0858 Change Op. Mode
9000703  device restarted or reinitialised                     -        T0816 Device Restart
9000704  program / configuration / block / file download       -        T0843 Program Download
9000705  program upload                                        -        T0845 Program Upload
9000706  firmware update                                       -        T0857 System Firmware
9000707  file, block or memory deleted                         -        T0809 Data Destruction
9000708  control command from a client not allowed            either   T0855 Unauth. Command
9000709  setpoint / value write from a client not allowed     either   T0836 Modify Parameter
9000710  reporting disabled and not re-enabled (DNP3, 104)    -        T0804 Block Reporting
9000711  device communication disabled (BACnet DCC)           -        T0814 Denial of Service
9000712  clock set by a client not allowed                    either   T0855 Unauth. Command
9000713  authentication failure (response, or error message)  -        T0859 Valid Accounts
9000714  I/O forced (S7 force)                                -        T0835 Manipulate I/O
=======  ====================================================  =======  =======================

*Allowed clients* (9000708, 9000709, 9000712): if the target device is a declared asset with
``allowed_masters``, exactly those hosts; otherwise the device's masters learned in the first
``ot.policy.learning_seconds`` of OT traffic: every client that sent it requests (of that
protocol) then. A client not allowed is reported once per device and kind of operation
(control, write, time).

*Engineering work* (9000701-9000707, 9000714) is not reported when the client is a declared
asset with role ``engineering`` (or listed in ``ot.policy.engineering_hosts``) and the target
allows it (no ``allowed_masters``, or listed there): stopping, programming and restarting
controllers is what engineering workstations are for.

*Unsolicited reporting* (9000710): DNP3 masters send DISABLE_UNSOLICITED at start-up, poll,
then ENABLE_UNSOLICITED; a disable that is not followed by an enable to the same outstation
within ``ot.policy.unsolicited_grace`` seconds is reported (checked on later OT events and
every second of packet time; a disable in the last seconds of a capture is not reported).
IEC 104 data transfer the same way: a STOPDT act (the station stops sending spontaneous
data and commands' confirmations) not followed within the grace by a STARTDT act to the same
device, on any connection (a redundant controlling station switches connections with
STOPDT on one and STARTDT on another), is reported.

Benign captures: with no configuration, the ics-samples captures (tests/ot/data/ics-samples)
raise no finding; Zeek's DNP3 test captures raise restarts, stops, file deletion, the file
write (program download) and disabled unsolicited reporting, which they contain
(tests/ot/test_policy.py).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from sentinel.config import Config
from sentinel.decode.ot_settings import ot_settings
from sentinel.events import OTEvent
from sentinel.findings import Finding
from sentinel.pipeline.detector import Detector, register

from .common import PolicyRule, engineering_hosts, make_finding, technique

RULESET = "sentinel-ot-policy"
DETECTOR = "ot_policy"

STOP = PolicyRule(9000701, "OT controller or application stopped", "high", technique("T0858"))
START = PolicyRule(9000702, "OT controller or application started", "medium", technique("T0858"))
RESTART = PolicyRule(9000703, "OT device restarted or reinitialised", "high", technique("T0816"))
DOWNLOAD = PolicyRule(
    9000704, "OT program, configuration or file download", "high", technique("T0843")
)
UPLOAD = PolicyRule(9000705, "OT program upload", "medium", technique("T0845"))
FIRMWARE = PolicyRule(9000706, "OT firmware update", "critical", technique("T0857"))
DELETE = PolicyRule(9000707, "OT file, block or memory deleted", "high", technique("T0809"))
CONTROL = PolicyRule(
    9000708, "OT control command from a client not allowed", "high", technique("T0855")
)
WRITE = PolicyRule(
    9000709, "OT setpoint or value write from a client not allowed", "high", technique("T0836")
)
UNSOLICITED_OFF = PolicyRule(9000710, "OT event reporting disabled", "medium", technique("T0804"))
COMM_OFF = PolicyRule(9000711, "BACnet device communication disabled", "high", technique("T0814"))
TIME = PolicyRule(9000712, "OT clock set by a client not allowed", "medium", technique("T0855"))
AUTH_FAILURE = PolicyRule(9000713, "OT authentication failure", "medium", technique("T0859"))
FORCE = PolicyRule(9000714, "OT I/O forced", "high", technique("T0835"))

RULES: tuple[PolicyRule, ...] = (
    STOP,
    START,
    RESTART,
    DOWNLOAD,
    UPLOAD,
    FIRMWARE,
    DELETE,
    CONTROL,
    WRITE,
    UNSOLICITED_OFF,
    COMM_OFF,
    TIME,
    AUTH_FAILURE,
    FORCE,
)
OPERATION_RULES: dict[str, PolicyRule] = {
    "stop": STOP,
    "start": START,
    "restart": RESTART,
    "program_download": DOWNLOAD,
    "program_upload": UPLOAD,
    "firmware": FIRMWARE,
}
ENGINEERING_RULES = frozenset(r.sid for r in (STOP, START, RESTART, DOWNLOAD, UPLOAD, FIRMWARE))
ENGINEERING_RULES |= {DELETE.sid, FORCE.sid}
# Deletions, by (protocol, function) as the normalisers name them.
DELETIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("dnp3", "DELETE_FILE"),
        ("s7comm", "PI-Service _DELE"),
        ("s7comm", "Programmer commands / Memory reset"),
        ("enip", "Clear_File"),
    }
)
# File writes: a file sent to a controller is a program, configuration or firmware.
DNP3_FILE_WRITE_MODES = frozenset({2, 3})  # OPEN_FILE mode WRITE, APPEND (IEEE 1815 A.44)
FORCES: frozenset[tuple[str, str]] = frozenset(
    {("s7comm", "Programmer commands / Force"), ("s7comm", "Programmer commands / Force selection")}
)
BACNET_FILE_OBJECT = 10
STOPDT_KEY = "iec104-stopdt"  # the unit of an IEC 104 STOPDT in the disabled-reporting table
# The allowed-client family of each operation (rules 9000708, 9000709, 9000712).
FAMILIES: dict[str, PolicyRule] = {"control": CONTROL, "write": WRITE, "time_sync": TIME}
MAX_LISTED = 16


def _trim(value: Any, depth: int = 0) -> Any:
    """Evidence stays small: lists cut at MAX_LISTED, nesting at four levels."""
    if isinstance(value, dict):
        return {k: _trim(v, depth + 1) for k, v in value.items()} if depth < 4 else "..."
    if isinstance(value, list | tuple):
        return [_trim(v, depth + 1) for v in value[:MAX_LISTED]]
    return value


@register
class OTPolicy(Detector):
    id = DETECTOR
    description = (
        "Dangerous operations on DNP3, IEC 104, S7comm, EtherNet/IP-CIP and BACnet: controller "
        "stop/start/restart, program and firmware download, deletions, control and setpoint "
        "writes from clients not allowed, disabled reporting and communication, clock changes, "
        "authentication failures"
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        settings = ot_settings(config).policy
        self.settings = settings
        self.disabled = frozenset(str(r) for r in settings.disabled_rules)
        self.assets = {a.address: a for a in config.assets}
        self.engineering = engineering_hosts(config, settings.engineering_hosts)
        self.learn_until: float | None = None
        # (device, protocol) -> clients that sent it requests while learning
        self.known: OrderedDict[tuple[str, str], set[str]] = OrderedDict()
        self.reported: set[tuple[str, str, str, str]] = set()
        # (server, outstation address) -> (disable event, first seen)
        self.unsolicited: OrderedDict[tuple[str, Any], OTEvent] = OrderedDict()

    # ------------------------------------------------------------------ events
    def on_ot(self, ev: OTEvent) -> list[Finding] | None:
        if self.learn_until is None:
            self.learn_until = ev.ts + self.settings.learning_seconds
        out: list[Finding] = []
        if self.unsolicited:
            self._expire_unsolicited(ev.ts, out)
        if ev.direction == "request":
            self._request(ev, out)
        if ev.status == "authentication_error":
            # DNP3 g120v7 and IEC 60870-5-7 S_ER_NA_1 travel either way (cause 14-16 reads
            # as a request): the device is the connection's responder.
            self._emit(AUTH_FAILURE, ev, out, server_sent=not ev.is_orig)
        elif (
            ev.direction == "response"
            and ev.status not in (None, "ok")
            and _authentication_failure(ev)
        ):
            self._emit(AUTH_FAILURE, ev, out, server_sent=True)
        return out or None

    def on_tick(self, now: float) -> list[Finding] | None:
        if not self.unsolicited:
            return None
        out: list[Finding] = []
        self._expire_unsolicited(now, out)
        return out or None

    # ------------------------------------------------------------------ requests
    def _request(self, ev: OTEvent, out: list[Finding]) -> None:
        proto, op, func = ev.protocol, ev.operation, ev.function
        client, server = _client_server(ev)
        self._learn(client, server, proto, ev.ts)
        detail = ev.detail.get(proto) or {}
        rule = OPERATION_RULES.get(op)
        if (proto, func) in DELETIONS or (
            proto == "bacnet"
            and func == "deleteObject"
            and (detail.get("object") or {}).get("type") == BACNET_FILE_OBJECT
        ):
            rule = DELETE
        elif (proto, func) in FORCES:
            rule = FORCE
        elif (
            proto == "dnp3"
            and func == "OPEN_FILE"
            and (detail.get("file") or {}).get("mode") in DNP3_FILE_WRITE_MODES
        ) or (proto == "bacnet" and func == "atomicWriteFile"):
            rule = DOWNLOAD
        if rule is not None:
            if not (rule.sid in ENGINEERING_RULES and self._engineering(client, server)):
                self._emit(rule, ev, out)
            return
        if proto == "dnp3" and func == "DISABLE_UNSOLICITED":
            key = (server, ev.unit)
            if key not in self.unsolicited and len(self.unsolicited) < self.settings.max_tracked:
                self.unsolicited[key] = ev
            return
        if proto == "dnp3" and func == "ENABLE_UNSOLICITED":
            self.unsolicited.pop((server, ev.unit), None)
            return
        if proto == "iec104" and func in ("STOPDT_ACT", "STARTDT_ACT"):
            key = (server, STOPDT_KEY)
            if func == "STARTDT_ACT":
                self.unsolicited.pop(key, None)
            elif key not in self.unsolicited and len(self.unsolicited) < self.settings.max_tracked:
                self.unsolicited[key] = ev
            return
        if proto == "bacnet" and func == "deviceCommunicationControl":
            if detail.get("enable_disable") in ("disable", "disable-initiation"):
                self._emit(COMM_OFF, ev, out)
            return
        family = FAMILIES.get(op)
        if family is not None and not self._allowed(client, server, proto, op, ev.ts):
            self._emit(family, ev, out)

    def _learn(self, client: str, server: str, proto: str, ts: float) -> None:
        """During learning, every client that sends requests to a device is one of its
        masters (polling, then commands: the established control centre or HMI)."""
        if self.learn_until is None or ts >= self.learn_until:
            return
        key = (server, proto)
        clients = self.known.get(key)
        if clients is None:
            if len(self.known) >= self.settings.max_tracked:
                return
            clients = self.known[key] = set()
        if len(clients) < 1024:
            clients.add(client)

    def _allowed(self, client: str, server: str, proto: str, family: str, ts: float) -> bool:
        asset = self.assets.get(server)
        if asset is not None and asset.allowed_masters:
            return client in asset.allowed_masters
        if self.learn_until is None or ts < self.learn_until:
            return True
        clients = self.known.get((server, proto))
        if clients is not None and client in clients:
            return True
        key = (client, server, proto, family)
        if key in self.reported or len(self.reported) >= self.settings.max_tracked:
            return True
        self.reported.add(key)  # reported once per client, device and kind of operation
        return False

    def _engineering(self, client: str, server: str) -> bool:
        if client not in self.engineering:
            return False
        asset = self.assets.get(server)
        return asset is None or not asset.allowed_masters or client in asset.allowed_masters

    def _expire_unsolicited(self, now: float, out: list[Finding]) -> None:
        grace = self.settings.unsolicited_grace
        while self.unsolicited:
            key, ev = next(iter(self.unsolicited.items()))
            if now - ev.ts <= grace and now >= ev.ts:
                break
            del self.unsolicited[key]
            self._emit(UNSOLICITED_OFF, ev, out, extra={"re_enabled_within": grace})

    # ------------------------------------------------------------------ findings
    def _emit(
        self,
        rule: PolicyRule,
        ev: OTEvent,
        out: list[Finding],
        server_sent: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if rule.rule_id in self.disabled:
            return
        client, server = _client_server(ev, server_sent)
        evidence: dict[str, Any] = {
            "protocol": ev.protocol,
            "function": ev.function,
            "code": ev.code,
            "operation": ev.operation,
            "direction": ev.direction,
            "client": client,
            "server": server,
        }
        if ev.unit is not None:
            evidence["unit"] = ev.unit
        if ev.objects:
            evidence["objects"] = _trim(list(ev.objects))
        if ev.status is not None:
            evidence["status"] = ev.status
        if ev.flags:
            evidence["flags"] = list(ev.flags)
        evidence[ev.protocol] = _trim(ev.detail.get(ev.protocol) or {})
        if extra:
            evidence.update(extra)
        unit = f" (unit {ev.unit})" if ev.unit is not None else ""
        message = f"{rule.name}: {ev.protocol} {ev.function} from {client} to {server}{unit}"
        if ev.status not in (None, "ok"):
            message += f", {ev.status}"
        out.append(
            make_finding(
                rule,
                DETECTOR,
                RULESET,
                ev.ts,
                message,
                evidence,
                conn=ev.conn,
                uid=ev.uid,
                frame=ev.frame,
                protocol=ev.protocol,
                transport=ev.transport,
            )
        )


def _client_server(ev: OTEvent, server_sent: bool | None = None) -> tuple[str, str]:
    """(client, device) of a message: a request goes client -> device."""
    c = ev.conn
    sender, receiver = (c.orig_h, c.resp_h) if ev.is_orig else (c.resp_h, c.orig_h)
    if server_sent is None:
        server_sent = ev.direction != "request"
    return (receiver, sender) if server_sent else (sender, receiver)


def _authentication_failure(ev: OTEvent) -> bool:
    proto = ev.protocol
    detail = ev.detail.get(proto) or {}
    if ev.status == "authentication_error":  # DNP3 SAv5 g120v7, IEC 60870-5-7 S_ER_NA_1
        return True
    if proto == "s7comm":  # Security / PLC password refused
        return detail.get("group") == 5
    if proto == "enip":
        return ev.status == "privilege_violation"
    if proto == "bacnet":
        return bool(detail.get("authentication_failure"))
    return False
