"""Loading playbooks (every problem, located), the shipped ones, `playbook check` and `test`,
trigger matching, throttling and de-duplication."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel.respond.model import Throttle, Trigger, load_playbooks, why_not
from sentinel.respond.runner import Throttler

from .conftest import make_finding, playbook_from_text, run_sentinel

BROKEN = """\
id: Bad Id
name: broken
trigger:
  severity: hgih
  rules: ["9000*"]
steps:
  - id: one
    action: notify.webhook
    with:
      target: soc
      text: "{{ rule.name "
  - id: two
    action: notify.pager
  - id: three
    action: firewall.block
    approval: false
  - id: four
    action: case.open
    with: {title: ok, colour: red}
"""


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = load_playbooks([path])
    got = sorted(str(p) for p in result.problems)
    p = str(path)
    assert got == sorted(
        [
            f"{p}:1:5: id: String should match pattern '^[a-z0-9][a-z0-9_-]{{0,63}}$'",
            f"{p}:4:13: trigger.severity: Input should be 'low', 'medium', 'high' or 'critical'",
            f"{p}:13:13: steps.1.action: unknown action 'notify.pager' (known: asset.tag, "
            "capture.snapshot, case.open, firewall.block, notify.email, notify.syslog, "
            "notify.webhook, scan.device)",
            f"{p}:11:13: steps.0.with.text: template line 1: unexpected end of template, "
            "expected 'end of print statement'.",
            f"{p}:16:15: steps.2.approval: firewall.block changes the network and always needs "
            "an operator's approval",
            f"{p}:19:23: steps.3.with.colour: Extra inputs are not permitted",
        ]
    )
    assert result.playbooks == []


def test_yaml_syntax_and_duplicate_keys(tmp_path: Path) -> None:
    bad = tmp_path / "syntax.yaml"
    bad.write_text("id: x\nname: [unclosed\n")
    dup = tmp_path / "dup.yaml"
    dup.write_text(
        "id: dup\nname: a\nname: b\ntrigger: {}\nsteps:\n  - {id: s, action: case.open}\n"
    )
    result = load_playbooks([bad, dup])
    got = [str(p) for p in result.problems]
    assert got[0].startswith(f"{bad}:3:1: YAML syntax: ")
    assert got[1] == f"{dup}:3:1: name: duplicate key"


def test_duplicate_ids_and_unknown_shipped(tmp_path: Path) -> None:
    for n in (1, 2):
        (tmp_path / f"p{n}.yaml").write_text(
            "id: same\nname: x\ntrigger: {}\nsteps:\n  - {id: s, action: case.open}\n"
        )
    result = load_playbooks([tmp_path], builtin=["no-such"])
    got = [str(p) for p in result.problems]
    assert got[0].startswith("no shipped playbook 'no-such' (shipped: flood-containment, ")
    assert got[1] == f"{tmp_path / 'p2.yaml'}:1:5: id: playbook id 'same' is also used by " + str(
        tmp_path / "p1.yaml"
    )
    assert [lp.playbook.id for lp in result.playbooks] == ["same"]


def test_shipped_playbooks_load_and_cover_the_issue() -> None:
    result = load_playbooks(builtin="all")
    assert result.problems == []
    ids = {lp.playbook.id for lp in result.playbooks}
    assert ids == {"notify-soc", "unauthorized-ot-write", "recon-escalation", "flood-containment"}


def test_check_command(tmp_path: Path) -> None:
    out = run_sentinel("playbook", "check")
    assert out.returncode == 0 and out.stdout.strip() == "4 playbook(s) OK"
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    out = run_sentinel("playbook", "check", str(path), "playbooks/")
    assert out.returncode == 2
    lines = out.stdout.splitlines()
    assert len(lines) == 6 and all(line.startswith(f"{path}:") for line in lines)
    assert out.stderr.strip() == "6 problem(s) in 5 file(s)"


def test_check_against_the_config_finds_missing_targets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("actions:\n  webhooks:\n    chat: {url: 'http://127.0.0.1:9/x'}\n")
    pb = tmp_path / "p.yaml"
    pb.write_text(
        "id: p\nname: p\ntrigger: {}\nsteps:\n"
        "  - id: a\n    action: notify.webhook\n    with: {target: soc}\n"
        "  - id: b\n    action: notify.webhook\n    if_configured: true\n    with: {target: x}\n"
    )
    out = run_sentinel("playbook", "check", str(pb), "--config", str(cfg))
    assert out.returncode == 2
    assert out.stdout.strip() == (
        f"{pb}:7:20: steps.0.with.target: no webhooks target 'soc' in the config's "
        "actions.webhooks (defined: chat)"
    )


def test_config_errors_in_the_sections_are_located(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "actions:\n  webhooks:\n    soc: {url: 'ftp://x', format: irc}\n"
        "service:\n  metrics: {host: 0.0.0.0}\n"
    )
    out = run_sentinel("playbook", "pending", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"sentinel: config: {cfg}:3:16: actions.webhooks.soc.url: not an http(s) URL",
        f"sentinel: config: {cfg}:3:35: actions.webhooks.soc.format: Input should be 'json', "
        "'slack', 'teams' or 'mattermost'",
        f"sentinel: config: {cfg}:5:19: service.metrics.host: the metrics endpoint listens on "
        "loopback only (127.0.0.0/8, ::1)",
    ]


def test_test_command_shows_what_would_run(tmp_path: Path) -> None:
    findings = tmp_path / "f.jsonl"
    write = make_finding(src="203.0.113.9")
    recon = make_finding(rule_id="9000201", name="Modbus function code sweep", severity="medium")
    findings.write_text(json.dumps(write) + "\n" + json.dumps(recon) + "\n")
    out = run_sentinel("playbook", "test", "unauthorized-ot-write", "--finding", str(findings))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (
        f"finding {write['event']['id']} (rule 9000106): playbook unauthorized-ot-write would run:"
    )
    assert lines[1].startswith("  1. case (case.open): open or update case ")
    assert lines[2] == (
        "  2. evidence (capture.snapshot): pcap of 203.0.113.9 <-> 198.51.100.20 "
        "(60 s before to 5 s after) -> " + lines[2].rsplit("-> ", 1)[1]
    )
    assert lines[2].endswith("-evidence.pcap")
    # The asset's id follows the Elasticsearch sink's: <site>/<ip> from the finding's labels.
    # 203.0.113.9 is in no site network: its asset id is the bare address (as the ES sink's).
    assert lines[3] == "  3. tag-writer (asset.tag): tag asset 203.0.113.9 with unauthorized-writer"
    assert lines[4] == "  4. chat (notify.webhook): skipped: no webhooks target 'soc' configured"
    assert lines[5].startswith("  5. block-writer (firewall.block): block 203.0.113.9: ")
    assert lines[5].endswith("'{' 203.0.113.9 timeout 3600s '}' [needs approval]")
    assert lines[6] == (
        f"finding {recon['event']['id']} (rule 9000201): no match: rule.id '9000201' is not "
        "in ['9000101', '9000102', '9000104', '9000105', '9000106']"
    )


def test_test_command_with_a_bad_finding_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    out = run_sentinel("playbook", "test", "notify-soc", "--finding", str(bad))
    assert out.returncode == 2
    assert out.stderr.startswith(f"sentinel: {bad}:1: not JSON: ")


# -- matching
@pytest.mark.parametrize(
    ("trigger", "changes", "matches"),
    [
        ({}, {}, True),
        ({"rules": ["90001*"]}, {}, True),
        ({"rules": ["9000105"]}, {}, False),
        ({"exclude_rules": ["9000106"]}, {}, False),
        ({"severity": "high"}, {}, True),
        ({"severity": "critical"}, {}, False),
        ({"techniques": ["T083*"]}, {}, True),
        ({"techniques": ["T0855"]}, {}, False),
        ({"detectors": ["modbus_policy"]}, {}, True),
        ({"sites": ["st-mary-*"]}, {}, True),
        ({"sectors": ["energy"]}, {}, False),
        ({"sectors": ["hospital"]}, {}, True),
        ({"min_score": 0.8}, {}, False),
        ({"min_score": 0.8}, {"score": 0.93}, True),
        ({"min_score": 0.95}, {"score": 0.93}, False),
        ({"datasets": ["sentinel.modbus"]}, {}, True),
    ],
)
def test_trigger_matching(trigger, changes, matches) -> None:
    doc = make_finding()
    if "score" in changes:
        doc["sentinel"]["evidence"]["score"] = changes["score"]
    assert (why_not(Trigger(**trigger), doc) is None) is matches


def test_matching_survives_odd_documents() -> None:
    for doc in ({}, {"rule": "x"}, {"event": {"severity": "high"}}, {"sentinel": []}):
        assert why_not(Trigger(severity="low", min_score=0.1), doc) is not None


def test_throttle_and_dedup_use_finding_time() -> None:
    t = Throttler()
    th = Throttle(key=["source.ip"], window=60, max_runs=2)
    a1 = make_finding(ts=1000.0, uid="a1")
    assert t.admit("p", th, a1, 1000.0) is None
    assert t.admit("p", th, a1, 1000.0) == f"finding {a1['event']['id']} was answered already"
    assert t.admit("p", th, make_finding(ts=1010, uid="a2"), 1010.0) is None
    assert t.admit("p", th, make_finding(ts=1020, uid="a3"), 1020.0).startswith("throttled: 2")
    other = make_finding(ts=1020, uid="b", src="203.0.113.1")
    assert t.admit("p", th, other, 1020.0) is None  # another key
    assert t.admit("q", th, make_finding(ts=1020, uid="a3"), 1020.0) is None  # another playbook
    assert t.admit("p", th, make_finding(ts=1061, uid="a4"), 1061.0) is None  # window moved


def test_runner_throttles_a_burst(harness) -> None:
    pb = playbook_from_text(
        "id: p\nname: p\ntrigger: {}\nthrottle: {key: [rule.id], window: 300}\nsteps:\n"
        "  - {id: c, action: case.open}\n"
    )
    h = harness([pb])
    for i in range(50):
        h.runner.finding(make_finding(ts=1000.0 + i, uid=f"u{i}"))
    assert len(h.audit_records()) == 1
    assert h.runner.skipped == {"p": 49}


def test_queued_runner_finishes_work_on_close(harness, http_server) -> None:
    from sentinel.respond.settings import ActionSettings, WebhookTarget

    pb = playbook_from_text(
        "id: p\nname: p\ntrigger: {}\nsteps:\n  - {id: c, action: notify.webhook, "
        "with: {target: soc}}\n"
    )
    h = harness(
        [pb],
        ActionSettings(webhooks={"soc": WebhookTarget(url=http_server.url)}),
        synchronous=False,
    )
    for i in range(20):
        h.runner.finding(make_finding(ts=1000.0 + i, uid=f"u{i}"))
    h.runner.close()
    assert len(http_server.requests) == 20
    assert len(h.audit_records()) == 20
