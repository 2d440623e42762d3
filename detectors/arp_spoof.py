"""ARP spoofing: an IPv4 address claimed by a MAC other than the one it was first seen with.

The man-in-the-middle of OT networks (ATT&CK for ICS T0830) poisons the ARP caches of an HMI
and a PLC so that their traffic flows through the attacker, who can then read and alter
values. OT networks are static: an address keeps its MAC for years, so the first binding seen
(from any ARP request or reply) is taken as the known one and every later claim of another
MAC for that address is a finding, whoever is told. Restoring the true binding afterwards is
not a new finding. A replaced device (a new NIC) raises one finding: an operator confirms it.
"""

from __future__ import annotations

from sentinel.events import ArpEvent, ConnId
from sentinel.findings import Finding
from sentinel.pipeline.detector import Detector, register

from .common import PolicyRule, make_finding, technique

ARP_SPOOF = PolicyRule(
    9000501, "ARP spoofing: address claimed by a new MAC", "high", technique("T0830")
)
MAX_BINDINGS = 65536  # addresses remembered (a bound on memory on a large flat network)
UNSPECIFIED = "0.0.0.0"  # ARP probes (RFC 5227) claim no address


@register
class ArpSpoofing(Detector):
    id = "arp_spoof"
    description = "IPv4 addresses claimed by a MAC other than the one first seen (ARP)"

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.known: dict[str, str] = {}  # IPv4 address -> MAC first seen with it

    def on_arp(self, event: ArpEvent) -> list[Finding] | None:
        ip, mac = event.sender_ip, event.sender_mac
        if ip == UNSPECIFIED:
            return None
        known = self.known.get(ip)
        if known is None:
            if len(self.known) < MAX_BINDINGS:
                self.known[ip] = mac
            return None
        if known == mac:
            return None
        kind = "reply" if event.op == 2 else "request"
        return [
            make_finding(
                ARP_SPOOF,
                self.id,
                "sentinel-link-layer",
                event.ts,
                f"ARP {kind} claims {ip} for {mac} (known: {known}), told to {event.target_ip}",
                {
                    "claimed_ip": ip,
                    "claimed_mac": mac,
                    "known_mac": known,
                    "op": kind,
                    "target_ip": event.target_ip,
                    "eth_src": event.eth_src,
                },
                conn=ConnId(ip, 0, event.target_ip, 0),
                frame=event.frame,
                protocol="arp",
                transport="arp",
            )
        ]
