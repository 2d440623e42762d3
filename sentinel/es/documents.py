"""Records to Elasticsearch documents: the one place that says which ECS field holds what.

Findings arrive as ECS already (``Finding.to_ecs``) and are indexed as they are. Modbus and
flow records (the dicts of modbus.jsonl / flows.jsonl) and the asset inventory are rendered
here; every field they produce is declared, with its type, in the index templates under
``templates/`` (a test checks both against each other). What goes where:

==================  ===========================================================================
record field        document field
==================  ===========================================================================
ts                  ``@timestamp`` (and ``event.start`` for flows)
uid                 ``sentinel.flow_uid`` (as findings carry it), ``event.id`` for flows
orig_h / orig_p     ``source.ip`` / ``source.port`` (the client: Modbus master)
resp_h / resp_p     ``destination.ip`` / ``destination.port`` (the server: Modbus slave)
frame               ``sentinel.frame``
latency             ``sentinel.modbus.latency`` (seconds) and ``event.duration`` (ns)
func                ``sentinel.modbus.func`` and ``event.action``
values              ``sentinel.modbus.values`` (registers) or ``sentinel.modbus.coils``
                    (bits: booleans cannot share a field with numbers)
other Modbus        ``sentinel.modbus.<name>`` unchanged (tid, unit, fc, exception, address...)
flow counters       ``source.packets/bytes`` (IP bytes), ``destination.*``, ``network.*``,
                    payload bytes and Zeek state under ``sentinel.flow.*``
asset               ``host.ip/name/type``, ``related.ip`` (its peers), ``sentinel.asset.*``
==================  ===========================================================================

Document ids are deterministic, so that sending a document twice never makes two: a finding's
``event.id``; a flow's uid; a Modbus message's ``<uid>.<frame>.<n>`` (``n`` counts messages of
the same connection within one frame); an asset's ``<site>/<ip>`` (or its ip). Time-based
indices are named after the document's own day (``sentinel-findings-2015.10.22``), so a
re-sent document always lands in the index that already holds it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from base64 import b64encode
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

ECS_VERSION = "8.11.0"
FINDINGS = "findings"
MODBUS = "modbus"
FLOWS = "flows"
ASSETS = "assets"
KINDS = (FINDINGS, MODBUS, FLOWS, ASSETS)
INDEX_PREFIX = {
    FINDINGS: "sentinel-findings-",
    MODBUS: "sentinel-modbus-",
    FLOWS: "sentinel-flows-",
}
ASSETS_INDEX = "sentinel-assets"
INDEX_PATTERNS = {
    FINDINGS: "sentinel-findings-*",
    MODBUS: "sentinel-modbus-*",
    FLOWS: "sentinel-flows-*",
    ASSETS: ASSETS_INDEX,
}
OBSERVER_TYPE = "ids"
VENDOR = "Sentinel"
_CONN_KEYS = frozenset(("ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "frame"))
_MAX_FRAME_COUNTERS = 65536
_PROTO_NUMBER = {"tcp": 6, "udp": 17}
_ECS = {"version": ECS_VERSION}
_NETWORK = ["network"]
_PROTOCOL = ["protocol"]

SiteLookup = Callable[[str], dict[str, str] | None]


def iso(ts: float) -> str:
    """Packet time as an ECS timestamp (UTC, microseconds), like ``Finding.to_ecs``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def community_id(src: str, sport: int, dst: str, dport: int, proto: str) -> str | None:
    """Community ID v1 (https://github.com/corelight/community-id-spec), seed 0.

    The same flow gets the same id in Zeek, Suricata and Elastic's own integrations, so an
    analyst can pivot from a Sentinel finding to their records of the connection.
    """
    number = _PROTO_NUMBER.get(proto)
    if number is None:
        return None
    try:
        a = ipaddress.ip_address(src).packed
        b = ipaddress.ip_address(dst).packed
    except ValueError:
        return None
    if (a, sport) > (b, dport):
        a, b, sport, dport = b, a, dport, sport
    data = struct.pack(">H", 0) + a + b + struct.pack(">BBHH", number, 0, sport, dport)
    return "1:" + b64encode(hashlib.sha1(data).digest()).decode()


