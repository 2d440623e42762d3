"""Notifications reach real local endpoints: an HTTP server, an SMTP server with STARTTLS and
login, syslog over UDP and TCP. Each test asserts the exact bytes received."""

from __future__ import annotations

import email
import email.policy
import re

from sentinel.respond.settings import ActionSettings, EmailTarget, SyslogTarget, WebhookTarget

from .conftest import SMTP_PASSWORD, SMTP_USER, body_json, make_finding, playbook_from_text

WEBHOOK_PLAYBOOK = """
id: hook
name: hook
trigger: {severity: high}
steps:
  - id: post
    action: notify.webhook
    retries: 2
    retry_delay: 0.01
    with:
      target: soc
      title: "[{{ severity }}] {{ rule.name }}"
      text: "{{ source.ip }} -> {{ destination.ip }}: {{ message }}"
"""


def _hook(url: str, fmt: str, **extra) -> ActionSettings:
    return ActionSettings(webhooks={"soc": WebhookTarget(url=url, format=fmt, **extra)})


def test_webhook_json_carries_the_finding_as_data(harness, http_server) -> None:
    h = harness(
        [playbook_from_text(WEBHOOK_PLAYBOOK)],
        _hook(http_server.url, "json", headers={"Authorization": "Bearer tok-123"}),
    )
    doc = make_finding()
    h.runner.finding(doc)
    assert len(http_server.requests) == 1
    req = http_server.requests[0]
    assert req["path"] == "/hooks/secret-token"
    assert req["headers"]["Authorization"] == "Bearer tok-123"
    assert req["headers"]["Content-Type"] == "application/json; charset=utf-8"
    body = body_json(req)
    assert body["title"] == "[high] Modbus write of a value outside the safe limits"
    assert body["text"] == (
        "198.51.100.66 -> 198.51.100.20: write of 999 to temp_setpoint (holding 0), "
        "safe limits 180-260"
    )
    assert body["finding"] == doc
    assert body["playbook"] == "hook"
    record = h.audit_records()[0]
    assert record["playbook"]["status"] == "ok"
    assert record["steps"][0]["status"] == "ok"
    # The audit names the target, never its URL (a chat webhook's URL is its secret) or headers.
    text = h.audit.path.read_text()
    assert "secret-token" not in text and "tok-123" not in text


def test_webhook_slack_teams_mattermost_formats(harness, http_server) -> None:
    doc = make_finding()
    for fmt in ("slack", "teams", "mattermost"):
        http_server.requests.clear()
        h = harness([playbook_from_text(WEBHOOK_PLAYBOOK)], _hook(http_server.url, fmt))
        h.runner.finding(doc)
        body = body_json(http_server.requests[0])
        if fmt == "slack":
            assert body["text"].startswith("[high] Modbus write of a value outside")
            block = body["blocks"][0]
            assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
            assert block["text"]["text"].startswith("*[high] Modbus write")
        elif fmt == "teams":
            assert body["type"] == "message"
            att = body["attachments"][0]
            assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
            card = att["content"]
            assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
            assert card["body"][0]["color"] == "attention"
            # Markdown in values is escaped for Teams; the playbook's own text is not.
            assert card["body"][1]["text"].startswith(r"198\.51\.100\.66 -> 198\.51\.100\.20")
        else:
            assert body == {
                "text": "#### [high] Modbus write of a value outside the safe limits\n"
                r"198\.51\.100\.66 -> 198\.51\.100\.20: write of 999 to temp\_setpoint "
                r"\(holding 0\), safe limits 180\-260"
            }


