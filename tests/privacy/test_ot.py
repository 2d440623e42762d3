"""OT protocols decoded through tshark (real tshark): addresses and the identity a device
outside the inventory reports (EtherNet/IP serial number) are pseudonymized in ot.jsonl and
assets.jsonl; product names stay."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sentinel.config import Config
from sentinel.privacy.keys import Key
from sentinel.privacy.leaks import find_leaks
from tests.privacy.conftest import pseudonymizer, run

DATA = Path(__file__).parent / "data"
ENIP_DEVICE, ENIP_CLIENT, SERIAL = "10.1.1.164", "10.1.1.167", "5393806"

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


def test_enip_identity_of_an_unknown_device(key: Key, tmp_path: Path) -> None:
    capture = DATA / "enip_test.pcap"
    clear = run(capture, tmp_path / "clear", Config())
    identity = next(r["enip"]["identity"] for r in clear.records("ot") if _identity(r))
    assert identity["serial"] == int(SERIAL)  # the capture has what the test is about

    p = pseudonymizer(Config(), key)
    private = run(capture, tmp_path / "private", Config(), p)
    data = private.all_bytes()
    for text in (ENIP_DEVICE, ENIP_CLIENT, SERIAL):
        assert text.encode() not in data, text
    assert find_leaks([private.out], lambda a: False) == []
    (scrubbed,) = (r["enip"]["identity"] for r in private.records("ot") if _identity(r))
    assert scrubbed["serial"] == p.identifier(SERIAL)
    assert scrubbed["product_name"] == identity["product_name"]  # a product, not a unit
    device = next(a for a in private.records("assets") if a["ip"] == p.address(ENIP_DEVICE))
    assert device["identity"]["enip.serial"] == p.identifier(SERIAL)  # once, not twice
    assert device["identity"]["enip.product_name"] == identity["product_name"]


def test_a_declared_device_keeps_its_identity(key: Key, tmp_path: Path) -> None:
    config = Config.model_validate({"assets": [{"address": ENIP_DEVICE, "role": "plc"}]})
    private = run(DATA / "enip_test.pcap", tmp_path / "out", config, pseudonymizer(config, key))
    (identity,) = (r["enip"]["identity"] for r in private.records("ot") if _identity(r))
    assert identity["serial"] == int(SERIAL)
    assert ENIP_CLIENT.encode() not in private.all_bytes()


def test_bacnet_device_properties(key: Key, tmp_path: Path) -> None:
    p = pseudonymizer(Config(), key)
    private = run(DATA / "bacnet_test.pcap", tmp_path / "out", Config(), p)
    assert find_leaks([private.out], lambda a: False) == []
    identities = [r["bacnet"]["identity"] for r in private.records("ot") if "bacnet" in r and
                  r["bacnet"].get("identity")]  # fmt: skip
    assert {"model-name": "MS-NAE4510-2"} in identities  # a product name stays
    assert {"vendor-name": "JCI"} in identities


def _identity(record: dict) -> bool:
    return bool(record.get("enip", {}).get("identity"))
