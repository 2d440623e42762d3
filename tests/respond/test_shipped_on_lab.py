"""The shipped flood-containment and recon-escalation playbooks on real findings: a short lab
capture with a SYN flood, a Modbus request flood and two reconnaissance scenarios
(``sentinel lab synth``), analysed with the hospital site's config, then
``sentinel playbook test`` (nothing is sent: it shows what would run) on every finding.

In so short a capture the Modbus request flood falls in the detectors' learning window
(``learning_seconds``, 600 s: it raises the baseline instead of rule 9000114); the SYN flood
gives the connection-flood finding (9000117, T0814) the playbook answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import run_sentinel

REPO = Path(__file__).parents[2]
SCENARIOS = "syn-flood,modbus-flood,recon-address-sweep,recon-function-code-sweep"


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("lab")
    synth = run_sentinel(
        *("lab", "synth", "--site", "hospital", "--minutes", "3", "--seed", "1"),
        *("--scenarios", SCENARIOS, "--out", str(base / "capture")),
    )
    assert synth.returncode == 0, synth.stderr
    out = base / "out"
    analyzed = run_sentinel(
        *("analyze", str(base / "capture" / "capture.pcap"), "--out", str(out)),
        *("--config", str(REPO / "lab" / "sites" / "hospital.yaml")),
    )
    assert analyzed.returncode == 0, analyzed.stderr
    config = base / "sentinel.yaml"  # a SOC webhook, so the chat steps are planned too
    config.write_text("actions:\n  webhooks:\n    soc: {url: 'http://127.0.0.1:9/hook'}\n")
    labels = [json.loads(line) for line in (base / "capture" / "labels.jsonl").open()]
    findings = [json.loads(line) for line in (out / "findings.jsonl").open()]
    return {"findings": out / "findings.jsonl", "by_id": {f["event"]["id"]: f for f in findings},
            "labels": labels, "config": config}  # fmt: skip


def _plans(lab_run: dict[str, Any], playbook: str) -> list[dict[str, Any]]:
    got = run_sentinel(
        *("playbook", "test", playbook, "--finding", str(lab_run["findings"])),
        *("--config", str(lab_run["config"]), "--json"),
    )
    assert got.returncode == 0, got.stderr
    return [json.loads(line) for line in got.stdout.splitlines()]


def _attacker(lab_run: dict[str, Any]) -> str:
    (attacker,) = {label["attacker"] for label in lab_run["labels"]}
    return str(attacker)


def test_flood_containment_answers_the_flood_findings(lab_run: dict[str, Any]) -> None:
    plans = _plans(lab_run, "flood-containment")
    assert len(plans) == len(lab_run["by_id"])
    matched = [p for p in plans if p["matches"]]
    floods = {
        i
        for i, f in lab_run["by_id"].items()
        if "T0814" in f["threat"]["technique"]["id"]
        and f["sentinel"]["severity_label"] in ("medium", "high", "critical")
    }
    assert floods, "the capture gave no denial-of-service finding"
    assert {p["finding"] for p in matched} == floods
    rules = {lab_run["by_id"][p["finding"]]["rule"]["id"] for p in matched}
    assert "9000117" in rules  # the SYN flood: Modbus connection flood
    for plan in matched:
        steps = {s["step"]: s for s in plan["steps"]}
        assert [s["status"] for s in plan["steps"]] == ["dry_run"] * 4
        assert steps["evidence"]["action"] == "capture.snapshot"
        assert steps["case"]["plan"]["doc"]["case"]["title"].startswith("Flood against")
        block = steps["contain"]
        assert block["detail"] == {"needs_approval": True}
        assert block["plan"]["address"] == _attacker(lab_run)
        assert _attacker(lab_run) in block["plan"]["argv"]


def test_recon_escalation_answers_the_reconnaissance_findings(lab_run: dict[str, Any]) -> None:
    plans = _plans(lab_run, "recon-escalation")
    matched = [p for p in plans if p["matches"]]
    recon = {i for i, f in lab_run["by_id"].items() if f["rule"]["id"].startswith("90002")}
    assert {p["finding"] for p in matched} == recon
    rules = {lab_run["by_id"][i]["rule"]["id"] for i in recon}
    assert {"9000201", "9000203"} <= rules  # function code sweep, address sweep
    for plan in matched:
        steps = {s["step"]: s for s in plan["steps"]}
        assert steps["case"]["status"] == "dry_run"
        assert steps["case"]["plan"]["doc"]["case"]["title"] == (
            f"OT reconnaissance from {_attacker(lab_run)}"
        )
        assert steps["tag-source"]["status"] == "dry_run"
        assert steps["chat"]["status"] == "dry_run"
        assert steps["reinventory"]["status"] == "skipped"  # no "inventory" job configured