def test_webhook_failure_is_retried_then_raises_its_own_finding(harness, http_server) -> None:
    http_server.status = 500
    h = harness([playbook_from_text(WEBHOOK_PLAYBOOK)], _hook(http_server.url, "json"))
    trigger = make_finding()
    h.runner.finding(trigger)
    assert len(http_server.requests) == 3  # one try and two retries
    step = h.audit_records()[0]["steps"][0]
    assert step["status"] == "failed" and step["attempts"] == 3
    assert step["error"] == "webhook 'soc' answered HTTP 500"
    # The failure is a finding of its own, handed to the sinks...
    assert len(h.emitted) == 1
    failure = h.emitted[0]
    assert failure["rule"]["id"] == "9000401"
    assert failure["event"]["dataset"] == "sentinel.respond"
    assert failure["sentinel"]["evidence"]["trigger_finding"] == trigger["event"]["id"]
    assert failure["sentinel"]["evidence"]["status"] == "failed"
    assert failure["source"]["ip"] == "198.51.100.66"
    assert failure["labels"] == {"site": "st-mary-hospital", "sector": "hospital"}
    # ... and goes through the playbooks again (severity medium: this one ignores it), without
    # a loop: answering a failure finding that fails raises nothing more.
    assert [r["trigger"]["rule.id"] for r in h.audit_records()] == ["9000106"]


def test_failure_finding_does_not_loop(harness, http_server) -> None:
    http_server.status = 503
    loops = WEBHOOK_PLAYBOOK.replace("severity: high", "severity: low").replace(
        "retries: 2", "retries: 0"
    )
    h = harness([playbook_from_text(loops)], _hook(http_server.url, "json"))
    h.runner.finding(make_finding())
    # the original run fails -> one failure finding -> it triggers the playbook again, which
    # fails too, and that raises no further finding.
    assert len(h.emitted) == 1
    assert [r["trigger"]["rule.id"] for r in h.audit_records()] == ["9000106", "9000401"]
    assert len(http_server.requests) == 2


def test_email_with_starttls_and_login(harness, smtp_server) -> None:
    actions = ActionSettings(
        email={
            "soc": EmailTarget(
                host=smtp_server.host,
                port=smtp_server.port,
                username=SMTP_USER,
                password=SMTP_PASSWORD,
                sender="sentinel@example.org",
                to=["soc@example.org", "oncall@example.org"],
                ca_certs=str(smtp_server.ca),
            )
        }
    )
    pb = playbook_from_text(
        """
id: mail
name: mail
trigger: {rules: ["9000*"]}
steps:
  - {id: mail, action: notify.email, with: {target: soc}}
"""
    )
    h = harness([pb], actions)
    doc = make_finding()
    h.runner.finding(doc)
    assert h.audit_records()[0]["steps"][0]["status"] == "ok", h.audit_records()
    assert smtp_server.logins == [SMTP_USER]
    (msg,) = smtp_server.messages
    assert msg["tls"] is True  # STARTTLS happened before the mail (and the password)
    assert msg["from"] == "sentinel@example.org"
    assert msg["to"] == ["soc@example.org", "oncall@example.org"]
    parsed = email.message_from_bytes(msg["data"], policy=email.policy.default)
    assert parsed["Subject"] == "[Sentinel high] Modbus write of a value outside the safe limits"
    body = parsed.get_content()
    assert "198.51.100.66 -> 198.51.100.20:502 at st-mary-hospital (hospital)" in body
    assert doc["event"]["id"] in body
    assert SMTP_PASSWORD not in h.audit.path.read_text()


def test_email_wrong_password_fails_cleanly(harness, smtp_server) -> None:
    actions = ActionSettings(
        email={
            "soc": EmailTarget(
                host=smtp_server.host,
                port=smtp_server.port,
                username=SMTP_USER,
                password="wrong-password-xyz",
                sender="sentinel@example.org",
                to=["soc@example.org"],
                ca_certs=str(smtp_server.ca),
            )
        }
    )
    pb = playbook_from_text(
        "id: m\nname: m\ntrigger: {}\nsteps:\n  - {id: m, action: notify.email, "
        "with: {target: soc}}\n"
    )
    h = harness([pb], actions)
    h.runner.finding(make_finding())
    step = h.audit_records()[0]["steps"][0]
    assert step["status"] == "failed"
    assert step["error"] == "mail server 'soc' refused the login (535)"
    assert "wrong-password-xyz" not in h.audit.path.read_text()
    assert smtp_server.messages == []
    assert h.emitted[0]["rule"]["id"] == "9000401"


