"""ARP spoofing: positive (a poisoning attacker) and negative (normal ARP, probes) captures."""

from __future__ import annotations

from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from sentinel.config import Config
from sentinel.detectors.arp_spoof import ArpSpoofing

HMI, PLC, ATTACKER = "02:00:00:00:00:0a", "02:00:00:00:00:14", "02:00:00:00:00:2d"


def arp(ts: float, src_mac: str, op: int, psrc: str, hwsrc: str, pdst: str, hwdst: str):
    p = Ether(src=src_mac, dst=hwdst if op == 2 else "ff:ff:ff:ff:ff:ff") / ARP(
        op=op, psrc=psrc, hwsrc=hwsrc, pdst=pdst, hwdst=hwdst if op == 2 else "00:00:00:00:00:00"
    )
    p.time = ts
    return p


def normal(t0: float = 1000.0) -> list:
    return [
        arp(t0, HMI, 1, "192.0.2.10", HMI, "192.0.2.20", ""),
        arp(t0 + 0.001, PLC, 2, "192.0.2.20", PLC, "192.0.2.10", HMI),
        arp(t0 + 60, PLC, 1, "192.0.2.20", PLC, "192.0.2.10", ""),  # refresh, same binding
        arp(t0 + 60.001, HMI, 2, "192.0.2.10", HMI, "192.0.2.20", PLC),
        arp(t0 + 61, ATTACKER, 1, "0.0.0.0", ATTACKER, "192.0.2.45", ""),  # RFC 5227 probe
    ]


def test_poisoning_both_ends_is_found_once_per_claim(tmp_path, analyze):
    poison = [
        arp(1100.0 + i, ATTACKER, 2, "192.0.2.20", ATTACKER, "192.0.2.10", HMI) for i in range(5)
    ] + [arp(1100.5 + i, ATTACKER, 2, "192.0.2.10", ATTACKER, "192.0.2.20", PLC) for i in range(5)]
    restore = [arp(1110.0, ATTACKER, 2, "192.0.2.20", PLC, "192.0.2.10", HMI)]
    path = tmp_path / "mitm.pcap"
    wrpcap(str(path), normal() + poison + restore)
    result = analyze(path, detectors=[ArpSpoofing(Config())])
    found = sorted(
        (f["evidence"]["claimed_ip"], f["sentinel"]["count"])
        for f in (d | {"evidence": d["sentinel"]["evidence"]} for d in result.findings)
    )
    assert found == [("192.0.2.10", 5), ("192.0.2.20", 5)]
    doc = result.findings[0]
    assert doc["rule"]["id"] == "9000501" and doc["threat"]["technique"]["id"] == ["T0830"]
    assert doc["sentinel"]["evidence"]["claimed_mac"] == ATTACKER


def test_normal_arp_raises_nothing(tmp_path, analyze):
    path = tmp_path / "normal.pcap"
    wrpcap(str(path), normal())
    assert analyze(path, detectors=[ArpSpoofing(Config())]).findings == []
