"""The passive asset inventory: who speaks Modbus, in which role, and who they say they are.

Like Zeek's ``known_modbus``, the TCP client of a Modbus connection is a Modbus client
(master) and the server a Modbus server (slave). Identity strings come from Read Device
Identification (FC 43/14) and Report Server ID (FC 17) responses. The inventory is built from
each connection's summary (kept by its ``ModbusAnalyzer``) when the connection ends.

OT protocols decoded through tshark (``OTEvent``) add roles ``<protocol>_client`` (the side
that sends requests: DNP3 master, IEC 104 controlling station, S7/CIP client, BACnet client)
and ``<protocol>_server`` (the device that answers or reports), and identities keyed
``<protocol>.<name>`` in ``identity``: DNP3 link addresses, IEC 104 common addresses, S7
system status list identification (``s7comm.module_name``, ``s7comm.serial``,
``s7comm.order_number``, ...), EtherNet/IP identity (``enip.vendor``, ``enip.product_name``,
``enip.serial``, ...) and BACnet device instance, vendor and the device properties read back
(``bacnet.vendor-name``, ``bacnet.model-name``, ``bacnet.firmware-revision``, ...).
"""

from __future__ import annotations

from typing import Any

from sentinel.config import Config
from sentinel.decode.modbus import ModbusAnalyzer
from sentinel.events import OTEvent

MAX_PEERS = 256  # per host, to bound memory on a scanned network
MAX_IDENTITY = 48  # identity entries per host
MAX_ADDRESSES = 16  # protocol addresses (DNP3 link, IEC 104 common address) listed per host
DNP3_BROADCAST = frozenset({0xFFFD, 0xFFFE, 0xFFFF})  # IEEE 1815 9.2.5.3


class HostRecord:
    __slots__ = (
        "first_seen",
        "function_codes",
        "identity",
        "ip",
        "last_seen",
        "peers",
        "roles",
        "server_id",
        "unit_ids",
    )

    def __init__(self, ip: str, ts: float) -> None:
        self.ip = ip
        self.first_seen = self.last_seen = ts
        self.roles: set[str] = set()
        self.unit_ids: set[int] = set()
        self.function_codes: set[int] = set()
        self.peers: set[str] = set()
        self.identity: dict[str, str] = {}
        self.server_id: dict[str, Any] | None = None

    def identify(self, key: str, value: Any, multi: bool = False) -> None:
        """Set ``identity[key]``; ``multi`` keeps a sorted comma list of distinct values."""
        if value is None or value == "":
            return
        text = str(value)
        current = self.identity.get(key)
        if multi and current is not None:
            values = set(current.split(","))
            if text in values or len(values) >= MAX_ADDRESSES:
                return
            values.add(text)
            text = ",".join(sorted(values, key=lambda v: (len(v), v)))
        elif current is None and len(self.identity) >= MAX_IDENTITY:
            return
        self.identity[key] = text

    def seen(self, first: float, last: float) -> None:
        self.first_seen = min(self.first_seen, first)
        self.last_seen = max(self.last_seen, last)


class Inventory:
    def __init__(self, config: Config) -> None:
        self._declared = {a.address: a for a in config.assets}
        self.hosts: dict[str, HostRecord] = {}

    def _host(self, ip: str, ts: float) -> HostRecord:
        host = self.hosts.get(ip)
        if host is None:
            host = self.hosts[ip] = HostRecord(ip, ts)
        return host

    def add_connection(self, analyzer: ModbusAnalyzer, first_ts: float, last_ts: float) -> None:
        """Merge what one Modbus connection showed (called when it ends)."""
        if not any(analyzer.func_counts):
            return
        conn = analyzer.conn
        client = self._host(conn.orig_h, first_ts)
        server = self._host(conn.resp_h, first_ts)
        client.seen(first_ts, last_ts)
        server.seen(first_ts, last_ts)
        client.roles.add("modbus_client")
        server.roles.add("modbus_server")
        if len(client.peers) < MAX_PEERS:
            client.peers.add(server.ip)
        if len(server.peers) < MAX_PEERS:
            server.peers.add(client.ip)
        client.function_codes |= analyzer.client_functions
        server.function_codes |= analyzer.server_functions
        server.unit_ids |= analyzer.units
        server.identity.update(analyzer.identity)
        if analyzer.server_id:
            server.server_id = {
                k: analyzer.server_id[k]
                for k in ("server_id", "run_indicator", "server_id_data")
                if k in analyzer.server_id
            }

    def add_ot(self, ev: OTEvent) -> None:
        """Merge one OT message: roles, protocols, peers and identities (see the module doc)."""
        from sentinel.decode.tshark import is_broadcast

        conn = ev.conn
        sender, receiver = (conn.orig_h, conn.resp_h) if ev.is_orig else (conn.resp_h, conn.orig_h)
        # Over TCP the connection's client is the protocol's client (keep-alives and tests go
        # both ways); over UDP the message's direction says it.
        sender_is_client = ev.is_orig if ev.transport == "tcp" else ev.direction == "request"
        proto = ev.protocol
        ts = ev.ts
        host = self._host(sender, ts)
        host.seen(ts, ts)
        host.roles.add(f"{proto}_client" if sender_is_client else f"{proto}_server")
        peer = None
        if not is_broadcast(receiver):
            peer = self._host(receiver, ts)
            peer.seen(ts, ts)
            peer.roles.add(f"{proto}_server" if sender_is_client else f"{proto}_client")
            if len(host.peers) < MAX_PEERS:
                host.peers.add(receiver)
            if len(peer.peers) < MAX_PEERS:
                peer.peers.add(sender)
        server = peer if sender_is_client else host
        detail = ev.detail.get(proto) or {}
        if proto == "dnp3":
            link = detail.get("link") or {}
            if link.get("src") is not None and link["src"] not in DNP3_BROADCAST:
                host.identify("dnp3.address", link["src"], multi=True)
            if (
                peer is not None
                and link.get("dst") is not None
                and link["dst"] not in DNP3_BROADCAST
            ):
                peer.identify("dnp3.address", link["dst"], multi=True)
        elif proto == "iec104":
            common = (detail.get("asdu") or {}).get("common_address")
            if server is not None and common is not None and ev.operation != "session":
                server.identify("iec104.common_address", common, multi=True)
        elif proto == "bacnet" and ev.function == "i-Am" and ev.unit is not None:
            host.identify("bacnet.device_instance", ev.unit, multi=True)
            host.identify("bacnet.vendor_id", detail.get("vendor_id"))
        identity = detail.get("identity")
        if isinstance(identity, dict) and server is not None:
            for key, value in identity.items():
                server.identify(f"{proto}.{key}", value)

    def records(self) -> list[dict[str, Any]]:
        out = []
        for ip in sorted(self.hosts):
            h = self.hosts[ip]
            declared = self._declared.get(ip)
            rec: dict[str, Any] = {
                "ip": ip,
                "first_seen": h.first_seen,
                "last_seen": h.last_seen,
                "roles": sorted(h.roles),
                "unit_ids": sorted(h.unit_ids),
                "function_codes": sorted(h.function_codes),
                "peers": sorted(h.peers),
                "identity": h.identity or None,
                "server_id": h.server_id,
                "declared": declared is not None,
            }
            if declared is not None:
                rec["name"] = declared.name
                rec["declared_role"] = declared.role
            out.append(rec)
        return out
