"""With pseudonymization on, no address outside the inventory and no identifier or payload
from the wire appears in clear in any output: the JSONL files, EVE, what sinks receive
(Elasticsearch documents are checked against a real node in test_elasticsearch.py), and
findings as handed to sinks.

Playbook notifications: there is no playbook engine in the tree yet; the architecture hands
it the same finding documents the sinks receive, which ``Recorder`` captures here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.cli import main
from sentinel.config import Config
from sentinel.privacy.keys import Key, load_ring
from sentinel.privacy.leaks import find_leaks
from sentinel.sinks.base import Sink
from tests.privacy import traffic
from tests.privacy.conftest import (
    address_pattern,
    key_forms,
    lab_config,
    pseudonymizer,
    run,
    site_file,
)


class Recorder(Sink):
    """Everything a sink (or the playbook engine) is handed, serialized as sent."""

    id = "recorder"

    def __init__(self) -> None:
        self.docs: list[bytes] = []

    def modbus(self, record: dict[str, Any]) -> None:
        self.docs.append(orjson.dumps(record))

    def flow(self, record: dict[str, Any]) -> None:
        self.docs.append(orjson.dumps(record))

    def finding(self, document: dict[str, Any]) -> None:
        self.docs.append(orjson.dumps(document))

    def assets(self, records: list[dict[str, Any]]) -> None:
        self.docs.extend(orjson.dumps(r) for r in records)


def assert_private(data: bytes, outside: tuple[str, ...], key: Key | None = None) -> None:
    for address in outside:
        assert not address_pattern(address).search(data), f"{address} in clear"
    for mac in traffic.MACS:
        for form in (mac, mac.upper(), mac.replace(":", "-"), mac.replace(":", "")):
            assert form.encode() not in data, f"MAC {mac} in clear"
    for secret in traffic.SECRETS:
        assert secret.encode() not in data, f"{secret!r} in clear"
    for form in key_forms(key) if key else []:
        assert form not in data, "the key is in an output"


def inventory(text: str) -> bool:
    return text in traffic.INVENTORY


def test_site_outputs_carry_no_clear_address_identifier_or_payload(
    site_capture: Path, site_config: Config, key: Key, tmp_path: Path
) -> None:
    clear = run(site_capture, tmp_path / "clear", site_config)
    for address in traffic.OUTSIDE:  # the check below is not vacuous: they are there
        assert address_pattern(address).search(clear.all_bytes()), address
    assert traffic.USER_APP.encode() in clear.all_bytes()
    assert all(mac.encode() in clear.all_bytes() for mac in traffic.MACS[2:])  # ARP findings

    recorder = Recorder()
    p = pseudonymizer(site_config, key)
    private = run(site_capture, tmp_path / "private", site_config, p, [recorder])
    assert private.stats["privacy"]["addresses_pseudonymized"] == len(traffic.OUTSIDE)
    assert private.stats["privacy"]["macs_pseudonymized"] == len(traffic.MACS)
    assert private.stats["findings"] == clear.stats["findings"] > 0
    assert_private(private.all_bytes(), traffic.OUTSIDE, key)
    assert_private(b"\n".join(recorder.docs), traffic.OUTSIDE, key)
    assert find_leaks([private.out], inventory) == []
    assert find_leaks([clear.out], inventory)  # and the checker sees them without privacy

    # What is still there: the inventory in clear, pseudonyms of the right family, decoded
    # identity that names a product.
    hosts = {a["ip"] for a in private.records("assets")}
    assert set(traffic.INVENTORY) <= hosts
    outsiders = hosts - set(traffic.INVENTORY)
    assert len(outsiders) == 3 and all(p.is_pseudonym(h) for h in outsiders)  # Modbus hosts
    rogue = next(a for a in private.records("assets") if a["identity"])
    assert rogue["identity"]["VendorName"] == traffic.PUBLIC_OBJECTS["VendorName"]
    assert rogue["identity"]["UserApplicationName"] == p.identifier(traffic.USER_APP)
    assert rogue["server_id"]["server_id_data"] == p.identifier(traffic.SERVER_ID_DATA)
    v6 = [a for a in private.records("assets") if ":" in a["ip"] and a["ip"] != traffic.PLC6]
    assert v6 and v6[0]["ip"].startswith(p.ipv6_prefix.split("::")[0])


def test_identifiers_can_be_dropped_instead(
    site_capture: Path, site_config: Config, key: Key, tmp_path: Path
) -> None:
    p = pseudonymizer(site_config, key, identifiers="drop")
    private = run(site_capture, tmp_path / "private", site_config, p)
    assert_private(private.all_bytes(), traffic.OUTSIDE)
    rogue = next(a for a in private.records("assets") if a["identity"])
    assert rogue["identity"] == traffic.PUBLIC_OBJECTS
    assert "server_id_data" not in rogue["server_id"]
    assert b'"ps:' not in private.all_bytes()


def _analyze(*args: str) -> None:
    try:
        main(["analyze", "-q", *args])
    except SystemExit as exc:  # pragma: no cover - shows the error in the failure
        raise AssertionError(f"sentinel analyze exited {exc.code}") from None


def test_analyze_pseudonymize_writes_no_clear_address_in_jsonl_or_eve(
    site_capture: Path, tmp_path: Path, state_dir: Path
) -> None:
    """``sentinel analyze --pseudonymize KEYFILE --format eve``, in-process with the core
    changes this area asks for."""
    keydir = tmp_path / "keys"
    main(["privacy", "keygen", str(keydir), "--ring"])
    config = traffic.write_config(tmp_path / "site.yaml")
    out = tmp_path / "out"
    _analyze(str(site_capture), "--config", str(config), "--out", str(out),
             "--format", "eve", "--pseudonymize", str(keydir))  # fmt: skip
    eve = (out / "eve.json").read_bytes()
    assert b'"event_type":"alert"' in eve and b'"event_type":"modbus"' in eve
    key = load_ring(str(keydir)).active()
    data = b"".join(p.read_bytes() for p in out.iterdir())
    assert_private(data, traffic.OUTSIDE, key)
    assert find_leaks([out], inventory) == []
    stats = orjson.loads((out / "stats.json").read_bytes())
    assert stats["privacy"]["key_id"] == key.id


@pytest.mark.parametrize("site", ["hospital"])
def test_lab_capture_has_no_clear_address_outside_the_inventory(
    site: str, lab_capture: Any, key: Key, tmp_path: Path
) -> None:
    config = lab_config(site)
    capture = lab_capture(site)
    clear = run(capture, tmp_path / "clear", config)
    declared = {a.address for a in config.assets}
    seen = {f[h] for f in clear.records("flows") for h in ("orig_h", "resp_h")}
    outside = tuple(sorted(seen - declared))
    assert outside  # the lab's attacker
    private = run(capture, tmp_path / "private", config, pseudonymizer(config, key))
    assert_private(private.all_bytes(), outside, key)
    assert find_leaks([private.out], lambda a: a in declared) == []


def test_analyze_refuses_rather_than_write_in_clear_without_the_core_change(
    site_capture: Path, tmp_path: Path, state_dir: Path
) -> None:
    """The installed command, as a user runs it: either the pipeline can pseudonymize and the
    outputs are private, or the command refuses before writing anything."""
    keyfile = tmp_path / "k.key"
    main(["privacy", "keygen", str(keyfile)])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", "analyze", "-q",
         str(site_capture), "--config", str(site_file("hospital")), "--out", str(out),
         "--pseudonymize", str(keyfile)],
        capture_output=True, text=True, env={**os.environ, "SENTINEL_STATE": str(state_dir)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_private(b"".join(p.read_bytes() for p in out.iterdir()), traffic.OUTSIDE)


def test_a_bad_key_stops_analyze_before_any_work(site_capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", "analyze", "-q",
         str(site_capture), "--out", str(out), "--pseudonymize", str(tmp_path / "missing.key")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"sentinel: key file not found: {tmp_path / 'missing.key'}"
    assert not out.exists()


def test_privacy_check_command(
    site_capture: Path, site_config: Config, key: Key, tmp_path: Path
) -> None:
    config = traffic.write_config(tmp_path / "site.yaml")
    clear = run(site_capture, tmp_path / "clear", site_config)
    private = run(site_capture, tmp_path / "private", site_config, pseudonymizer(site_config, key))

    def check(out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from sentinel.cli import main; main()", "privacy", "check",
             str(out), "--config", str(config)],
            capture_output=True, text=True,
        )  # fmt: skip

    bad, good = check(clear.out), check(private.out)
    assert bad.returncode == 1
    listed = {line.rsplit(": ", 1)[1].removesuffix(" in clear") for line in bad.stdout.splitlines()}
    assert listed == set(traffic.OUTSIDE)
    assert good.returncode == 0 and "no address in clear" in good.stdout


def test_arp_spoofing_is_detected_alike_with_pseudonyms_in_place_of_ips_and_macs(
    site_capture: Path, site_config: Config, key: Key, tmp_path: Path
) -> None:
    """The ARP scenario of the site capture: the same ``arp_spoof`` findings with and without
    pseudonymization, field by field once pseudonyms are mapped back; no clear IP or MAC."""
    clear = run(site_capture, tmp_path / "clear", site_config)
    p = pseudonymizer(site_config, key)
    private = run(site_capture, tmp_path / "private", site_config, p)

    def arp(r: Any) -> list[dict[str, Any]]:
        return [f for f in r.records("findings") if f["rule"]["id"] == "9000501"]

    before, after = arp(clear), arp(private)
    claimed = sorted(f["sentinel"]["evidence"]["claimed_ip"] for f in before)
    assert claimed == sorted([traffic.GUEST_SERVER, traffic.PLC])
    assert len(after) == len(before)
    macs = {p.link_address(m): m for m in traffic.MACS}
    assert len(macs) == len(traffic.MACS)
    for f in after:
        ev = f["sentinel"]["evidence"]
        assert ev["claimed_mac"] == p.link_address(traffic.GUEST_MAC)
        assert ev["target_ip"] == traffic.HMI  # declared: in clear
        clear_ip = p.clear_address(ev["claimed_ip"]) or ev["claimed_ip"]
        match = next(b for b in before if b["sentinel"]["evidence"]["claimed_ip"] == clear_ip)
        unmapped = {
            k: macs.get(v, p.clear_address(v) or v) if isinstance(v, str) else v
            for k, v in ev.items()
        }
        assert unmapped == match["sentinel"]["evidence"]
    guest_server = next(f for f in after if f["sentinel"]["evidence"]["claimed_ip"] != traffic.PLC)
    assert p.is_pseudonym(guest_server["sentinel"]["evidence"]["claimed_ip"])
    assert_private(b"\n".join(orjson.dumps(f) for f in after), traffic.OUTSIDE, key)
