"""A crafted site capture with people's data in it, for the privacy tests (scapy, real TCP).

Declared inventory (``SITE_CONFIG``): PLC 10.10.0.20, HMI 10.10.0.10 and an IPv6 PLC
2001:db8:10::20 in the OT network; the site also declares a guest network 10.20.0.0/16 and
the IPv6 network 2001:db8:10::/64. What is outside the inventory (``OUTSIDE``):

- a guest laptop 10.20.3.7 reading the PLC (not an allowed master: policy findings) and
  sending non-Modbus bytes with a patient name to port 502 and to a guest server 10.20.0.1;
- an unknown device 10.20.9.9 answering the HMI's device identification (FC 43/14) with a
  user application name and a private object (a serial number), and Report Server ID
  (FC 17) with a device serial;
- an IPv6 client 2001:db8:10::77 reading the IPv6 PLC;
- an outside host 203.0.113.50 probing the PLC's ports (reconnaissance);
- ARP: the PLC, the HMI, the guest laptop and the guest server announce their MACs, then the
  guest laptop's MAC claims the guest server's address and the PLC's (ARP spoofing, two
  ``arp_spoof`` findings with IPs outside the inventory and MACs in them).

``MACS`` are the MAC addresses on the wire (ARP); no output may carry them in clear.

``SECRETS`` are strings from the wire that no output may carry in clear.
"""

from __future__ import annotations

import struct
from pathlib import Path

import yaml
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

PLC, HMI, PLC6 = "10.10.0.20", "10.10.0.10", "2001:db8:10::20"
GUEST, ROGUE, GUEST_SERVER, CLIENT6, OUTSIDER = (
    "10.20.3.7",
    "10.20.9.9",
    "10.20.0.1",
    "2001:db8:10::77",
    "203.0.113.50",
)
INVENTORY = (PLC, HMI, PLC6)
PLC_MAC, HMI_MAC, GUEST_MAC, SERVER_MAC = (
    "00:1d:9c:10:00:20",
    "00:1d:9c:10:00:10",
    "a4:5e:60:03:07:07",
    "3c:22:fb:00:01:01",
)
MACS = (PLC_MAC, HMI_MAC, GUEST_MAC, SERVER_MAC)
OUTSIDE = (GUEST, ROGUE, GUEST_SERVER, CLIENT6, OUTSIDER)
USER_APP = "Ward 7 bed 3 - patient Jane Doe"
PRIVATE_OBJECT = "SN-PRIVATE-4711"
SERVER_ID_DATA = "DEV-SERIAL-0042 owner j.doe"
PAYLOAD = b"PATIENT-JANE-DOE-PAYLOAD record 0815"
SECRETS = (USER_APP, PRIVATE_OBJECT, SERVER_ID_DATA, PAYLOAD.decode())
PUBLIC_OBJECTS = {"VendorName": "ACME Controls", "ProductCode": "AC-100"}

SITE_CONFIG = {
    "observer": {"name": "privacy-test"},
    "sites": [
        {
            "name": "clinic",
            "sector": "hospital",
            "networks": ["10.10.0.0/24", "10.20.0.0/16", "2001:db8:10::/64"],
        }
    ],
    "assets": [
        {
            "address": PLC,
            "name": "ahu-plc",
            "role": "plc",
            "allowed_masters": [HMI],
            "allowed_function_codes": [3, 4, 6, 43, 17],
        },
        {"address": HMI, "name": "bms-hmi", "role": "hmi"},
        {"address": PLC6, "name": "plc-v6", "role": "plc", "allowed_masters": [PLC6]},
    ],
}


