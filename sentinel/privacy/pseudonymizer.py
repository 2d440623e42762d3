"""Keyed pseudonyms for addresses and identifiers outside the declared OT inventory.

What stays in clear: the addresses the config declares as infrastructure (every asset's
``address`` and ``allowed_masters``, ``detectors.policy.engineering_hosts``) and what
``privacy.pseudonymization.clear`` adds. Everything else is replaced before any event
carries it (``address`` is the flow table's ``address_mapper``), so every output sees only
pseudonyms.

Pseudonym formats (docs/privacy.md, "Pseudonym formats", explains the choice). Each is a
valid address of the same family, so Elasticsearch ``ip`` fields, Kibana, CIDR queries and
Community ID keep working, and each lies in space that no real host can hold:

- **IPv4** -> ``240.0.0.0/4`` ("reserved for future use", RFC 1112 section 4; RFC 6890:
  not forwardable, not global). The first octet is ``240 + tag`` (240-254; 255 never, so
  no pseudonym is the broadcast address), the other three are 24 bits of
  HMAC-SHA256(key, address). With ``keep_network`` the tag is the position (1-14) of the
  most specific declared network holding the address (``sites[].networks`` in config order,
  then ``privacy.pseudonymization.networks``), 0 for an address in none: analysts can
  still group hosts by network ("241.x.x.x is the first declared network"). Without it,
  the tag is 4 more bits of HMAC.
- **IPv6** -> ``fdXX:XXXX:XXXX:TTTT:HHHH:HHHH:HHHH:HHHH``: a Unique Local Address (RFC 4193)
  whose 40-bit Global ID is derived from the key (one /48 per key: a new key, a new prefix),
  the 16-bit subnet ID is the tag as above, and the interface ID 64 bits of HMAC.
- **MAC** -> 48 bits of HMAC with the locally-administered bit set and the group bit clear
  (an address no manufacturer assigns). MACs reach outputs only through ARP (``arp``: the
  ``arp_spoof`` findings); every MAC is pseudonymized, the inventory's too (the config
  declares addresses, not MACs), but for the all-zero and broadcast MACs, which name no one.
- **Identifiers** (strings from the wire) -> ``ps:`` + 16 hex digits of HMAC (64 bits).

The same input always gives the same pseudonym under one key (correlation and aggregation
work across runs and sensors sharing the key) and an unrelated one under another key.
Clear inputs are domain-separated by kind, so an IPv4 address and a string that spells it
differ.

IPv4 pseudonyms have 24 bits of HMAC per declared network (about 28 without
``keep_network``), so two addresses of one network share a pseudonym with probability about
n^2 / 2^25 for n hosts seen (3 % for 1,000 hosts, 0.03 % for 100); the run counts such
collisions (``stats.privacy.collisions``) and logs the first (pseudonym only). IPv6, MAC
and identifier pseudonyms have 46 to 64 bits.

Rotation (``ring`` given): the key that applies to a record is the ring's key in force at the
record's time, in packet time (``follow`` wraps the pipeline's packets: one comparison per
packet, a switch when a packet reaches the next key's ``valid_from``; the live service's
heartbeats move it in quiet periods). ``tick(now)`` (the live service, wall time) adds the
next key ahead of its boundary when ``rotation`` is set and picks up keys added to the ring
directory by others. At a switch the caches are emptied (no pseudonym of the old key is
handed out again), so both addresses of a flow are always mapped under one key; a flow keeps
the pseudonyms of the key in force when it began (its records carry one key), and the
previous key's in-memory reverse map is kept until the next switch for ``clear_for_matching``
and the sensor's own actions. ``stats()["keys"]`` lists each key used and when.

Pseudonyms are cached (``cache_size`` addresses, least recently used first out), so the HMAC
is paid once per address, not per flow or packet. The cache also keeps, in memory only, the
reverse map that ``matching.clear_for_matching`` uses so rule headers and site labels are
evaluated on clear addresses: detections do not change when pseudonymization is on.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sentinel.errors import SentinelError
from sentinel.events import ArpEvent, ModbusMessage, OTEvent
from sentinel.privacy import matching
from sentinel.privacy.keys import Key, PrivacyKeyError, iso
from sentinel.privacy.settings import Pseudonymization
from sentinel.privacy.table import RevealTable

if TYPE_CHECKING:
    from sentinel.privacy.audit import AuditLog
    from sentinel.privacy.keys import KeyRing

log = logging.getLogger(__name__)

IPV4_SPACE = ipaddress.ip_network("240.0.0.0/4")
MAX_IPV4_TAGS = 14  # first octets 241-254; 240 is "in no declared network"
MAX_IPV6_TAGS = 0xFFFF
IDENTIFIER_PREFIX = "ps:"
# Kept in clear in ARP events: they name no host (RFC 5227 probes claim 0.0.0.0; requests
# carry the all-zero target MAC; "" is a frame too short to have an Ethernet header).
ARP_CLEAR_IPS = frozenset({"0.0.0.0"})
CLEAR_MACS = frozenset({"", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"})
ID_CACHE = 4096
TICK_SECONDS = 1.0  # ``tick`` does its work at most this often (wall time)
RELOAD_SECONDS = 60.0  # and reads the ring directory for keys added by others this often
MAX_LEAD = 300.0  # the next key is written this long before its boundary (at most)
RING_RETRY_SECONDS = 60.0  # after a key-ring error, ``tick`` tries the ring again this late
RING_LOG_SECONDS = 300.0  # and logs a persisting error at most this often
Frame = tuple[float, int, bytes]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Pseudonymizer:
    """Addresses and identifiers to pseudonyms under one key (see the module docstring).

    ``clear``: addresses (or networks) kept in clear; ``networks``: the declared networks a
    pseudonym is tagged with, in order; ``table``: the optional re-identification table.
    """

    def __init__(
        self,
        key: Key,
        *,
        clear: Iterable[str] = (),
        networks: Sequence[str] = (),
        settings: Pseudonymization | None = None,
        table: RevealTable | None = None,
        ring: KeyRing | None = None,
        rotation: float | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.settings = settings or Pseudonymization()
        self.table = table
        self.ring = ring
        self.rotation = rotation if ring is not None and ring.directory is not None else None
        self.audit = audit
        self.keep_network = self.settings.keep_network
        self._ula_all: set[int] = set()
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._reverse: dict[str, str] = {}
        self._previous: tuple[str, dict[str, str]] | None = None
        self._ids: dict[str, str] = {}
        self._macs: dict[str, str] = {}
        self._collided: set[str] = set()
        self.epochs: list[dict[str, Any]] = []
        self._set_key(key)
        self._until = ring.until(key) if ring is not None else float("inf")
        self._next_tick = self._next_reload = self._next_ring_log = 0.0
        hosts: set[str] = set()
        nets: list[Network] = []
        for item in [*clear, *self.settings.clear]:
            net = ipaddress.ip_network(item, strict=False)
            if net.num_addresses == 1:
                hosts.add(str(net.network_address))
            else:
                nets.append(net)
            if self._overlaps_pseudonym_space(net):
                raise SentinelError(
                    f"{item} is kept in clear but lies in the pseudonym space "
                    f"({IPV4_SPACE} or {self._ula}): no declared address may"
                )
        self._clear_hosts = frozenset(hosts)
        self._clear_nets = tuple(nets)
        self.networks = _dedupe([*networks, *self.settings.networks])
        self._tags4 = [n for n in self.networks if n.version == 4]
        self._tags6 = [n for n in self.networks if n.version == 6]
        if self.keep_network and len(self._tags4) > MAX_IPV4_TAGS:
            raise SentinelError(
                f"keep_network can tell apart at most {MAX_IPV4_TAGS} IPv4 networks, the config "
                f"declares {len(self._tags4)}: set privacy.pseudonymization.keep_network: false"
            )
        self._tags6 = self._tags6[:MAX_IPV6_TAGS]
        self._cache_size = self.settings.cache_size
        self._clear_objects = frozenset(self.settings.identity_objects_in_clear)
        self.counters: Counter[str] = Counter()
        matching.register(self)

    # ------------------------------------------------------------------ keys and rotation
    def _set_key(self, key: Key) -> None:
        self.key = key
        self._addr_key = key.address_key
        self._id_key = key.identifier_key
        self._ula = ipaddress.IPv6Network(
            (int.from_bytes(b"\xfd" + key.ipv6_global_id, "big") << 80, 48)
        )
        self._ula_bits = int(self._ula.network_address) >> 80
        self._ula_all.add(self._ula_bits)  # old keys' IPv6 pseudonyms live on in old flows
        self.epochs.append({"key_id": key.id, "ipv6_prefix": str(self._ula), "from": None})

    @property
    def rotates(self) -> bool:
        """Whether the key can change during the run (a ring of several keys, or rotation)."""
        return self.ring is not None and (len(self.ring.keys) > 1 or self.rotation is not None)

    def at(self, ts: float) -> bool:
        """Use the key that applies at ``ts``; whether the key changed. Between packets only,
        never while a record is being built."""
        if self.ring is None:
            return False
        key = self.ring.at(ts)
        self._until = self.ring.until(key)
        if key.id == self.key.id:
            return False
        self.switch(key, ts)
        return True

    def switch(self, key: Key, ts: float) -> None:
        """From now on, pseudonyms under ``key``: the caches are emptied, the reverse map
        of the key being left is kept (memory only) until the next switch."""
        old = self.key
        self.epochs[-1]["until"] = iso(ts)
        self._previous = (old.id, self._reverse)
        self._reverse = {}
        self._cache = OrderedDict()
        self._ids = {}
        self._macs = {}
        self._set_key(key)
        self.epochs[-1]["from"] = iso(ts)
        self.counters["key_switches"] += 1
        if self.table is not None:
            self.table.flush()
        log.warning("pseudonymization key %s -> %s at %s", old.id, key.id, iso(ts))

    def follow(self, packets: Iterable[Frame]) -> Iterator[Frame]:
        """``packets`` unchanged, with the key following packet time (see the module
        docstring). The first packet of each call picks the key for its time (captures of
        one ``analyze`` may be in any order); after it, the key only moves forward."""
        first = True
        for item in packets:
            ts = item[0]
            if first:
                first = False
                if not self._cache and not self._ids and self.ring is not None:
                    key = self.ring.at(ts)  # nothing minted yet: the run starts with it
                    if key.id != self.key.id:
                        self.epochs.pop()
                        self._set_key(key)
                    self._until = self.ring.until(key)
                else:
                    self.at(ts)
                if self.epochs[-1]["from"] is None:
                    self.epochs[-1]["from"] = iso(ts)
            elif ts >= self._until:
                self.at(ts)
            yield item

    def tick(self, now: float) -> Key | None:
        """The live service's wall-clock hook (call it often; it works once a second): picks
        up keys added to the ring directory, writes the next key ahead of its boundary when
        ``rotation`` is set (audited as ``rotate``), and switches when ``now`` has reached
        the next key. The key written, if any.

        A key ring that cannot be read or written (a read-only directory, a full disk) does
        not stop the run: the error is counted (``stats.privacy.key_ring_errors``), logged
        at once and then at most every ``RING_LOG_SECONDS``, the ring is tried again
        ``RING_RETRY_SECONDS`` later, and the current key stays in force (past its period,
        if need be) until a next key can be written or is added by others."""
        if self.ring is None or now < self._next_tick:
            return None
        self._next_tick = now + TICK_SECONDS
        try:
            new = self._tick_ring(now)
        except (PrivacyKeyError, OSError) as exc:
            self.counters["key_ring_errors"] += 1
            self._next_tick = now + RING_RETRY_SECONDS
            self._next_reload = min(self._next_reload, self._next_tick)
            if now >= self._next_ring_log:
                self._next_ring_log = now + RING_LOG_SECONDS
                log.error(
                    "privacy key ring %s: %s; keeping key %s (errors so far: %d; retried "
                    "every %.0f s, logged at most every %.0f s)",
                    self.ring.source,
                    exc,
                    self.key.id,
                    self.counters["key_ring_errors"],
                    RING_RETRY_SECONDS,
                    RING_LOG_SECONDS,
                )
            new = None
        if now >= self._until:
            self.at(now)
        return new

    def _tick_ring(self, now: float) -> Key | None:
        assert self.ring is not None
        if now >= self._next_reload:
            self._next_reload = now + RELOAD_SECONDS
            if self.ring.reload():
                self._until = self.ring.until(self.key)
        new = None
        if self.rotation is not None:
            lead = min(MAX_LEAD, self.rotation / 10)
            new = self.ring.ensure_next(self.rotation, now, lead)
            if new is not None:
                self._until = self.ring.until(self.key)
                if self.audit is not None:
                    self.audit.append(
                        "rotate",
                        key_id=new.id,
                        valid_from=iso(new.valid_from),
                        ring=str(self.ring.directory),
                        by="sentinel run",
                    )
        return new

    def remembered(self, pseudonym: str) -> tuple[str, str] | None:
        """``(clear address, key id)`` for a pseudonym minted in this process under the
        current or the previous key (memory only), for the sensor's own actions; None for a
        pseudonym that stands for two addresses (a collision)."""
        if pseudonym in self._collided:
            return None
        clear = self._reverse.get(pseudonym)
        if clear is not None:
            return clear, self.key.id
        if self._previous is not None:
            clear = self._previous[1].get(pseudonym)
            if clear is not None:
                return clear, self._previous[0]
        return None

    # ------------------------------------------------------------------ addresses
    def address(self, text: str) -> str:
        """The output form of an address given as text: itself if clear, else its pseudonym.
        This is the flow table's ``address_mapper``."""
        cache = self._cache
        out = cache.get(text)
        if out is not None:
            cache.move_to_end(text)
            return out
        return self._mint(text)

    def _mint(self, text: str) -> str:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:  # never from the flow table; an address field of another source
            return self.identifier(text)
        if self.is_clear(addr):
            out = text
            self.counters["addresses_in_clear"] += 1
        else:
            out = self.pseudonym(addr)
            self.counters["addresses_pseudonymized"] += 1
            known = self._reverse.get(out)
            if known is not None and known != text:
                self.counters["collisions"] += 1
                self._collided.add(out)  # memory cannot tell which: reveal must search
                log.log(  # once at WARNING: a scan of spoofed sources must not flood the log
                    logging.WARNING if self.counters["collisions"] == 1 else logging.DEBUG,
                    "pseudonym %s stands for two addresses (a collision; counted in "
                    "stats.privacy.collisions)",
                    out,
                )
            else:
                self._reverse[out] = text
            if self.table is not None:
                self.table.add(self.key, f"ipv{addr.version}", out, text)
        cache = self._cache
        cache[text] = out
        if len(cache) > self._cache_size:
            old, old_out = cache.popitem(last=False)
            if self._reverse.get(old_out) == old:
                del self._reverse[old_out]
            self.counters["cache_evictions"] += 1
        return out

    def is_clear(self, addr: Address) -> bool:
        return str(addr) in self._clear_hosts or any(addr in net for net in self._clear_nets)

    def pseudonym(self, addr: Address) -> str:
        """The pseudonym of ``addr`` (uncached, whether or not it is kept in clear)."""
        if addr.version == 4:
            h = hmac.digest(self._addr_key, b"\x04" + addr.packed, "sha256")
            tag = self.tag(addr) if self.keep_network else h[3] % 15
            return f"{240 + tag}.{h[0]}.{h[1]}.{h[2]}"
        h = hmac.digest(self._addr_key, b"\x06" + addr.packed, "sha256")
        tag = self.tag(addr) if self.keep_network else 0
        value = (self._ula_bits << 80) | (tag << 64) | int.from_bytes(h[:8], "big")
        return str(ipaddress.IPv6Address(value))

    def tag(self, addr: Address) -> int:
        """1 + the position of the most specific declared network holding ``addr``, or 0."""
        nets = self._tags4 if addr.version == 4 else self._tags6
        best, best_len = 0, -1
        for i, net in enumerate(nets, 1):
            if addr in net and net.prefixlen > best_len:
                best, best_len = i, net.prefixlen
        return best

    def network_of_tag(self, version: int, tag: int) -> Network | None:
        nets = self._tags4 if version == 4 else self._tags6
        return nets[tag - 1] if 0 < tag <= len(nets) else None

    def _overlaps_pseudonym_space(self, net: Network) -> bool:
        return net.overlaps(IPV4_SPACE) if net.version == 4 else net.overlaps(self._ula)

    def is_pseudonym(self, text: str) -> bool:
        """Whether ``text`` has a pseudonym's form under this key (no table is consulted)."""
        if text.startswith(IDENTIFIER_PREFIX):
            return True
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return False
        if addr.version == 4:
            return addr in IPV4_SPACE and addr.packed[0] != 255
        return int(addr) >> 80 in self._ula_all

    @property
    def ipv6_prefix(self) -> str:
        return str(self._ula)

    def clear_address(self, pseudonym: str) -> str | None:
        """The clear address behind a pseudonym minted in this process (memory only), for
        ``matching.clear_for_matching`` (the current key's, then the previous key's)."""
        clear = self._reverse.get(pseudonym)
        if clear is None and self._previous is not None:
            clear = self._previous[1].get(pseudonym)
        return clear

    def mac(self, text: str) -> str:
        """The pseudonym of a MAC address (``aa:bb:cc:dd:ee:ff``, ``-`` or no separators)."""
        raw = bytes.fromhex(text.replace(":", "").replace("-", "").replace(".", ""))
        if len(raw) != 6:
            raise ValueError(f"not a MAC address: {text!r}")
        h = hmac.digest(self._addr_key, b"\x30" + raw, "sha256")
        first = (h[0] & 0xFC) | 0x02  # locally administered, unicast (IEEE 802 section 8.2)
        out = ":".join(f"{b:02x}" for b in (first, *h[1:6]))
        if self.table is not None:
            self.table.add(self.key, "mac", out, ":".join(f"{b:02x}" for b in raw))
        return out

    def link_address(self, text: str) -> str:
        """``mac`` cached (one HMAC per MAC and key), with the MACs that name no one in
        clear (``CLEAR_MACS``)."""
        out = self._macs.get(text)
        if out is None:
            out = text if text.lower() in CLEAR_MACS else self.mac(text)
            if len(self._macs) >= ID_CACHE:
                self._macs.clear()
            self._macs[text] = out
            self.counters["macs_pseudonymized"] += out != text
        return out

    def arp(self, ev: ArpEvent) -> ArpEvent:
        """An ARP event with its IPv4 addresses mapped like the flow table's (``address``)
        and its MACs pseudonymized (``link_address``), before any detector sees it: the
        mapping is deterministic under one key, so the IP -> MAC bindings that
        ``arp_spoof`` compares are unchanged and detections are the same."""
        ip, mac = self.address, self.link_address
        return ev._replace(
            sender_mac=mac(ev.sender_mac),
            sender_ip=ev.sender_ip if ev.sender_ip in ARP_CLEAR_IPS else ip(ev.sender_ip),
            target_mac=mac(ev.target_mac),
            target_ip=ev.target_ip if ev.target_ip in ARP_CLEAR_IPS else ip(ev.target_ip),
            eth_src=mac(ev.eth_src),
        )

    # ------------------------------------------------------------------ identifiers
    def identifier(self, text: str) -> str:
        """The pseudonym of a string from the wire (device serial, user name...)."""
        out = self._ids.get(text)
        if out is None:
            digest = hmac.digest(self._id_key, text.encode("utf-8", "surrogatepass"), "sha256")
            out = IDENTIFIER_PREFIX + digest[:8].hex()
            if len(self._ids) >= ID_CACHE:
                self._ids.clear()
            self._ids[text] = out
            if self.table is not None:
                self.table.add(self.key, "identifier", out, text)
        self.counters["identifiers_pseudonymized"] += 1
        return out

    def _clear_field(self, name: str) -> bool:
        """Whether an identity field names a product (``enip.serial`` is looked up as
        ``serial``: the inventory prefixes OT identity fields with the protocol)."""
        return name in self._clear_objects or name.partition(".")[2] in self._clear_objects

    def scrub_mapping(self, identity: dict[str, Any]) -> dict[str, Any]:
        """An identity mapping with what is not a product name pseudonymized or dropped."""
        mode = self.settings.identifiers
        out: dict[str, Any] = {}
        for name, value in identity.items():
            if (
                self._clear_field(name)
                or value is None
                or value == ""
                or (isinstance(value, str) and value.startswith(IDENTIFIER_PREFIX))
            ):
                out[name] = value
            elif mode == "drop":
                self.counters["identifiers_dropped"] += 1
            else:
                out[name] = self.identifier(str(value))
        return out

    def scrub_identity(self, fields: dict[str, Any]) -> dict[str, Any]:
        """FC 43 objects and FC 17 server id data of a device outside the inventory, as the
        ``identifiers`` setting says (a new dict; ``fields`` is not changed)."""
        mode = self.settings.identifiers
        if mode == "keep":
            return fields
        out = dict(fields)
        objects = fields.get("objects")
        if objects:
            out["objects"] = self.scrub_mapping(objects)
        data = fields.get("server_id_data")
        if data is not None:
            if mode == "drop":
                del out["server_id_data"]
                self.counters["identifiers_dropped"] += 1
            else:
                out["server_id_data"] = self.identifier(data)
        return out

    def scrub_ot(self, ev: OTEvent) -> OTEvent:
        """An OT event (tshark path) whose sender is outside the inventory, with the identity
        it reports (``detail[<protocol>]["identity"]``: EtherNet/IP ListIdentity, BACnet
        device properties, S7 SZL identification) treated like FC 43 objects."""
        if self.settings.identifiers == "keep":
            return ev
        c = ev.conn
        sender = c.orig_h if ev.is_orig else c.resp_h
        detail = ev.detail.get(ev.protocol)
        if not isinstance(detail, dict) or not detail.get("identity"):
            return ev
        if not self.is_pseudonym(sender):
            return ev
        scrubbed = {**detail, "identity": self.scrub_mapping(detail["identity"])}
        return ev._replace(detail={**ev.detail, ev.protocol: scrubbed})

    def wrap_modbus(
        self, dispatch: Callable[[ModbusMessage], None]
    ) -> Callable[[ModbusMessage], None]:
        """The pipeline's Modbus dispatch, with identity strings of devices outside the
        inventory replaced before any detector or sink sees the message. One comparison per
        message for every function but 17 and 43."""
        if self.settings.identifiers == "keep":
            return dispatch
        scrub = self.scrub_identity
        is_pseudonym = self.is_pseudonym

        def private_dispatch(msg: ModbusMessage) -> None:
            fc = msg.fc
            if (fc == 43 or fc == 17) and not msg.is_orig and is_pseudonym(msg.conn.resp_h):
                fields = msg.fields
                if "objects" in fields or "server_id_data" in fields:
                    msg = msg._replace(fields=scrub(fields))
            dispatch(msg)

        return private_dispatch

    def assets(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The inventory with the identity of hosts outside it treated like ``wrap_modbus``
        treats messages; flushes the re-identification table (called once per run)."""
        out = []
        for rec in records:
            if self.settings.identifiers != "keep" and self.is_pseudonym(rec["ip"]):
                rec = dict(rec)
                if rec.get("identity"):
                    rec["identity"] = self.scrub_mapping(rec["identity"]) or None
                if rec.get("server_id"):
                    rec["server_id"] = self.scrub_identity(rec["server_id"])
            out.append(rec)
        self.flush()
        return out

    # ------------------------------------------------------------------ run bookkeeping
    def stats(self) -> dict[str, Any]:
        """``stats.json``'s ``privacy`` object: the key id (never the key) and counters."""
        return {
            "key_id": self.key.id,
            "ipv6_prefix": self.ipv6_prefix,
            "keys": self.epochs,  # every key used, from/until (packet time) when it changed
            "keep_network": self.keep_network,
            "addresses_pseudonymized": self.counters["addresses_pseudonymized"],
            "addresses_in_clear": self.counters["addresses_in_clear"],
            "identifiers_pseudonymized": self.counters["identifiers_pseudonymized"],
            "identifiers_dropped": self.counters["identifiers_dropped"],
            "macs_pseudonymized": self.counters["macs_pseudonymized"],
            "collisions": self.counters["collisions"],
            "cache_evictions": self.counters["cache_evictions"],
            "key_switches": self.counters["key_switches"],
            "key_ring_errors": self.counters["key_ring_errors"],
        }

    def flush(self) -> None:
        if self.table is not None:
            self.table.flush()

    def __repr__(self) -> str:
        return f"Pseudonymizer(key={self.key.id}, keep_network={self.keep_network})"


def _dedupe(items: Iterable[str]) -> list[Network]:
    out: list[Network] = []
    for item in items:
        net = ipaddress.ip_network(item, strict=False)
        if net not in out:
            out.append(net)
    return out
