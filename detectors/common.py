"""Shared pieces of the built-in detectors: ATT&CK for ICS techniques, rule ids, finding helper.

Rule ids
--------
Sentinel's own detector findings use numeric ids in 9000000-9099999, a block that no public
rule set allocates (Snort/Talos < 1000000, local rules 1000000-1999999, Emerging Threats
2000000-2999999 including Suricata's bundled event rules 2200000-2299999, where 2260000+ are
Suricata's app-layer events). Numeric ids keep findings usable by EVE consumers that expect a
``signature_id``.

- 9000100-9000199: OT policy (``detectors/modbus_policy.py``)
- 9000200-9000299: reconnaissance (``detectors/recon.py``)
- 9000500-9000599: link layer (``detectors/arp_spoof.py``)
- 9000600-9000699: learned baselines (``sentinel/ml``)
- 9000700-9000799: OT protocol policy (``detectors/ot_policy.py``; DNP3, IEC 104, S7comm,
  EtherNet/IP-CIP, BACnet)
- 9001000-9001999: the YARA starter set (``signatures/*.yar``, the ``sid`` of each rule)

Techniques are MITRE ATT&CK for ICS (https://attack.mitre.org/matrices/ics/); the tactic given
is the one the technique serves in the finding's context.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sentinel.events import ConnId
from sentinel.findings import Finding, Technique
from sentinel.rules.attack import technique  # noqa: F401 - the detectors' import


@dataclass(frozen=True)
class PolicyRule:
    """One kind of finding a built-in detector raises."""

    sid: int
    name: str
    severity: str
    technique: Technique

    @property
    def rule_id(self) -> str:
        return str(self.sid)


def direction(is_orig: bool) -> str:
    return "to_server" if is_orig else "to_client"


def make_finding(
    rule: PolicyRule,
    detector: str,
    ruleset: str,
    ts: float,
    message: str,
    evidence: dict[str, Any],
    conn: ConnId | None = None,
    uid: str | None = None,
    frame: int | None = None,
    protocol: str = "modbus",
    transport: str = "tcp",
) -> Finding:
    return Finding(
        ts=ts,
        rule_id=rule.rule_id,
        rule_name=rule.name,
        ruleset=ruleset,
        severity=rule.severity,
        technique=rule.technique,
        message=message,
        detector=detector,
        conn=conn,
        uid=uid,
        transport=transport,
        protocol=protocol,
        dataset=f"sentinel.{protocol}",
        frame=frame,
        evidence=evidence,
    )


def engineering_hosts(config: Any, extra: Iterable[str]) -> frozenset[str]:
    """The hosts allowed to identify, program and restart devices: the assets declared with
    role ``engineering`` and a detector's own ``engineering_hosts``."""
    return frozenset([a.address for a in config.assets if a.role == "engineering"] + [*extra])


def message_finding(
    rule: PolicyRule,
    detector: str,
    ruleset: str,
    msg: Any,
    message: str,
    evidence: dict[str, Any],
) -> Finding:
    """``make_finding`` about one decoded message (a ``ModbusMessage``): its time, flow, frame."""
    return make_finding(
        rule,
        detector,
        ruleset,
        msg.ts,
        message,
        evidence,
        conn=msg.conn,
        uid=msg.uid,
        frame=msg.frame,
    )


NOT_STARTED: Final = -math.inf  # a window's start before its first event: any ts rolls it


class Window:
    """A tumbling window of packet time that starts at its first event (deterministic).

    ``start`` is a plain float (unboxed in the compiled class: no float object to reach per
    event), ``NOT_STARTED`` until the first event."""

    __slots__ = ("length", "start")

    def __init__(self, length: float) -> None:
        self.length = length
        self.start: float = NOT_STARTED

    def roll(self, ts: float) -> bool:
        """Place ``ts``; True when a new window begins (the caller resets its counters)."""
        if starts_window(self.start, self.length, ts):
            self.start = ts
            return True
        return False


def starts_window(start: float, length: float, ts: float) -> bool:
    """Whether ``ts`` begins a new window after the one that began at ``start``: the first
    event, one ``length`` or more later, or one earlier than the start (time went back)."""
    return ts - start >= length or ts < start
