"""Scheduled jobs with privacy on: a device outside the inventory leaves an inventory job (its
findings, device records, messages) under its pseudonym, as the pipeline would name it; a
declared asset stays in clear. Real pymodbus servers on loopback (tests/schedule)."""

from __future__ import annotations

import json
from pathlib import Path

from sentinel.config import Config
from sentinel.privacy.keys import Key, write_key_file
from sentinel.privacy.runtime import pseudonymizer_for
from sentinel.schedule.service import SchedulerService
from tests.schedule.conftest import plcs  # noqa: F401 - the fixture

DECLARED, GUEST = "127.0.0.3", "127.0.0.2"


def _config(tmp_path: Path, port: int, privacy: bool) -> Config:
    key_file = write_key_file(tmp_path / "sensor.key", Key.generate(0))
    return Config.model_validate(
        {
            "sites": [{"name": "plant", "networks": ["127.0.0.0/29"]}],
            "assets": [{"address": DECLARED, "role": "plc"}],
            "privacy": {
                "pseudonymization": {"enabled": privacy, "key_file": str(key_file)},
                "audit_log": str(tmp_path / "audit.jsonl"),
            },
            "jobs": {
                "inv": {
                    "type": "modbus.inventory",
                    "scopes": ["127.0.0.0/29"],
                    "targets": [
                        {"address": GUEST, "port": port},
                        {"address": DECLARED, "port": port},
                    ],
                    "report_first_run": True,
                    "rate": 50,
                    "timeout": 1.0,
                },
                "gone": {  # nothing listens there: a message names the device
                    "type": "modbus.inventory",
                    "scopes": ["127.0.0.0/29"],
                    "targets": [{"address": "127.0.0.5", "port": port}],
                    "connect_timeout": 0.3,
                },
            },
        }
    )


def _run(config: Config, tmp_path: Path, job: str) -> tuple[dict, list[dict], list]:
    findings: list[dict] = []
    devices: list = []
    service = SchedulerService(
        config, emit=findings.append, devices=lambda name, recs: devices.extend(recs),
        state=tmp_path / "state",
    )  # fmt: skip
    result = service.run_now(job)
    return result.to_dict(), findings, devices


def test_an_inventory_names_devices_outside_the_inventory_by_pseudonym(plcs, tmp_path):  # noqa: F811
    config = _config(tmp_path, plcs.port, privacy=True)
    result, findings, devices = _run(config, tmp_path, "inv")
    assert result["status"] == "ok", result["messages"]
    pseudonym = pseudonymizer_for(config).address(GUEST)
    assert pseudonym != GUEST
    text = json.dumps([result, findings, devices])
    where = text.find(GUEST)
    assert where < 0, text[max(0, where - 300) : where + 50]
    assert pseudonym in text  # everywhere, ids and messages too
    by_ip = {f["destination"]["ip"]: f for f in findings}
    assert set(by_ip) == {pseudonym, DECLARED}
    assert by_ip[pseudonym]["related"]["ip"] == [pseudonym]
    assert pseudonym in by_ip[pseudonym]["message"] and DECLARED in by_ip[DECLARED]["message"]
    # product names stay readable; identifiers of the guest device are pseudonyms
    assert by_ip[pseudonym]["sentinel"]["evidence"]["identity"]["VendorName"] == "Acme Controls"
    sid = by_ip[pseudonym]["sentinel"]["evidence"].get("server_id")
    assert sid is None or sid.startswith("ps:")
    assert by_ip[DECLARED]["sentinel"]["evidence"]["identity"]["VendorName"] == "Volta"
    assert sorted(d["address"] for d in devices) == sorted([pseudonym, DECLARED])

    gone, _, _ = _run(config, tmp_path, "gone")
    assert gone["messages"] and "127.0.0.5" not in json.dumps(gone)


def test_without_privacy_everything_is_in_clear(plcs, tmp_path):  # noqa: F811
    result, findings, _ = _run(_config(tmp_path, plcs.port, privacy=False), tmp_path, "inv")
    assert sorted(f["destination"]["ip"] for f in findings) == [GUEST, DECLARED]
    assert GUEST in json.dumps(result)


def test_a_missing_key_refuses_the_job(plcs, tmp_path):  # noqa: F811
    config = _config(tmp_path, plcs.port, privacy=True)
    (tmp_path / "sensor.key").unlink()
    result, findings, _ = _run(config, tmp_path, "inv")
    assert result["status"] == "refused" and findings == []
    assert result["messages"][0].startswith("privacy:")
