"""Minimization of payload: ``privacy.minimization.payload`` (protocol -> bytes) is the only
way payload bytes reach an output. Default: none anywhere. Allowed for ``modbus``: EVE
alerts on Modbus flows carry the matched bytes cut to the cap (Suricata's ``payload`` and
``payload_printable``), alerts on other flows none; with pseudonymization on, none for a
flow with an end outside the inventory. Real runs of ``sentinel analyze --rules --format
eve`` on the crafted site capture."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from sentinel.cli import main
from tests.privacy import traffic

RULES = """\
alert tcp any any -> any 502 (msg:"test: bytes to the Modbus port"; content:"|00 00|"; \
offset:2; depth:2; sid:9990001; rev:1;)
alert tcp any any -> any 8080 (msg:"test: web POST"; content:"POST"; sid:9990002; rev:1;)
"""
CAP = 8


def _analyze(capture: Path, tmp_path: Path, privacy: dict[str, Any] | None, *extra: str) -> Path:
    rules = tmp_path / "test.rules"
    rules.write_text(RULES)
    config = traffic.write_config(tmp_path / "site.yaml", privacy)
    out = tmp_path / "out"
    try:
        main(["analyze", "-q", str(capture), "--config", str(config), "--out", str(out),
              "--rules", str(rules), "--format", "eve", *extra])  # fmt: skip
    except SystemExit as exc:  # pragma: no cover - shows the error in the failure
        raise AssertionError(f"sentinel analyze exited {exc.code}") from None
    return out


def _alerts(out: Path) -> list[dict[str, Any]]:
    records = [json.loads(x) for x in (out / "eve.json").read_text().splitlines() if x]
    return [r for r in records if r["event_type"] == "alert"]


def _by_sid(alerts: list[dict[str, Any]], sid: int) -> list[dict[str, Any]]:
    return [a for a in alerts if a["alert"]["signature_id"] == sid]


def test_by_default_no_payload_is_stored_anywhere(site_capture: Path, tmp_path: Path) -> None:
    out = _analyze(site_capture, tmp_path, None)
    alerts = _alerts(out)
    assert _by_sid(alerts, 9990001) and _by_sid(alerts, 9990002)  # the rules did fire
    assert not any("payload" in a or "payload_printable" in a for a in alerts)
    data = b"".join(p.read_bytes() for p in out.iterdir())
    assert traffic.PAYLOAD not in data and b"POST /notes" not in data


def test_allowed_for_modbus_capped_payload_in_alerts_of_modbus_flows_only(
    site_capture: Path, tmp_path: Path
) -> None:
    out = _analyze(site_capture, tmp_path, {"minimization": {"payload": {"modbus": CAP}}})
    alerts = _alerts(out)
    modbus, web = _by_sid(alerts, 9990001), _by_sid(alerts, 9990002)
    assert modbus and web
    assert all(a["app_proto"] == "modbus" for a in modbus)
    assert not any("payload" in a for a in web)  # http is not listed
    for a in modbus:
        raw = base64.b64decode(a["payload"])
        assert len(raw) == CAP and raw[2:4] == b"\x00\x00"  # the MBAP header, cut to the cap
        assert a["payload_printable"] == "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in raw)
        assert a["stream"] == 1
    data = b"".join(p.read_bytes() for p in out.iterdir())
    assert traffic.PAYLOAD not in data and b"POST /notes" not in data
    findings = [json.loads(x) for x in (out / "findings.jsonl").read_text().splitlines()]
    assert findings and not any("payload" in f["sentinel"]["evidence"] for f in findings)


@pytest.mark.parametrize("cap", [CAP])
def test_with_pseudonymization_never_for_hosts_outside_the_inventory(
    site_capture: Path, tmp_path: Path, cap: int
) -> None:
    keyfile = tmp_path / "k.key"
    main(["privacy", "keygen", str(keyfile)])
    out = _analyze(site_capture, tmp_path, {"minimization": {"payload": {"modbus": cap}}},
                   "--pseudonymize", str(keyfile))  # fmt: skip
    modbus = _by_sid(_alerts(out), 9990001)
    inventory = [a for a in modbus if {a["src_ip"], a["dest_ip"]} <= set(traffic.INVENTORY)]
    outside = [a for a in modbus if a not in inventory]
    assert inventory and outside
    assert all(len(base64.b64decode(a["payload"])) == cap for a in inventory)
    assert not any("payload" in a for a in outside)
    assert traffic.PAYLOAD[:cap] not in b"".join(p.read_bytes() for p in out.iterdir())
