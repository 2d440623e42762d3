"""The rule engine as a detector: Suricata-compatible rules over the pipeline's events.

Loads the shipped rule sets (``signatures/*.rules``) plus any ``sentinel analyze --rules``
additions, and turns every alert into two things:

- a ``Finding`` returned to the pipeline (which aggregates repeats): ``rule.id`` is the sid,
  ``rule.name`` the msg, ``rule.ruleset`` the rule file, the severity comes from the priority
  (1 high, 2 medium, 3 and above low), the ATT&CK technique from the rule's metadata or its
  classtype, and the evidence (rule, direction, Modbus fields, events) sits in
  ``sentinel.evidence``;
- when an EVE sink is attached, one EVE ``alert`` record, handed over directly so EVE gets
  every alert unaggregated, plus one ``modbus`` record per transaction.

The detector subscribes only to the events its rules need (a rule set without packet rules
costs nothing per packet, one without DNP3 rules never sees an ``OTEvent``): the instance is
of a subclass that overrides just those ``on_*`` methods.

DNP3: rules with DNP3 keywords, ``dnp3_data`` or ``app-layer-event:dnp3.*`` match the
tshark-decoded DNP3 messages (``on_ot``); each message is one transaction direction, so a
signature alerts at most once per message. The native DNP3 link checker's events
(``dnp3.bad_link_crc``, ``dnp3.len_too_small`` for a link length below 5, ``dnp3.flooded``;
``sentinel/decode/dnp3_link.py``) arrive as anomalies and are matched at once, on their own.
EVE alerts carry ``app_proto: dnp3``, the ``dnp3`` object and ``tx_id`` (per flow, counted
over the DNP3 messages this detector saw).

Protocol events: the decoder reports an anomaly just before the message it concerns (same
flow, direction and frame), so anomalies wait in ``_pending`` until that message arrives and
are matched with it, as Suricata matches events on the current transaction; anomalies that
no message follows (framing errors, non-Modbus bytes) are matched on their own at the next
event.

This detector owns the Modbus protocol-event sids (22500xx), so the older built-in
``protocol_anomalies`` detector is taken out of the registry here: the same anomaly must not
give two findings.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from sentinel.config import Config
from sentinel.events import Anomaly, ConnId, ModbusMessage, OTEvent, PacketEvent, StreamData
from sentinel.findings import Finding
from sentinel.pipeline.detector import (
    NO_CHUNK,
    Detector,
    ModbusInterest,
    StreamGate,
    register,
)
from sentinel.rules import loader
from sentinel.rules import modbus as mb
from sentinel.rules.engine import Alert, RuleEngine
from sentinel.rules.model import KIND_APP
from sentinel.rules.parser import RuleSet
from sentinel.rules.transactions import ModbusTransaction, TransactionTracker

log = logging.getLogger(__name__)

MAX_VALUES = 16  # register/coil values kept in a finding's evidence
EVIDENCE_FIELDS = (
    "address", "quantity", "read_address", "read_quantity", "sub_function", "sub_function_name",
    "mei_type", "exception_code", "and_mask", "or_mask",
)  # fmt: skip

# The built-in detector whose findings the shipped modbus-events.rules replace.


@register
class RuleDetector(Detector):
    """Suricata-compatible rules (see module docstring and docs/rules.md)."""

    id = "rules"
    description = "Suricata-compatible rules: shipped signatures/*.rules and --rules sets"
    _variants: ClassVar[dict[frozenset[str], type[RuleDetector]]] = {}
    _preloaded: tuple[RuleSet, RuleEngine, Any]  # from __new__ to __init__

    def __new__(cls, config: Config, *args: Any, **kwargs: Any) -> RuleDetector:
        if args:
            kwargs = {**kwargs, "ruleset": args[0]}
        ruleset = _ruleset(config, kwargs)
        engine = RuleEngine(ruleset.rules, config.decode.max_flows)
        eve = kwargs.get("eve")
        wanted = {"on_flow_end"}
        if engine.wants_packets:
            wanted.add("on_packet")
        if engine.wants_stream:
            wanted.add("on_stream")
        if engine.wants_app or engine.needs_modbus_flows or eve is not None:
            wanted.update(("on_modbus", "on_anomaly"))
        if engine.wants_dnp3:
            wanted.update(("on_ot", "on_anomaly"))  # DNP3 link checker: dnp3.* anomalies
        variant = cls._variant(frozenset(wanted))
        inst = super().__new__(variant)
        inst._preloaded = (ruleset, engine, eve)
        return inst

    @classmethod
    def _variant(cls, methods: frozenset[str]) -> type[RuleDetector]:
        variant = cls._variants.get(methods)
        if variant is None:
            impl = {m: getattr(cls, "_" + m) for m in methods}
            name = f"{cls.__name__}[{','.join(sorted(m[3:] for m in methods))}]"
            variant = type(name, (cls,), impl)
            cls._variants[methods] = variant
        return variant

    def __init__(
        self,
        config: Config,
        ruleset: RuleSet | None = None,
        *,
        paths: tuple[str, ...] | list[str] = (),
        include_default: bool = True,
        vars_file: str | None = None,
        eve: Any = None,
    ) -> None:
        super().__init__(config)
        self.ruleset, self.engine, self.eve = self._preloaded
        del self._preloaded
        loader.report(self.ruleset)
        self.modbus_ports = frozenset(config.decode.modbus_ports)
        self._pending: list[Anomaly] = []
        self.tracker: TransactionTracker | None = None
        if self.eve is not None:  # EVE logs transactions: pair requests and responses
            self.tracker = TransactionTracker(
                self.eve.transaction, config.decode.max_pending_requests, config.decode.max_flows
            )
        self.listeners: list[Any] = []  # callables receiving every Alert (rules test)
        self._dnp3_tx: dict[str, int] = {}  # uid -> DNP3 messages seen (EVE tx_id)
        self._wants_stream = "on_stream" in self.subscriptions()  # read per flow direction

    # ------------------------------------------------------------------ events
    def _on_packet(self, packet: PacketEvent) -> list[Finding] | None:
        out = self._flush() if self._pending else None
        alerts = self.engine.inspect_packet(packet)
        if alerts:
            out = (out or []) + self._report(alerts)
        return out

    def _on_stream(self, chunk: StreamData) -> list[Finding] | None:
        if self._pending:
            out = self._flush()
            alerts = self.engine.inspect_stream(chunk)
            return out + self._report(alerts) if alerts else out
        alerts = self.engine.inspect_stream(chunk)
        return self._report(alerts) if alerts else None

    def modbus_interest(self, uid: str, conn: ConnId, is_orig: bool) -> ModbusInterest | None:
        """The messages the direction's rules can alert on (the modbus keyword's function
        codes, derived events): on polling traffic, most messages never reach the engine.
        EVE logs every transaction, so then all."""
        if self.tracker is not None:
            return None
        interest = self.engine.modbus_interest(uid, conn, is_orig)
        return None if interest is None else ModbusInterest(*interest)

    def stream_gate(self, uid: str, conn: ConnId, is_orig: bool, proto: int) -> StreamGate | None:
        """Only the chunks the direction's stream rules can match (the plan's fast patterns
        and sizes): on Modbus flows, almost none is turned into an event."""
        if not self._wants_stream:
            return NO_CHUNK
        gate = self.engine.stream_gate(uid, conn, is_orig, proto)
        return None if gate is None else StreamGate(gate)

    def _on_anomaly(self, event: Anomaly) -> list[Finding] | None:
        if event.name.startswith("dnp3."):  # the DNP3 link checker's: no message follows
            alerts = self.engine.inspect_event(event)
            return self._report(alerts) if alerts else None
        out = None
        pending = self._pending
        if pending:
            p = pending[0]
            if (p.uid, p.is_orig, p.frame) != (event.uid, event.is_orig, event.frame):
                out = self._flush()
        pending.append(event)
        return out

    def _on_modbus(self, msg: ModbusMessage) -> list[Finding] | None:
        if not self._pending and self.tracker is None:  # the common case, kept lean
            alerts = self.engine.inspect_modbus(msg)
            return self._report(alerts) if alerts else None
        out: list[Finding] | None = None
        events: tuple[Anomaly, ...] = ()
        if self._pending:
            mine = [
                e for e in self._pending
                if e.uid == msg.uid and e.is_orig == msg.is_orig and e.frame == msg.frame
            ]  # fmt: skip
            if len(mine) < len(self._pending):
                self._pending = [e for e in self._pending if e not in mine]
                out = self._flush()
            self._pending = []
            events = tuple(mine)
        tx = None
        request = None
        has_request = None
        tracker = self.tracker
        if tracker is not None:
            opened = tracker.request_of(msg)
            has_request = msg.is_orig or opened is not None
            if opened is not None and opened.request is not None:
                request = opened.request.fields
            names = tuple(e.name.split(".", 1)[1] for e in events)
            names += tuple(mb.derived_events(msg, request))
            tx = tracker.message(msg, names)
        alerts = self.engine.inspect_modbus(msg, events, request, has_request)
        if alerts:
            out = (out or []) + self._report(alerts, tx)
        return out

    def _on_ot(self, ev: OTEvent) -> list[Finding] | None:
        if ev.protocol != "dnp3":
            return None
        tx_id = None
        if self.eve is not None and ev.uid is not None and ev.code is not None:
            counts = self._dnp3_tx
            if ev.uid not in counts and len(counts) >= self.config.decode.max_flows:
                del counts[next(iter(counts))]
            tx_id = counts.get(ev.uid, -1) + 1
            counts[ev.uid] = tx_id
        alerts = self.engine.inspect_ot(ev)
        return self._report(alerts, tx_id=tx_id) if alerts else None

    def _on_flow_end(self, flow: dict) -> list[Finding] | None:
        out = self._flush() if self._pending else None
        uid = flow["uid"]
        if self.tracker is not None:
            self.tracker.flow_ended(uid)
        self.engine.flow_ended(uid)
        return out

    # ------------------------------------------------------------------ alerts
    def _flush(self) -> list[Finding]:
        """Match anomalies that no message claimed, each on its own."""
        pending, self._pending = self._pending, []
        out: list[Finding] = []
        for ev in pending:
            alerts = self.engine.inspect_event(ev)
            if alerts:
                out += self._report(alerts)
        return out

    def _report(
        self, alerts: list[Alert], tx: ModbusTransaction | None = None, tx_id: int | None = None
    ) -> list[Finding]:
        findings = []
        for a in alerts:
            app_proto = self._app_proto(a)
            if self.eve is not None:
                if a.ot is not None:
                    self.eve.alert(a, None, app_proto, tx_id=tx_id)
                else:
                    self.eve.alert(a, tx if a.message is not None else None, app_proto)
            for listener in self.listeners:
                listener(a)
            findings.append(self._finding(a, app_proto))
        return findings

    def _app_proto(self, a: Alert) -> str | None:
        if a.rule.app_proto or a.kind == KIND_APP:
            return a.rule.app_proto or "modbus"
        if a.uid in self.engine.modbus_flows or a.conn.resp_p in self.modbus_ports:
            return "modbus"
        return None

    def _finding(self, a: Alert, app_proto: str | None) -> Finding:
        rule = a.rule
        transport = "udp" if rule.transport == 17 else "tcp"
        protocol = app_proto or transport
        evidence: dict[str, Any] = {
            "rule": {
                "sid": rule.sid,
                "gid": rule.gid,
                "rev": rule.rev,
                "action": rule.header.action,
                "classtype": rule.classtype,
                "category": rule.category,
                "priority": rule.priority,
                "file": rule.location.path,
                "line": rule.location.line,
            },
            "technique_source": rule.technique_source,
            "direction": "to_server" if a.is_orig else "to_client",
            "inspected": {"app": "transaction" if a.message or _is_tx(a.ot) else "event"}.get(
                a.kind, a.kind
            ),
        }
        if rule.metadata:
            evidence["rule"]["metadata"] = rule.metadata_dict
        if a.payload_length is not None:
            evidence["payload_length"] = a.payload_length
        message = rule.msg
        if a.message is not None:
            evidence["modbus"] = _modbus_evidence(a.message)
        if a.ot is not None:
            evidence["dnp3"] = _dnp3_evidence(a.ot)
        if a.events:
            derived = (
                "reported by the DNP3 decoder" if a.ot is not None
                else "derived from the decoded message"
            )  # fmt: skip
            evidence["events"] = [
                {"name": e.name, "detail": e.detail} if isinstance(e, Anomaly)
                else {"name": f"{protocol}.{e}", "detail": derived}
                for e in a.events
            ]  # fmt: skip
            details = [e.detail for e in a.events if isinstance(e, Anomaly) and e.detail]
            if details:
                message = f"{rule.msg}: {'; '.join(details)}"
        return Finding(
            ts=a.ts,
            rule_id=str(rule.sid),
            rule_name=rule.msg,
            ruleset=rule.ruleset,
            severity=rule.severity,
            technique=rule.technique,
            message=message,
            detector=self.id,
            conn=a.conn,
            uid=a.uid,
            transport=transport,
            protocol=protocol,
            dataset=f"sentinel.{protocol}",
            frame=a.frame,
            evidence=evidence,
            reference=rule.reference_url,
        )


def _modbus_evidence(msg: ModbusMessage) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "tid": msg.tid,
        "unit": msg.unit,
        "fc": msg.fc,
        "func": msg.func,
        "pdu_type": msg.pdu_type,
    }
    if msg.exception:
        ev["exception"] = msg.exception
    fields = msg.fields
    for key in EVIDENCE_FIELDS:
        if key in fields:
            ev[key] = fields[key]
    values = fields.get("values")
    if values:
        ev["values"] = values[:MAX_VALUES]
        if len(values) > MAX_VALUES:
            ev["values_truncated"] = len(values)
    return ev


def _is_tx(ev: OTEvent | None) -> bool:
    return ev is not None and ev.code is not None


def _dnp3_evidence(ev: OTEvent) -> dict[str, Any]:
    d = ev.detail.get("dnp3", {})
    out: dict[str, Any] = {
        "direction": ev.direction,
        "function": ev.function,
        "fc": ev.code,
        "link": {k: d.get("link", {}).get(k) for k in ("src", "dst")},
        "objects": [f"g{h['group']}v{h['variation']}" for h in d.get("objects", ())[:MAX_VALUES]],
    }
    if not ev.is_orig and d.get("iin") is not None:
        out["iin"] = d["iin"]
        out["iin_flags"] = list(ev.flags)
    if d.get("events"):
        out["events"] = list(d["events"])
    return out


def _ruleset(config: Config, kwargs: dict[str, Any]) -> RuleSet:
    given = kwargs.get("ruleset")
    if given is not None:
        return given
    return loader.load_ruleset(
        config,
        tuple(kwargs.get("paths", ())),
        kwargs.get("include_default", True),
        kwargs.get("vars_file"),
    )
