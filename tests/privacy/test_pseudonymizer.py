"""Pseudonym formats, determinism per key, what stays in clear, the cache, identifiers."""

from __future__ import annotations

import ipaddress

import pytest

from sentinel.errors import SentinelError
from sentinel.events import ConnId, ModbusMessage
from sentinel.privacy import clear_for_matching
from sentinel.privacy.keys import Key
from sentinel.privacy.pseudonymizer import Pseudonymizer
from sentinel.privacy.settings import Pseudonymization

NETS = ["10.10.0.0/24", "10.20.0.0/16", "10.20.5.0/24", "2001:db8:10::/64"]
V4 = [f"10.20.{i // 256}.{i % 256}" for i in range(0, 4000, 7)] + ["8.8.8.8", "192.0.2.1"]
V6 = [f"2001:db8:10::{i:x}" for i in range(1, 300)] + ["2a00:1450::1"]


def make(key: Key, **kw: object) -> Pseudonymizer:
    clear = kw.pop("clear", ["10.10.0.20"])
    return Pseudonymizer(key, clear=clear, networks=NETS, settings=Pseudonymization(**kw))


def test_same_address_same_pseudonym_under_one_key_and_another_under_another(key: Key) -> None:
    a, a_again = make(key), make(Key(key.secret))  # a second sensor with the same key
    other = make(Key(bytes(range(1, 33))))
    for text in V4 + V6:
        pa = a.address(text)
        assert pa == a.address(text) == a_again.address(text)
        assert pa != text
        assert other.address(text) != pa
    first = [a.address(t) for t in V4 + V6]
    assert len(set(first)) == len(first)  # no collision in this sample


def test_ipv4_pseudonyms_are_class_e_addresses_tagged_with_their_network(key: Key) -> None:
    p = make(key)
    for text, first_octet in (
        ("10.10.0.99", 241),  # network 1
        ("10.20.77.1", 242),  # network 2
        ("10.20.5.9", 243),  # network 3, more specific than network 2
        ("8.8.8.8", 240),  # no declared network
    ):
        out = ipaddress.ip_address(p.address(text))
        assert out.version == 4 and out.is_reserved and out in ipaddress.ip_network("240.0.0.0/4")
        assert out.packed[0] == first_octet
        assert p.is_pseudonym(str(out))
    untagged = make(key, keep_network=False)
    octets = {ipaddress.ip_address(untagged.address(t)).packed[0] for t in V4}
    assert octets <= set(range(240, 255)) and len(octets) > 5  # 255 never: no broadcast


def test_ipv6_pseudonyms_are_in_the_keys_ula_prefix_with_the_network_as_subnet(key: Key) -> None:
    p = make(key)
    prefix = ipaddress.ip_network(p.ipv6_prefix)
    assert prefix.prefixlen == 48 and prefix.subnet_of(ipaddress.ip_network("fd00::/8"))
    inside = ipaddress.ip_address(p.address("2001:db8:10::5"))
    outside = ipaddress.ip_address(p.address("2a00:1450::1"))
    assert inside in prefix and outside in prefix
    assert (int(inside) >> 64) & 0xFFFF == 1  # the first IPv6 network declared
    assert (int(outside) >> 64) & 0xFFFF == 0
    assert make(Key(bytes(range(1, 33)))).ipv6_prefix != p.ipv6_prefix  # one prefix per key


def test_declared_addresses_stay_in_clear(key: Key) -> None:
    p = Pseudonymizer(
        key,
        clear=["10.10.0.20", "2001:db8:10::20"],  # the config's inventory
        networks=NETS,
        settings=Pseudonymization(clear=["10.99.0.0/16"]),  # and privacy.pseudonymization.clear
    )
    assert p.address("10.10.0.20") == "10.10.0.20"
    assert p.address("2001:db8:10::20") == "2001:db8:10::20"
    assert p.address("10.99.3.4") == "10.99.3.4"  # privacy.pseudonymization.clear network
    assert p.address("10.10.0.21") != "10.10.0.21"
    assert p.stats()["addresses_in_clear"] == 3


def test_a_declared_address_in_pseudonym_space_is_refused(key: Key) -> None:
    with pytest.raises(SentinelError, match="pseudonym space"):
        Pseudonymizer(key, clear=["241.1.2.3"])
    with pytest.raises(SentinelError, match="pseudonym space"):
        Pseudonymizer(key, settings=Pseudonymization(clear=["224.0.0.0/3"]))


