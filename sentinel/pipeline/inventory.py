"""The passive asset inventory: who speaks Modbus, in which role, and who they say they are.

Like Zeek's ``known_modbus``, the TCP client of a Modbus connection is a Modbus client
(master) and the server a Modbus server (slave). Identity strings come from Read Device
Identification (FC 43/14) and Report Server ID (FC 17) responses. The inventory is built from
each connection's summary (kept by its ``ModbusAnalyzer``) when the connection ends.
"""

from __future__ import annotations

from typing import Any

from sentinel.config import Config
from sentinel.decode.modbus import ModbusAnalyzer

MAX_PEERS = 256  # per host, to bound memory on a scanned network


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
