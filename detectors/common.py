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

from dataclasses import dataclass
from typing import Any

from sentinel.events import ConnId
from sentinel.findings import Finding, Technique

TECHNIQUES: dict[str, Technique] = {
    t.id: t
    for t in (
        Technique("T0801", "Monitor Process State", "Collection"),
        Technique("T0802", "Automated Collection", "Collection"),
        Technique("T0806", "Brute Force I/O", "Impair Process Control"),
        Technique("T0809", "Data Destruction", "Inhibit Response Function"),
        Technique("T0813", "Denial of Control", "Impact"),
        Technique("T0814", "Denial of Service", "Inhibit Response Function"),
        Technique("T0816", "Device Restart/Shutdown", "Inhibit Response Function"),
        Technique("T0821", "Modify Controller Tasking", "Execution"),
        Technique("T0826", "Loss of Availability", "Impact"),
        Technique("T0830", "Adversary-in-the-Middle", "Collection"),
        Technique("T0831", "Manipulation of Control", "Impact"),
        Technique("T0836", "Modify Parameter", "Impair Process Control"),
        Technique("T0839", "Module Firmware", "Persistence"),
        Technique("T0843", "Program Download", "Lateral Movement"),
        Technique("T0845", "Program Upload", "Collection"),
        Technique("T0846", "Remote System Discovery", "Discovery"),
        Technique("T0848", "Rogue Master", "Initial Access"),
        Technique("T0855", "Unauthorized Command Message", "Impair Process Control"),
        Technique("T0857", "System Firmware", "Inhibit Response Function"),
        Technique("T0858", "Change Operating Mode", "Execution"),
        Technique("T0861", "Point & Tag Identification", "Collection"),
        Technique("T0864", "Transient Cyber Asset", "Initial Access"),
        Technique("T0866", "Exploitation of Remote Services", "Lateral Movement"),
        Technique("T0867", "Lateral Tool Transfer", "Lateral Movement"),
        Technique("T0869", "Standard Application Layer Protocol", "Command and Control"),
        Technique("T0872", "Indicator Removal on Host", "Evasion"),
        Technique("T0873", "Project File Infection", "Persistence"),
        Technique("T0881", "Service Stop", "Inhibit Response Function"),
        Technique("T0882", "Theft of Operational Information", "Impact"),
        Technique("T0886", "Remote Services", "Lateral Movement"),
        Technique("T0888", "Remote System Information Discovery", "Discovery"),
        Technique("T0889", "Modify Program", "Persistence"),
    )
}


def technique(tid: str) -> Technique:
    return TECHNIQUES[tid]


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


class Window:
    """A tumbling window of packet time that starts at its first event (deterministic)."""

    __slots__ = ("length", "start")

    def __init__(self, length: float) -> None:
        self.length = length
        self.start: float | None = None

    def roll(self, ts: float) -> bool:
        """Place ``ts``; True when a new window begins (the caller resets its counters)."""
        if self.start is None or ts - self.start >= self.length or ts < self.start:
            self.start = ts
            return True
        return False
