"""The passive asset inventory: who speaks Modbus, in which role, and who they say they are.

Like Zeek's ``known_modbus``, the TCP client of a Modbus connection is a Modbus client
(master) and the server a Modbus server (slave). Identity strings come from Read Device
Identification (FC 43/14) and Report Server ID (FC 17) responses.
"""

from __future__ import annotations

from typing import Any

from sentinel.config import Config
from sentinel.events import ModbusMessage

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


class Inventory:
    def __init__(self, config: Config) -> None:
        self._declared = {a.address: a for a in config.assets}
        self.hosts: dict[str, HostRecord] = {}
        self._by_flow: dict[str, tuple[HostRecord, HostRecord]] = {}

    def _host(self, ip: str, ts: float) -> HostRecord:
        host = self.hosts.get(ip)
        if host is None:
            host = self.hosts[ip] = HostRecord(ip, ts)
        return host

    def on_modbus(self, msg: ModbusMessage) -> None:
        pair = self._by_flow.get(msg.uid)
        if pair is None:
            client = self._host(msg.conn.orig_h, msg.ts)
            server = self._host(msg.conn.resp_h, msg.ts)
            client.roles.add("modbus_client")
            server.roles.add("modbus_server")
            if len(client.peers) < MAX_PEERS:
                client.peers.add(server.ip)
            if len(server.peers) < MAX_PEERS:
                server.peers.add(client.ip)
            pair = self._by_flow[msg.uid] = (client, server)
        client, server = pair
        client.last_seen = server.last_seen = msg.ts
        if msg.is_orig:
            client.function_codes.add(msg.fc)
            server.unit_ids.add(msg.unit)
            return
        if msg.exception is None:
            server.function_codes.add(msg.fc)
            if msg.fc == 43 and "objects" in msg.fields:
                server.identity.update(msg.fields["objects"])
            elif msg.fc == 17 and "server_id" in msg.fields:
                f = msg.fields
                server.server_id = {
                    k: f[k] for k in ("server_id", "run_indicator", "server_id_data") if k in f
                }

    def flow_ended(self, uid: str) -> None:
        self._by_flow.pop(uid, None)

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
