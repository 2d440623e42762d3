"""A step's timeout against a real slow webhook, and the per-playbook ``dry_run`` flag.

The webhook is the local HTTP server of conftest (``delay`` holds each answer back).
"""

from __future__ import annotations

from sentinel.respond.runner import ACTION_FAILED_RULE
from sentinel.respond.settings import ActionSettings, WebhookTarget

from .conftest import body_json, make_finding, playbook_from_text

SLOW_PLAYBOOK = """
id: slow
name: slow
trigger: {severity: high}
steps:
  - id: post
    action: notify.webhook
    timeout: 0.3
    with: {target: soc}
"""


def _hook(url: str) -> ActionSettings:
    # The HTTP client would wait 10 s: the step's own timeout (0.3 s) is what ends it.
    return ActionSettings(webhooks={"soc": WebhookTarget(url=url, format="json", timeout=10)})


def test_a_slow_webhook_times_out_and_raises_a_failure_finding(harness, http_server) -> None:
    http_server.delay = 3.0
    h = harness([playbook_from_text(SLOW_PLAYBOOK)], _hook(http_server.url))
    doc = make_finding()
    record = h.runner.run(h.runner.playbooks[0], doc)
    (step,) = record.steps
    assert step.status == "timeout" and step.attempts == 1
    assert step.error == "no result within 0.3 s"
    assert record.status == "failed"
    assert len(http_server.requests) == 1  # it was sent; no answer came in time
    (audit,) = h.audit_records()
    assert audit["playbook"]["status"] == "failed"
    assert audit["steps"][0]["status"] == "timeout"
    (failure,) = h.emitted
    assert failure["rule"]["id"] == ACTION_FAILED_RULE
    assert failure["event"]["dataset"] == "sentinel.respond"
    assert "step post (notify.webhook) timeout" in failure["message"]
    assert failure["sentinel"]["respond"]["run_id"] == record.run_id
    assert failure["sentinel"]["severity_label"] == "medium"  # a notification changes nothing


def test_the_per_playbook_dry_run_flag(harness, http_server) -> None:
    dry = """
id: dry
name: dry
dry_run: true
trigger: {severity: high}
steps:
  - {id: post, action: notify.webhook, with: {target: soc, title: dry}}
"""
    live = dry.replace("id: dry\n", "id: live\n").replace("dry_run: true\n", "")
    live = live.replace("title: dry", "title: live")
    h = harness([playbook_from_text(dry), playbook_from_text(live)], _hook(http_server.url))
    assert h.runner.settings.dry_run is False  # not the config-wide flag
    h.runner.finding(make_finding())
    records = {r["playbook"]["id"]: r for r in h.audit_records()}
    assert records["dry"]["playbook"]["dry_run"] is True
    assert records["dry"]["playbook"]["status"] == "dry_run"
    assert records["dry"]["steps"][0]["status"] == "dry_run"
    assert records["live"]["playbook"]["dry_run"] is False
    assert records["live"]["steps"][0]["status"] == "ok"
    # Only the playbook without the flag reached the webhook.
    assert [body_json(r)["title"] for r in http_server.requests] == ["live"]
    assert h.emitted == []