class DocumentBuilder:
    """Renders records as ``(index, id, document)``; one builder per sink (it keeps caches)."""

    def __init__(self, observer: str = "sentinel", site_of: SiteLookup | None = None) -> None:
        self.observer = {"name": observer, "type": OBSERVER_TYPE, "vendor": VENDOR}
        self.site_of = site_of
        self._day_index: dict[tuple[str, int], str] = {}
        self._frame_counts: dict[tuple[str, int], int] = {}
        self._connections: dict[str, tuple[Any, ...]] = {}
        self._iso_second = -1
        self._iso_prefix = ""

    # -- names and ids
    def index_for(self, kind: str, ts: float) -> str:
        day = int(ts // 86400)
        name = self._day_index.get((kind, day))
        if name is None:
            date = datetime.fromtimestamp(day * 86400, UTC)
            name = f"{INDEX_PREFIX[kind]}{date:%Y.%m.%d}"
            self._day_index[(kind, day)] = name
        return name

    def _labels(self, resp_h: str, orig_h: str) -> dict[str, str] | None:
        if self.site_of is None:
            return None
        try:
            return self.site_of(resp_h) or self.site_of(orig_h)
        except ValueError:  # not an address: hostile input is never an error here
            return None

    # -- documents
    def finding(self, doc: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """An ECS finding as it is; its index is the day of its ``@timestamp``."""
        stamp = str(doc.get("@timestamp", ""))
        day = stamp[:10].replace("-", ".")
        if len(day) != 10 or not day.replace(".", "").isdigit():  # never from to_ecs
            day = f"{datetime.now(UTC):%Y.%m.%d}"
        return f"{INDEX_PREFIX[FINDINGS]}{day}", str(doc["event"]["id"]), doc

    def _connection(self, rec: dict[str, Any]) -> tuple[Any, ...]:
        """The parts every message of one connection shares (built once per connection).

        The documents share these objects; they are serialized at once and never changed.
        """
        uid = rec["uid"]
        conn = self._connections.get(uid)
        if conn is None:
            if len(self._connections) >= _MAX_FRAME_COUNTERS:
                self._connections.clear()
            orig_h, resp_h = rec["orig_h"], rec["resp_h"]
            network: dict[str, Any] = {"transport": "tcp", "protocol": "modbus"}
            cid = community_id(orig_h, rec["orig_p"], resp_h, rec["resp_p"], "tcp")
            if cid:
                network["community_id"] = cid
            conn = self._connections[uid] = (
                {"ip": orig_h, "port": rec["orig_p"]},
                {"ip": resp_h, "port": rec["resp_p"]},
                network,
                {"ip": [orig_h, resp_h] if orig_h != resp_h else [orig_h]},
                self._labels(resp_h, orig_h),
            )
        return conn

    def modbus(self, rec: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        ts = rec["ts"]
        uid = rec["uid"]
        frame = rec["frame"]
        key = (uid, frame)
        counts = self._frame_counts
        n = counts.get(key, -1) + 1
        if len(counts) >= _MAX_FRAME_COUNTERS:
            counts.clear()
        counts[key] = n
        doc_id = f"{uid}.{frame}.{n}"
        mb = rec.copy()
        for k in _CONN_KEYS:
            mb.pop(k, None)
        values = mb.get("values")
        if values and type(values[0]) is bool:
            mb["coils"] = mb.pop("values")
        source, destination, network, related, labels = self._connection(rec)
        event: dict[str, Any] = {
            "id": doc_id,
            "kind": "event",
            "category": _NETWORK,
            "type": _PROTOCOL,
            "action": rec.get("func"),
            "dataset": "sentinel.modbus",
            "module": "sentinel",
        }
        latency = rec.get("latency")
        if latency is not None:
            event["duration"] = round(latency * 1e9)
        doc: dict[str, Any] = {
            "@timestamp": self._iso(ts),
            "ecs": _ECS,
            "event": event,
            "source": source,
            "destination": destination,
            "network": network,
            "related": related,
            "observer": self.observer,
            "sentinel": {"flow_uid": uid, "frame": frame, "modbus": mb},
        }
        if labels:
            doc["labels"] = labels
        return self.index_for(MODBUS, ts), doc_id, doc

    def _iso(self, ts: float) -> str:
        """``iso(ts)``, with the date and time of the current second computed once."""
        sec = int(ts)
        micro = round((ts - sec) * 1e6)
        if micro >= 1_000_000 or micro < 0:
            return iso(ts)
        if sec != self._iso_second:
            self._iso_second = sec
            self._iso_prefix = iso(sec)[:-7]
        return f"{self._iso_prefix}{micro:06d}Z"

    def flow(self, rec: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        ts = rec["ts"]
        uid = rec["uid"]
        proto = rec.get("proto") or "tcp"
        orig_h = rec["orig_h"]
        resp_h = rec["resp_h"]
        network: dict[str, Any] = {
            "transport": proto,
            "bytes": rec["orig_ip_bytes"] + rec["resp_ip_bytes"],
            "packets": rec["orig_pkts"] + rec["resp_pkts"],
        }
        if rec.get("service"):
            network["protocol"] = rec["service"]
        cid = community_id(orig_h, rec["orig_p"], resp_h, rec["resp_p"], proto)
        if cid:
            network["community_id"] = cid
        doc: dict[str, Any] = {
            "@timestamp": self._iso(ts),
            "ecs": {"version": ECS_VERSION},
            "event": {
                "id": uid,
                "kind": "event",
                "category": ["network"],
                "type": ["connection", "end"],
                "dataset": "sentinel.flow",
                "module": "sentinel",
                "start": self._iso(ts),
                "end": self._iso(rec["last_ts"]),
                "duration": round(rec["duration"] * 1e9),
            },
            "source": {
                "ip": orig_h,
                "port": rec["orig_p"],
                "packets": rec["orig_pkts"],
                "bytes": rec["orig_ip_bytes"],
            },
            "destination": {
                "ip": resp_h,
                "port": rec["resp_p"],
                "packets": rec["resp_pkts"],
                "bytes": rec["resp_ip_bytes"],
            },
            "network": network,
            "related": {"ip": [orig_h, resp_h] if orig_h != resp_h else [orig_h]},
            "observer": self.observer,
            "sentinel": {
                "flow_uid": uid,
                "flow": {
                    "duration": rec["duration"],
                    "orig_bytes": rec["orig_bytes"],
                    "resp_bytes": rec["resp_bytes"],
                    "conn_state": rec.get("conn_state"),
                    "history": rec.get("history"),
                    "missed_bytes": rec.get("missed_bytes"),
                },
            },
        }
        labels = self._labels(resp_h, orig_h)
        if labels:
            doc["labels"] = labels
        return self.index_for(FLOWS, ts), uid, doc

    def asset(self, rec: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """The latest state of one asset; ``first_seen`` is only set when it is created."""
        ip = rec["ip"]
        labels = self._labels(ip, ip)
        site = labels.get("site") if labels else None
        doc_id = f"{site}/{ip}" if site else ip
        asset = {k: v for k, v in rec.items() if k not in ("first_seen", "last_seen")}
        asset["first_seen"] = iso(rec["first_seen"])
        asset["last_seen"] = iso(rec["last_seen"])
        host: dict[str, Any] = {"ip": [ip]}
        if rec.get("name"):
            host["name"] = rec["name"]
        role = rec.get("declared_role") or _role(rec.get("roles") or [])
        if role:
            host["type"] = role
        doc: dict[str, Any] = {
            "@timestamp": asset["last_seen"],
            "ecs": {"version": ECS_VERSION},
            "event": {
                "id": doc_id,
                "kind": "state",
                "category": ["host"],
                "type": ["info"],
                "dataset": "sentinel.asset",
                "module": "sentinel",
            },
            "host": host,
            "related": {"ip": sorted({ip, *rec.get("peers", [])})},
            "observer": self.observer,
            "sentinel": {"asset": asset},
        }
        if labels:
            doc["labels"] = labels
        return ASSETS_INDEX, doc_id, doc


def asset_update(doc: dict[str, Any]) -> dict[str, Any]:
    """The update body that upserts an asset without moving its ``first_seen``."""
    partial = {**doc, "sentinel": {"asset": dict(doc["sentinel"]["asset"])}}
    del partial["sentinel"]["asset"]["first_seen"]
    return {"doc": partial, "upsert": doc}


def _role(roles: list[str]) -> str | None:
    if "modbus_server" in roles:
        return "modbus_server"
    return roles[0] if roles else None