def test_email_refuses_a_server_whose_certificate_it_cannot_verify(harness, smtp_server) -> None:
    actions = ActionSettings(
        email={
            "soc": EmailTarget(
                host=smtp_server.host,
                port=smtp_server.port,
                sender="s@example.org",
                to=["soc@example.org"],
            )
        }
    )  # no ca_certs: the self-signed certificate is not trusted
    pb = playbook_from_text(
        "id: m\nname: m\ntrigger: {}\nsteps:\n  - {id: m, action: notify.email, "
        "with: {target: soc}}\n"
    )
    h = harness([pb], actions)
    h.runner.finding(make_finding())
    step = h.audit_records()[0]["steps"][0]
    assert step["status"] == "failed"
    assert step["error"].startswith("TLS with mail server 'soc' failed")
    assert smtp_server.messages == []


SYSLOG_PLAYBOOK = """
id: siem
name: siem
trigger: {}
steps:
  - {id: log, action: notify.syslog, with: {target: siem}}
"""


def test_syslog_rfc5424_over_udp(harness, syslog_udp) -> None:
    actions = ActionSettings(
        syslog={"siem": SyslogTarget(host="127.0.0.1", port=syslog_udp.port, app_name="sentinel")}
    )
    h = harness([playbook_from_text(SYSLOG_PLAYBOOK)], actions)
    doc = make_finding()
    h.runner.finding(doc)
    assert syslog_udp.event.wait(5)
    line = syslog_udp.messages[0].decode("utf-8")
    run_id = h.audit_records()[0]["playbook"]["run_id"]
    m = re.match(
        r"^<(\d+)>1 (\S+) sensor-1 sentinel (\d+) finding \[sentinel@32473 (.*)\] \ufeff(.*)$",
        line,
    )
    assert m, line
    assert m.group(1) == str(4 * 8 + 3)  # facility 4 (security), severity 3 (error) for high
    assert m.group(4) == (
        f'rule_id="9000106" severity="high" playbook="siem" run_id="{run_id}" '
        f'src="198.51.100.66" dst="198.51.100.20" event_id="{doc["event"]["id"]}"'
    )
    assert m.group(5) == (
        "Modbus write of a value outside the safe limits: write of 999 to temp_setpoint "
        "(holding 0), safe limits 180-260"
    )


def test_syslog_cef_over_tcp(harness, syslog_tcp) -> None:
    actions = ActionSettings(
        syslog={
            "siem": SyslogTarget(
                host="127.0.0.1", port=syslog_tcp.port, protocol="tcp", format="cef"
            )
        }
    )
    h = harness([playbook_from_text(SYSLOG_PLAYBOOK)], actions)
    doc = make_finding(name="Write | with pipe", message="a=b \\ c")
    h.runner.finding(doc)
    assert syslog_tcp.event.wait(5)
    line = syslog_tcp.messages[0].decode("utf-8")
    header, _, cef = line.partition("CEF - ")
    assert header.startswith("<35>1 ") and " sensor-1 sentinel " in header
    fields = re.split(r"(?<!\\)\|", cef, maxsplit=7)  # CEF: pipes escaped in the header
    assert fields[:5] == ["CEF:0", "Sentinel", "Sentinel OT", fields[3], "9000106"]
    assert fields[5] == r"Write \| with pipe"
    assert fields[6] == "8"  # CEF severity for high
    ext = fields[7]
    assert "src=198.51.100.66 spt=40000 dst=198.51.100.20 dpt=502" in ext
    assert f"externalId={doc['event']['id']} cat=T0836" in ext
    assert "cs1Label=playbook cs1=siem cs2Label=run_id" in ext
    assert ext.endswith(r"msg=Write | with pipe: a\=b \\ c")