def test_keep_network_is_refused_beyond_fourteen_ipv4_networks(key: Key) -> None:
    nets = [f"10.{i}.0.0/16" for i in range(15)]
    with pytest.raises(SentinelError, match="keep_network"):
        Pseudonymizer(key, networks=nets)
    Pseudonymizer(key, networks=nets, settings=Pseudonymization(keep_network=False))


def test_the_cache_is_bounded_and_eviction_does_not_change_pseudonyms(key: Key) -> None:
    p = make(key, cache_size=1024)
    first = {t: p.address(t) for t in (f"10.20.{i // 256}.{i % 256}" for i in range(3000))}
    assert len(p._cache) <= 1024 and len(p._reverse) <= 1024
    assert p.stats()["cache_evictions"] == 3000 - 1024
    assert all(p.address(t) == out for t, out in first.items())


def test_collisions_are_counted_and_the_first_owner_keeps_the_reverse_entry(key: Key) -> None:
    p = make(key)
    seen: dict[str, str] = {}
    for i in range(1 << 16):  # a 24-bit pseudonym space: a collision comes within thousands
        text = str(ipaddress.IPv4Address(0x0B000000 + i))  # 11.0.0.0/16, tag 0
        out = p.address(text)
        if out in seen:
            break
        seen[out] = text
    else:
        pytest.fail("no collision in 65,536 addresses")
    assert p.stats()["collisions"] == 1
    assert p.clear_address(out) == seen[out]


def test_clear_for_matching_sees_through_live_pseudonyms_only(key: Key) -> None:
    p = make(key)
    pseudo = p.address("10.20.3.7")
    assert clear_for_matching(pseudo) == "10.20.3.7"
    assert clear_for_matching("10.10.0.20") == "10.10.0.20"
    assert clear_for_matching("241.0.0.1") == "241.0.0.1"  # not minted here


def test_identifiers_and_macs(key: Key) -> None:
    p = make(key)
    serial = p.identifier("SN-4711")
    assert serial.startswith("ps:") and len(serial) == 19 and serial == p.identifier("SN-4711")
    assert serial != make(Key(bytes(range(1, 33)))).identifier("SN-4711")
    assert p.identifier("10.20.3.7") != p.address("10.20.3.7")  # kinds are kept apart
    mac = p.mac("00:80:F4:01:00:14")
    assert mac == p.mac("00-80-f4-01-00-14") and mac != "00:80:f4:01:00:14"
    assert int(mac[:2], 16) & 0x03 == 0x02  # locally administered, unicast


def _msg(fc: int, resp_h: str, fields: dict) -> ModbusMessage:
    return ModbusMessage(1.0, "C1", ConnId("10.10.0.10", 4000, resp_h, 502), False, 1, 0, 1, fc,
                         "X", None, 5, 1, fields)  # fmt: skip


@pytest.mark.parametrize("mode", ["pseudonymize", "drop", "keep"])
def test_identity_of_devices_outside_the_inventory(key: Key, mode: str) -> None:
    p = make(key, identifiers=mode)
    rogue = p.address("10.20.9.9")
    objects = {"VendorName": "ACME", "UserApplicationName": "Jane Doe", "object_128": "SN-1"}
    seen: list[ModbusMessage] = []
    dispatch = p.wrap_modbus(seen.append)
    dispatch(_msg(43, rogue, {"mei_type": 14, "objects": dict(objects)}))
    dispatch(_msg(17, rogue, {"server_id": 1, "server_id_data": "SERIAL-9"}))
    dispatch(_msg(43, "10.10.0.20", {"mei_type": 14, "objects": dict(objects)}))  # inventory
    out43, out17, declared = (m.fields for m in seen)
    assert declared["objects"] == objects
    if mode == "keep":
        assert out43["objects"] == objects and out17["server_id_data"] == "SERIAL-9"
        return
    assert out43["objects"]["VendorName"] == "ACME"  # a product, not a person
    if mode == "drop":
        assert set(out43["objects"]) == {"VendorName"} and "server_id_data" not in out17
    else:
        assert out43["objects"]["UserApplicationName"] == p.identifier("Jane Doe")
        assert out43["objects"]["object_128"] == p.identifier("SN-1")
        assert out17["server_id_data"] == p.identifier("SERIAL-9")
    assert out17["server_id"] == 1


def test_the_secret_is_in_no_repr_or_stats(key: Key) -> None:
    p = make(key)
    p.address("10.20.1.1")
    text = repr(key) + repr(p) + repr(p.stats())
    assert key.secret.hex() not in text and str(key.secret) not in text
    assert p.stats()["key_id"] == key.id
