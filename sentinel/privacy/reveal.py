"""Re-identification for holders of the key: ``sentinel privacy reveal PSEUDONYM``.

A pseudonym is a one-way HMAC, so revealing means finding the value that gives it:

1. **The re-identification table** (``privacy.pseudonymization.reveal_table``), when the
   sensor kept one: the row for the pseudonym, opened with the key whose id it names. This
   works for every kind (IPv4, IPv6, MAC, identifiers).
2. **Search** (IPv4 and IPv6 only): every address of the candidate networks is
   pseudonymized with each key of the ring until one matches. The candidates are the
   networks given with ``--within``, else, for an IPv4 pseudonym tagged with a declared
   network (``keep_network``), that network from the config the sensor used. At most
   ``MAX_SEARCH`` addresses per key (a /8 takes a few seconds per key).

Which key: a ring keeps every retained key, and a pseudonym is tried under each. ``at`` (``reveal
--at TIME``, the record's ``@timestamp``) narrows that to the keys a record of that time can
carry: the one in force then and the earlier ones (a flow keeps the key in force when it
began), newest first; the first key of a ring also covers the time before it. Each match
names its key and the time that key was in force, so an analyst can check it against the
record; two different values (under two keys, or a collision) make the outcome
``ambiguous``, and nothing acts on an ambiguous answer.

The sensor's own actions (``firewall.block``, ``scan.device``, ``capture.snapshot``) reveal
through the same function (``sentinel.privacy.sensor``): ``memory`` then gives the
pseudonyms minted in this process first, and ``extra`` names the action in the audit entry.

Every use is written to the audit log (``audit``) *before* the answer is shown, found or
not; when the entry cannot be written, nothing is shown. The audit entry names the
pseudonym, the reason, the method and the key ids used, never the clear value.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sentinel.errors import SentinelError
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import Key, KeyRing, iso
from sentinel.privacy.leaks import PSEUDO_V6
from sentinel.privacy.pseudonymizer import IDENTIFIER_PREFIX, IPV4_SPACE, Pseudonymizer
from sentinel.privacy.settings import Pseudonymization
from sentinel.privacy.table import RevealTable

MAX_SEARCH = 1 << 24
_MAC_HEX = frozenset("0123456789abcdef")


@dataclass
class Match:
    value: str
    key_id: str
    method: str  # "table", "search" or "memory"
    key_valid: str = ""  # when that key was in force ("from .. until ..")


@dataclass
class RevealResult:
    pseudonym: str
    kind: str
    matches: list[Match] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        values = {m.value for m in self.matches}
        return "not-found" if not values else "found" if len(values) == 1 else "ambiguous"


def kind_of(pseudonym: str) -> str:
    """``ipv4``, ``ipv6``, ``mac`` or ``identifier``; SentinelError if it is none of them."""
    text = pseudonym.strip()
    if text.startswith(IDENTIFIER_PREFIX) and len(text) == len(IDENTIFIER_PREFIX) + 16:
        return "identifier"
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        parts = text.lower().split(":")
        is_mac = len(parts) == 6 and all(len(p) == 2 and set(p) <= _MAC_HEX for p in parts)
        if is_mac and int(parts[0], 16) & 0x03 == 0x02:  # locally administered, unicast
            return "mac"
        raise SentinelError(f"not a pseudonym: {pseudonym!r}") from None
    if addr.version == 4 and addr in IPV4_SPACE and addr.packed[0] != 255:
        return "ipv4"
    if addr.version == 6 and addr in PSEUDO_V6:
        return "ipv6"
    raise SentinelError(f"not a pseudonym: {pseudonym!r} is an ordinary address")


def reveal(
    pseudonym: str,
    ring: KeyRing,
    audit: AuditLog,
    reason: str,
    *,
    networks: list[str] | None = None,
    settings: Pseudonymization | None = None,
    within: list[str] | None = None,
    table: RevealTable | None = None,
    max_search: int = MAX_SEARCH,
    at: float | None = None,
    memory: Callable[[str], tuple[str, str] | None] | None = None,
    extra: dict[str, Any] | None = None,
) -> RevealResult:
    """Find what ``pseudonym`` stands for (see the module docstring) and audit the attempt."""
    if not reason or not reason.strip():
        raise SentinelError("a reason is required to reveal a pseudonym (--reason TEXT)")
    pseudonym = pseudonym.strip()
    kind = kind_of(pseudonym)
    if kind in ("ipv4", "ipv6"):
        pseudonym = str(ipaddress.ip_address(pseudonym))
    elif kind == "mac":
        pseudonym = pseudonym.lower()
    result = RevealResult(pseudonym, kind)
    settings = settings or Pseudonymization()
    keys = ring.keys if at is None else ring.keys_until(at)
    allowed = {k.id for k in keys}
    if memory is not None:
        found = memory(pseudonym)
        if found is not None and found[1] in allowed:
            result.matches.append(Match(found[0], found[1], "memory"))
    if table is not None and not result.matches:
        for entry in table.lookup(pseudonym):
            if entry.key_id not in allowed and ring.by_id(entry.key_id) is not None:
                continue  # a key that started after the record's time
            key = ring.by_id(entry.key_id)
            if key is None:
                result.notes.append(
                    f"the table has a value under key {entry.key_id}, which is not in "
                    f"{ring.source} (offline or destroyed)"
                )
                continue
            result.matches.append(Match(RevealTable.open_entry(entry, key), key.id, "table"))
    if not result.matches and kind in ("ipv4", "ipv6"):
        _search(result, keys, ring.source, networks or [], settings, within or [], max_search)
    elif not result.matches:
        result.notes.append(
            f"{kind} pseudonyms can only be revealed through the re-identification table"
            + ("" if table is not None else " (privacy.pseudonymization.reveal_table is not set)")
        )
    entry: dict[str, Any] = {
        "pseudonym": pseudonym,
        "kind": kind,
        "reason": reason.strip(),
        "outcome": result.outcome,
        "method": sorted({m.method for m in result.matches}) or None,
        "key_id": sorted({m.key_id for m in result.matches}) or None,
        "keys_tried": [k.id for k in keys],
    }
    if at is not None:
        entry["at"] = iso(at)
    if within:
        entry["within"] = within
    entry.update(extra or {})
    for m in result.matches:
        key = ring.by_id(m.key_id)
        if key is not None:
            until = ring.until(key)
            m.key_valid = f"{iso(key.valid_from)} .. " + (
                iso(until) if until != float("inf") else "now"
            )
    audit.append("reveal", **entry)
    return result


def _search(
    result: RevealResult,
    keys: list[Key],
    source: str,
    networks: list[str],
    settings: Pseudonymization,
    within: list[str],
    max_search: int,
) -> None:
    target = ipaddress.ip_address(result.pseudonym)
    version = target.version
    tag = target.packed[0] - 240 if version == 4 else (int(target) >> 64) & 0xFFFF
    for key in keys:
        p = Pseudonymizer(key, networks=networks, settings=settings)
        if version == 6 and not p.is_pseudonym(str(target)):
            continue  # another key's prefix
        if within:
            nets = [ipaddress.ip_network(w, strict=False) for w in within]
            candidates = [n for n in nets if n.version == version]
        elif p.keep_network and p.network_of_tag(version, tag) is not None:
            candidates = [p.network_of_tag(version, tag)]
        else:
            result.notes.append(
                "give --within CIDR (where to look): the pseudonym is in no declared network"
                if tag == 0 or not p.keep_network
                else f"the pseudonym is tagged with declared network #{tag}, which this config "
                "does not have: give the sensor's --config, or --within CIDR"
            )
            return
        for net in candidates:
            if net.num_addresses > max_search:
                raise SentinelError(
                    f"{net} has {net.num_addresses:,} addresses; at most {max_search:,} are "
                    "searched: give a smaller network with --within"
                )
            for value in _scan(p, net, target, tag):
                result.matches.append(Match(value, key.id, "search"))
    if not result.matches:
        where = ", ".join(within) if within else "the declared network it is tagged with"
        result.notes.append(f"no address in {where} has this pseudonym under {source}")
    elif len({m.value for m in result.matches}) > 1:
        result.notes.append(
            "several addresses give this pseudonym (a collision, or a search without the "
            "sensor's config that cannot check the network tag)"
        )


def _tag_ok(p: Pseudonymizer, addr: Any, tag: int, digest: bytes) -> bool:
    """Whether ``addr`` would get the pseudonym's tag (unknowable without the networks)."""
    if not p.keep_network:
        return tag == (digest[3] % 15 if addr.version == 4 else 0)
    if not p.networks:
        return True
    return p.tag(addr) == tag


def _scan(
    p: Pseudonymizer, net: Any, target: ipaddress.IPv4Address | ipaddress.IPv6Address, tag: int
) -> list[str]:
    """The addresses of ``net`` whose pseudonym under ``p`` is ``target`` (a tight loop)."""
    key = p._addr_key
    digest = hmac.digest
    start = int(net.network_address)
    found = []
    if target.version == 4:
        want = target.packed[1:]
        for value in range(start, start + net.num_addresses):
            packed = value.to_bytes(4, "big")
            h = digest(key, b"\x04" + packed, "sha256")
            if h[:3] == want:
                addr = ipaddress.IPv4Address(packed)
                if _tag_ok(p, addr, tag, h):
                    found.append(str(addr))
        return found
    want6 = target.packed[8:]
    for value in range(start, start + net.num_addresses):
        packed = value.to_bytes(16, "big")
        h = digest(key, b"\x06" + packed, "sha256")
        if h[:8] == want6:
            addr6 = ipaddress.IPv6Address(packed)
            if _tag_ok(p, addr6, tag, h):
                found.append(str(addr6))
    return found
