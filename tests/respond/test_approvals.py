"""Actions that change the network wait for a person: pending, approve (CLI), carried out by
the service, expire. ``nft`` is never run: a stand-in script records the argument list it
was given, through a real subprocess (no shell)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sentinel.config import load_config
from sentinel.respond.factory import runner_from_config

from .conftest import body_json, make_finding, run_sentinel

CONFIG = """
observer: {{name: sensor-1}}
sites:
  - {{name: st-mary-hospital, sector: hospital, networks: [198.51.100.0/26]}}
assets:
  - {{address: 198.51.100.20, name: theatre1-ahu, role: plc, allowed_masters: [198.51.100.10]}}
playbooks:
  builtin: [unauthorized-ot-write]
  state_dir: {state}
  approval_ttl: {ttl}
actions:
  allow_network_changes: {allow}
  firewall: {{nft: {nft}, never_block: [192.0.2.0/24]}}
  webhooks:
    soc: {{url: "{url}", format: mattermost}}
"""


@pytest.fixture
def site(tmp_path: Path, http_server):
    def make(allow: bool = True, ttl: float = 3600) -> tuple[Path, Path]:
        nft = tmp_path / "fake-nft"
        args = tmp_path / "nft-args"
        nft.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {args}\n")
        nft.chmod(0o755)
        path = tmp_path / "sentinel.yaml"
        path.write_text(
            CONFIG.format(
                state=tmp_path / "state",
                ttl=ttl,
                allow=str(allow).lower(),
                nft=nft,
                url=http_server.url,
            )
        )
        return path, args

    return make


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_ES_")}
    env["HOME"] = str(tmp_path)
    return env


def test_block_waits_for_approval_then_runs_nft(site, tmp_path, http_server) -> None:
    cfg, args = site(allow=True)
    config = load_config(cfg)
    runner = runner_from_config(config, synchronous=True, approval_poll=None)
    try:
        doc = make_finding(src="203.0.113.50", dst="198.51.100.20")
        runner.finding(doc)
        record = runner.records[-1]
        status = {s.step: s.status for s in record.steps}
        assert status == {
            "case": "ok",
            "evidence": "skipped",  # no packet ring outside `sentinel run`
            "tag-writer": "ok",
            "chat": "ok",
            "block-writer": "pending_approval",
        }
        # The chat message tells how to approve.
        text = body_json(http_server.requests[0])["text"]
        assert f"sentinel playbook approve {record.run_id}" in text.replace("\\", "")
        assert not args.exists()  # nothing ran yet

        out = run_sentinel("playbook", "pending", "--config", str(cfg), env=_env(tmp_path))
        assert out.returncode == 0, out.stderr
        assert record.run_id in out.stdout and "block-writer" in out.stdout
        assert "203.0.113.50 timeout 3600s" in out.stdout

        out = run_sentinel(
            "playbook",
            "approve",
            record.run_id,
            "--by",
            "alice",
            "--config",
            str(cfg),
            env=_env(tmp_path),
        )
        assert out.returncode == 0, out.stderr
        assert f"approved {record.run_id} block-writer by alice" in out.stdout

        done = runner.process_approvals()
        assert [(e.step_id, o.status) for e, o in done] == [("block-writer", "ok")]
        assert args.read_text().splitlines() == [
            "add",
            "element",
            "inet",
            "sentinel",
            "blocked4",
            "{",
            "203.0.113.50",
            "timeout",
            "3600s",
            "}",
        ]
        entry = runner.approvals.get(record.run_id, "block-writer")
        assert entry.status == "done" and entry.approved_by == "alice"

        audit = runner.audit.read()
        assert [r["audit"]["kind"] for r in audit] == ["run", "approval"]
        assert audit[1]["approval"]["approved_by"] == "alice"
        assert audit[1]["steps"][0]["detail"]["applied"] is True
        # approving twice is refused
        out = run_sentinel(
            "playbook", "approve", record.run_id, "--config", str(cfg), env=_env(tmp_path)
        )
        assert out.returncode == 2
        assert "nothing to approve" in out.stderr and "done (approved by alice)" in out.stderr
    finally:
        runner.close()


def test_without_allow_network_changes_an_approved_block_stays_a_proposal(site) -> None:
    cfg, args = site(allow=False)
    runner = runner_from_config(load_config(cfg), synchronous=True, approval_poll=None)
    try:
        runner.finding(make_finding(src="203.0.113.51"))
        run_id = runner.records[-1].run_id
        runner.approvals.approve(run_id, "bob")
        ((_entry, outcome),) = runner.process_approvals()
        assert outcome.status == "proposed"
        assert outcome.detail["proposal"].endswith(
            "add element inet sentinel blocked4 '{' 203.0.113.51 timeout 3600s '}'"
        )
        assert not args.exists()
        assert runner.approvals.get(run_id, "block-writer").status == "proposed"
    finally:
        runner.close()


@pytest.mark.parametrize(
    "source", ["198.51.100.10", "::ffff:198.51.100.10", "198.51.100.20", "192.0.2.77"]
)
def test_protected_addresses_are_never_blocked(site, source) -> None:
    cfg, _args = site(allow=True)
    runner = runner_from_config(load_config(cfg), synchronous=True, approval_poll=None)
    try:
        runner.finding(make_finding(src=source))
        step = {s.step: s for s in runner.records[-1].steps}["block-writer"]
        assert step.status == "refused"
        assert "is protected" in step.error
        assert runner.approvals.list(None) == []
    finally:
        runner.close()


def test_unapproved_actions_expire(site) -> None:
    cfg, args = site(allow=True, ttl=0.01)
    runner = runner_from_config(load_config(cfg), synchronous=True, approval_poll=None)
    try:
        runner.finding(make_finding(src="203.0.113.52"))
        run_id = runner.records[-1].run_id
        time.sleep(0.05)
        assert runner.process_approvals() == []
        assert runner.approvals.get(run_id, "block-writer").status == "expired"
        kinds = [(r["audit"]["kind"], r["playbook"]["status"]) for r in runner.audit.read()]
        assert kinds == [("run", "pending_approval"), ("approval", "expired")]
        with pytest.raises(Exception, match="expired"):
            runner.approvals.approve(run_id, "carol")
        assert not args.exists()
    finally:
        runner.close()


def test_approve_unknown_run_is_one_clear_line(site, tmp_path) -> None:
    cfg, _ = site()
    out = run_sentinel("playbook", "approve", "nope", "--config", str(cfg), env=_env(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip() == "sentinel: nothing to approve: no pending action for run 'nope'"


def test_dry_run_changes_nothing(site, tmp_path, http_server) -> None:
    cfg, _args = site(allow=True)
    text = cfg.read_text().replace("  approval_ttl:", "  dry_run: true\n  approval_ttl:")
    cfg.write_text(text)
    runner = runner_from_config(load_config(cfg), synchronous=True, approval_poll=None)
    try:
        runner.finding(make_finding(src="203.0.113.53"))
        record = runner.audit.read()[0]
        assert record["playbook"]["dry_run"] is True
        statuses = {s["step"]: s["status"] for s in record["steps"]}
        assert statuses["block-writer"] == "dry_run" and statuses["chat"] == "dry_run"
        assert http_server.requests == []
        assert runner.approvals.list(None) == []
        assert not (tmp_path / "state" / "documents").exists()
        plan = {s["step"]: s["plan"] for s in record["steps"]}["block-writer"]
        assert plan["argv"][-5:] == ["{", "203.0.113.53", "timeout", "3600s", "}"]
        assert json.dumps(record).count("secret-token") == 0
    finally:
        runner.close()
