"""Findings for the decoders' protocol anomalies, each mapped to ATT&CK for ICS.

Rule ids follow Suricata's reserved range for Modbus protocol events (22500xx), so that the
findings line up with the app-layer-event rules analysts already know.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.events import Anomaly
from sentinel.findings import Finding, Technique
from sentinel.pipeline.detector import Detector, register

DOS = Technique("T0814", "Denial of Service", "Inhibit Response Function")
SPOOF = Technique("T0856", "Spoof Reporting Message", "Impair Process Control")
INFO_DISCOVERY = Technique("T0888", "Remote System Information Discovery", "Discovery")
COMMON_PORT = Technique("T0885", "Commonly Used Port", "Command and Control")
EXPLOIT = Technique("T0866", "Exploitation of Remote Services", "Lateral Movement")


@dataclass(frozen=True)
class AnomalyRule:
    sid: int
    name: str
    severity: str
    technique: Technique


RULES: dict[str, AnomalyRule] = {
    "modbus.invalid_protocol_id": AnomalyRule(
        2250001, "Modbus invalid protocol id", "medium", EXPLOIT
    ),
    "modbus.unsolicited_response": AnomalyRule(
        2250002, "Modbus unsolicited response", "medium", SPOOF
    ),
    "modbus.invalid_length": AnomalyRule(2250003, "Modbus invalid length", "medium", EXPLOIT),
    "modbus.truncated_pdu": AnomalyRule(2250004, "Modbus truncated PDU", "medium", EXPLOIT),
    "modbus.unknown_function": AnomalyRule(
        2250005, "Modbus unknown function code", "medium", INFO_DISCOVERY
    ),
    "modbus.invalid_value": AnomalyRule(2250006, "Modbus invalid field value", "low", EXPLOIT),
    "modbus.flooded": AnomalyRule(2250007, "Modbus request flood", "high", DOS),
    "modbus.non_modbus_traffic": AnomalyRule(
        2250008, "Non-Modbus traffic on a Modbus port", "medium", COMMON_PORT
    ),
    "modbus.unknown_diagnostic_subfunction": AnomalyRule(
        2250009, "Modbus unknown diagnostics sub-function", "low", INFO_DISCOVERY
    ),
}
RULESET = "sentinel-protocol-events"


@register
class ProtocolAnomalies(Detector):
    id = "protocol_anomalies"
    description = "Malformed and unexpected protocol traffic reported by the decoders"

    def on_anomaly(self, event: Anomaly) -> list[Finding]:
        rule = RULES.get(event.name)
        if rule is None:
            return []
        protocol = event.name.split(".", 1)[0]
        return [
            Finding(
                ts=event.ts,
                rule_id=str(rule.sid),
                rule_name=rule.name,
                ruleset=RULESET,
                severity=rule.severity,
                technique=rule.technique,
                message=f"{rule.name}: {event.detail}",
                detector=self.id,
                conn=event.conn,
                uid=event.uid,
                protocol=protocol,
                dataset=f"sentinel.{protocol}",
                frame=event.frame,
                evidence={
                    "anomaly": event.name,
                    "detail": event.detail,
                    "direction": "to_server" if event.is_orig else "to_client",
                },
            )
        ]