def adu(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


class Conn:
    """One TCP connection (IPv4 or IPv6) with handshake, data and FIN."""

    def __init__(self, client: str, server: str, sport: int, dport: int, t0: float) -> None:
        self.client, self.server, self.sport, self.dport, self.t = client, server, sport, dport, t0
        self.cseq, self.sseq = 1000, 9000
        self.packets: list[Packet] = []
        self._pkt(True, "S", b"", self.cseq - 1, 0)
        self._pkt(False, "SA", b"", self.sseq - 1, self.cseq)
        self._pkt(True, "A", b"")

    def _pkt(
        self, from_client: bool, flags: str, payload: bytes, seq: int | None = None, ack=None
    ) -> None:
        self.t += 0.002
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
        sport, dport = (self.sport, self.dport) if from_client else (self.dport, self.sport)
        if seq is None:
            seq = self.cseq if from_client else self.sseq
        if ack is None:
            ack = self.sseq if from_client else self.cseq
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip
        p = p / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
        if payload:
            p = p / payload
        p.time = self.t
        self.packets.append(p)

    def send(self, from_client: bool, payload: bytes) -> None:
        self._pkt(from_client, "PA", payload)
        if from_client:
            self.cseq += len(payload)
        else:
            self.sseq += len(payload)

    def exchange(self, request: bytes, response: bytes | None) -> None:
        self.send(True, request)
        if response is not None:
            self.send(False, response)

    def close(self) -> list[Packet]:
        self._pkt(True, "FA", b"")
        self.cseq += 1
        self._pkt(False, "FA", b"")
        self.sseq += 1
        self._pkt(True, "A", b"")
        return self.packets


def _read_holding(tid: int, values: list[int]) -> tuple[bytes, bytes]:
    req = adu(tid, 1, struct.pack(">BHH", 3, 0, len(values)))
    resp = adu(tid, 1, bytes([3, 2 * len(values)]) + struct.pack(f">{len(values)}H", *values))
    return req, resp


def _device_id_response(tid: int, objects: list[tuple[int, str]]) -> bytes:
    body = bytes([0x2B, 0x0E, 0x01, 0x83, 0x00, 0x00, len(objects)])
    for oid, text in objects:
        raw = text.encode()
        body += bytes([oid, len(raw)]) + raw
    return adu(tid, 1, body)


def build(path: Path, t0: float = 1_750_000_000.0) -> Path:
    """Write the capture described in the module docstring to ``path``."""
    packets: list[Packet] = []
    hmi = Conn(HMI, PLC, 40001, 502, t0)  # normal polling, all in clear
    for tid in range(1, 6):
        hmi.exchange(*_read_holding(tid, [215, 450, 120]))
    packets += hmi.close()

    guest = Conn(GUEST, PLC, 51000, 502, t0 + 1)  # a guest laptop reading the PLC
    for tid in range(1, 4):
        guest.exchange(*_read_holding(tid, [215, 450]))
    packets += guest.close()

    junk = Conn(GUEST, PLC, 51001, 502, t0 + 2)  # non-Modbus bytes on the Modbus port
    junk.send(True, PAYLOAD + b" " * 40)
    packets += junk.close()

    web = Conn(GUEST, GUEST_SERVER, 51002, 8080, t0 + 3)  # payload on another port
    web.exchange(b"POST /notes HTTP/1.1\r\nHost: x\r\n\r\n" + PAYLOAD, b"HTTP/1.1 200 OK\r\n\r\n")
    packets += web.close()

    rogue = Conn(HMI, ROGUE, 40002, 502, t0 + 4)  # an unknown device identifies itself
    rogue.exchange(
        adu(1, 1, bytes([0x2B, 0x0E, 0x01, 0x00])),
        _device_id_response(
            1,
            [
                (0x00, PUBLIC_OBJECTS["VendorName"]),
                (0x01, PUBLIC_OBJECTS["ProductCode"]),
                (0x06, USER_APP),
                (0x80, PRIVATE_OBJECT),
            ],
        ),
    )
    server_id = SERVER_ID_DATA.encode()
    rogue.exchange(
        adu(2, 1, bytes([17])), adu(2, 1, bytes([17, len(server_id) + 2, 0x2A, 0xFF]) + server_id)
    )
    packets += rogue.close()

    v6 = Conn(CLIENT6, PLC6, 52000, 502, t0 + 5)  # an IPv6 client of the IPv6 PLC
    for tid in range(1, 3):
        v6.exchange(*_read_holding(tid, [1, 2]))
    packets += v6.close()

    t = t0 + 6  # an outside host probes ports of the PLC (SYN, RST back)
    for i, port in enumerate((21, 22, 23, 80, 102, 443, 502, 503, 1911, 2404, 20000, 44818)):
        syn = Ether() / IP(src=OUTSIDER, dst=PLC) / TCP(sport=60000 + i, dport=port, flags="S")
        rst = Ether() / IP(src=PLC, dst=OUTSIDER) / TCP(sport=port, dport=60000 + i, flags="RA")
        syn.time, rst.time = t, t + 0.001
        t += 0.01
        packets += [syn, rst]

    packets += _arp(t + 1)
    wrpcap(str(path), sorted(packets, key=lambda p: float(p.time)))
    return path


def _arp(t: float) -> list[Packet]:
    """Gratuitous replies binding each host to its MAC, a request, then the guest laptop's
    MAC claiming the guest server's address and the PLC's (told to the HMI)."""
    out: list[Packet] = []

    def reply(mac: str, ip: str, to_mac: str, to_ip: str) -> None:
        nonlocal t
        p = Ether(src=mac, dst=to_mac) / ARP(op=2, hwsrc=mac, psrc=ip, hwdst=to_mac, pdst=to_ip)
        p.time = t
        t += 0.01
        out.append(p)

    for mac, ip in ((PLC_MAC, PLC), (HMI_MAC, HMI), (GUEST_MAC, GUEST), (SERVER_MAC, GUEST_SERVER)):
        reply(mac, ip, "ff:ff:ff:ff:ff:ff", ip)
    request = Ether(src=HMI_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=HMI_MAC, psrc=HMI, hwdst="00:00:00:00:00:00", pdst=GUEST_SERVER
    )
    request.time = t
    t += 0.01
    out.append(request)
    reply(GUEST_MAC, GUEST_SERVER, HMI_MAC, HMI)  # spoofing: the laptop claims the server
    reply(GUEST_MAC, PLC, HMI_MAC, HMI)  # and the PLC
    return out


def write_config(path: Path, privacy: dict | None = None) -> Path:
    data = dict(SITE_CONFIG)
    if privacy is not None:
        data["privacy"] = privacy
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
