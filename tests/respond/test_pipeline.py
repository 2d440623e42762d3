"""End to end without a lab: a capture with an unauthorized write goes through the real
pipeline and detectors; the runner, plugged in as a sink, answers with the shipped playbooks
and a real HTTP server receives the notification."""

from __future__ import annotations

import struct
from pathlib import Path

from sentinel.config import Config
from sentinel.pipeline import Pipeline
from sentinel.respond.factory import runner_from_config
from tests.craft import Conversation, adu, write

from .conftest import body_json


def test_a_capture_turns_into_findings_and_playbook_actions(tmp_path: Path, http_server) -> None:
    config = Config.model_validate(
        {
            "observer": {"name": "sensor-1"},
            "sites": [
                {"name": "st-mary-hospital", "sector": "hospital", "networks": ["192.0.2.0/24"]}
            ],
            "assets": [
                {
                    "address": "192.0.2.20",
                    "role": "plc",
                    "allowed_masters": ["192.0.2.10"],
                    "allowed_function_codes": [3, 6],
                    "registers": [
                        {
                            "table": "holding",
                            "start": 0,
                            "end": 0,
                            "name": "temp_setpoint",
                            "writable": True,
                            "min": 180,
                            "max": 260,
                        }
                    ],
                }
            ],
            "playbooks": {
                "builtin": ["unauthorized-ot-write", "notify-soc"],
                "state_dir": str(tmp_path / "state"),
            },
            "actions": {"webhooks": {"soc": {"url": http_server.url, "format": "json"}}},
        }
    )
    conv = Conversation("192.0.2.66", "192.0.2.20", 40000, 502)
    pdu = bytes([6]) + struct.pack(">HH", 0, 999)
    conv.exchange(adu(1, 1, pdu), adu(1, 1, pdu))
    conv.close()
    capture = write(tmp_path / "write.pcap", conv.packets)
    emitted: list[dict] = []
    runner = runner_from_config(config, emit=emitted.append, approval_poll=None)
    result = Pipeline(config, tmp_path / "out", sinks=[runner]).run(capture)
    assert result.stats["findings"] >= 1
    records = runner.audit.read()
    by_playbook = {}
    for r in records:
        by_playbook.setdefault(r["playbook"]["id"], []).append(r)
    assert "unauthorized-ot-write" in by_playbook
    run = by_playbook["unauthorized-ot-write"][0]
    steps = {s["step"]: s["status"] for s in run["steps"]}
    assert steps["case"] == "ok" and steps["chat"] == "ok"
    assert steps["block-writer"] == "pending_approval"
    assert runner.approvals.list()[0].plan["params"]["address"] == "192.0.2.66"
    posted = [body_json(r) for r in http_server.requests]
    assert any(p["finding"]["source"]["ip"] == "192.0.2.66" for p in posted)
    assert all(p["finding"]["labels"]["sector"] == "hospital" for p in posted)
    assert emitted == []  # nothing failed
