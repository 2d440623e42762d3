"""Notification actions: ``notify.webhook``, ``notify.email``, ``notify.syslog``.

Where a notification goes is configured (``actions.webhooks|email|syslog``) and named by the
step's ``target``; the plan (what ``playbook test`` shows and the audit records) names the
target, never its URL, which for chat webhooks is itself a secret.

- **Webhook formats.** ``json``: ``{"text", "title", "playbook", "run_id", "finding"}`` (the
  finding as data) or the step's own ``body`` (a tree whose strings are templates). ``slack``:
  ``text`` plus one ``mrkdwn`` section block, values escaped for Slack (``&<>``), so a finding
  cannot produce ``<!channel>``. ``mattermost``: ``{"text"}`` in Markdown, values escaped and
  ``@mentions`` broken. ``teams``: a message with one Adaptive Card 1.4 attachment (what
  Teams' Workflows webhooks take), values escaped for Markdown.
- **Email.** SMTP submission with STARTTLS (or implicit TLS, RFC 8314), certificate checked
  against the system store or ``ca_certs``; a password is only ever sent over TLS.
- **Syslog.** RFC 5424 messages, or CEF (ArcSight) as the message of an RFC 5424 header; over
  UDP (RFC 5426), TCP or TLS (RFC 6587 octet counting / RFC 5425). Structured data uses the
  documentation enterprise number 32473 (RFC 5612) until Sentinel has its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from sentinel import __version__
from sentinel.respond import template
from sentinel.respond.actions import (
    Action,
    ActionError,
    Options,
    Plan,
    Services,
    StepContext,
    dig,
    register,
)
from sentinel.respond.settings import EmailTarget, SyslogTarget, WebhookTarget

DEFAULT_TITLE = "[{{ severity }}] {{ rule.name }}"
DEFAULT_TEXT = (
    "{{ message }} (rule {{ rule.id }}, {{ threat.technique.id[0] }} "
    "{{ threat.technique.name[0] }}) {{ source.ip }} -> {{ destination.ip }}:"
    "{{ destination.port }} at {{ labels.site }} ({{ labels.sector }}), {{ timestamp }}"
)
MAX_SYSLOG = 8192
SD_ID = "sentinel@32473"
_SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5}
_CEF_SEVERITY = {"critical": 10, "high": 8, "medium": 5, "low": 3}
_THEME = {"critical": "attention", "high": "attention", "medium": "warning", "low": "default"}


def _ssl_context(ca_certs: str | None, verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_certs)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _target(settings_map: dict[str, Any], name: str, kind: str) -> Any:
    target = settings_map.get(name)
    if target is None:
        raise ActionError(f"no {kind} target {name!r} in the config")
    return target


# -- webhook
class WebhookOptions(Options):
    target: str
    title: str = DEFAULT_TITLE
    text: str = DEFAULT_TEXT
    body: dict[str, Any] | None = None  # json format only: the whole body, strings templated


@register
class Webhook(Action):
    id = "notify.webhook"
    Options = WebhookOptions
    templates = ("title", "text", "body")
    targets = "webhooks"
    options: WebhookOptions

    def plan(self, ctx: StepContext) -> Plan:
        o = self.options
        target: WebhookTarget = _target(ctx.services.settings.webhooks, o.target, "webhook")
        fmt = target.format
        if fmt == "slack":
            text = ctx.render(o.text, "slack")
            title = ctx.render(o.title, "slack")
            payload: dict[str, Any] = {
                "text": f"{title}: {text}",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{text}"}}
                ],
            }
        elif fmt == "mattermost":
            title = ctx.render(o.title, "markdown")
            text = ctx.render(o.text, "markdown")
            payload = {"text": f"#### {title}\n{text}"}
        elif fmt == "teams":
            title = ctx.render(o.title, "markdown")
            text = ctx.render(o.text, "markdown")
            severity = str(ctx.variables.get("severity") or "")
            card = {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {
                        "type": "TextBlock",
                        "text": title,
                        "weight": "Bolder",
                        "size": "Medium",
                        "wrap": True,
                        "color": _THEME.get(severity, "default"),
                    },
                    {"type": "TextBlock", "text": text, "wrap": True},
                ],
            }
            payload = {
                "type": "message",
                "attachments": [
                    {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
                ],
            }
        elif o.body is not None:
            payload = ctx.render_tree(o.body)
        else:
            payload = {
                "title": ctx.render(o.title),
                "text": ctx.render(o.text),
                "playbook": ctx.playbook.id,
                "run_id": ctx.run_id,
                "finding": ctx.finding,
            }
        return Plan(
            self.id,
            f"POST to webhook {o.target!r} ({fmt})",
            {"target": o.target, "format": fmt, "payload": payload},
        )

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        name = params["target"]
        target: WebhookTarget = _target(services.settings.webhooks, name, "webhook")
        body = json.dumps(params["payload"], ensure_ascii=False, default=str).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"sentinel/{__version__}",
        }
        headers.update({k: v.get_secret_value() for k, v in target.headers.items()})
        request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
        context = None
        if target.url.startswith("https"):
            context = _ssl_context(target.ca_certs, target.verify)
        try:
            with urllib.request.urlopen(request, timeout=target.timeout, context=context) as resp:
                status = resp.status
                resp.read(4096)
        except urllib.error.HTTPError as exc:
            raise ActionError(f"webhook {name!r} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ActionError(f"webhook {name!r} unreachable: {reason}") from None
        return {"http_status": status, "bytes": len(body)}


# -- email
class EmailOptions(Options):
    target: str
    subject: str = "[Sentinel {{ severity }}] {{ rule.name }}"
    body: str = (
        DEFAULT_TEXT + "\n\nFinding {{ event.id }}, playbook {{ playbook.id }}, run {{ run_id }}."
    )


@register
class Email(Action):
    id = "notify.email"
    Options = EmailOptions
    templates = ("subject", "body")
    targets = "email"
    options: EmailOptions

    def plan(self, ctx: StepContext) -> Plan:
        o = self.options
        target: EmailTarget = _target(ctx.services.settings.email, o.target, "email")
        subject = template.clean(ctx.render(o.subject), 200)
        body = ctx.render(o.body)
        return Plan(
            self.id,
            f"mail {subject!r} to {', '.join(target.to)} via {o.target!r}",
            {
                "target": o.target,
                "to": list(target.to),
                "subject": subject,
                "body": body,
                "run_id": ctx.run_id,
            },
        )

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        name = params["target"]
        t: EmailTarget = _target(services.settings.email, name, "email")
        msg = EmailMessage()
        msg["From"] = t.sender
        msg["To"] = ", ".join(t.to)
        msg["Subject"] = template.clean(params["subject"], 200)
        msg["X-Sentinel-Run"] = template.clean(params.get("run_id", ""), 64)
        msg.set_content(params["body"])
        try:
            if t.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    t.host, t.port, timeout=t.timeout, context=_ssl_context(t.ca_certs, t.verify)
                )
            else:
                client = smtplib.SMTP(t.host, t.port, timeout=t.timeout)
            with client:
                client.ehlo()
                if t.security == "starttls":
                    if not client.has_extn("starttls"):
                        raise ActionError(f"mail server {name!r} does not offer STARTTLS")
                    client.starttls(context=_ssl_context(t.ca_certs, t.verify))
                    client.ehlo()
                if t.username:
                    password = t.password.get_secret_value() if t.password else ""
                    client.login(t.username, password)
                refused = client.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise ActionError(f"mail server {name!r} refused the login ({exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:
            raise ActionError(f"mail server {name!r} answered {exc.smtp_code}") from None
        except smtplib.SMTPException as exc:
            raise ActionError(f"mail to {name!r} failed: {type(exc).__name__}") from None
        except ssl.SSLError as exc:
            raise ActionError(f"TLS with mail server {name!r} failed: {exc.reason}") from None
        except OSError as exc:
            raise ActionError(f"mail server {name!r} unreachable: {exc.strerror or exc}") from None
        if refused:
            raise ActionError(f"mail server {name!r} refused {', '.join(refused)}")
        return {"to": list(t.to)}


# -- syslog
class SyslogOptions(Options):
    target: str
    message: str = "{{ rule.name }}: {{ message }}"


def _sd_escape(value: str) -> str:
    """PARAM-VALUE escaping (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|")


def _cef_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "")


def _printable(value: str, limit: int) -> str:
    """RFC 5424 header fields: PRINTUSASCII, no spaces, at least '-'."""
    out = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return out or "-"


def _ip(value: Any) -> str | None:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def build_syslog(
    target: SyslogTarget, finding: dict[str, Any], message: str, extra: dict[str, str], host: str
) -> str:
    """The syslog line for a finding (RFC 5424, or CEF in an RFC 5424 header)."""
    severity = str(dig(finding, "sentinel.severity_label") or "medium")
    pri = target.facility * 8 + _SYSLOG_SEVERITY.get(severity, 4)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = (
        f"<{pri}>1 {now} {_printable(host, 255)} {_printable(target.app_name, 48)} {os.getpid()} "
    )
    src, dst = _ip(dig(finding, "source.ip")), _ip(dig(finding, "destination.ip"))
    rule_id = template.clean(dig(finding, "rule.id"), 64)
    if target.format == "cef":
        ext: dict[str, str] = {}
        ts = dig(finding, "@timestamp")
        with contextlib.suppress(ValueError):
            ext["rt"] = str(int(datetime.fromisoformat(str(ts)).timestamp() * 1000))
        if src:
            ext["src"] = src
            if isinstance(dig(finding, "source.port"), int):
                ext["spt"] = str(dig(finding, "source.port"))
        if dst:
            ext["dst"] = dst
            if isinstance(dig(finding, "destination.port"), int):
                ext["dpt"] = str(dig(finding, "destination.port"))
        ext["externalId"] = template.clean(dig(finding, "event.id"), 64)
        technique = dig(finding, "threat.technique.id")
        if isinstance(technique, list) and technique:
            ext["cat"] = template.clean(technique[0], 32)
        for i, (label, value) in enumerate(extra.items(), 1):
            ext[f"cs{i}Label"] = label
            ext[f"cs{i}"] = template.clean(value, 256)
        ext["msg"] = template.clean(message, 1024)
        line = "CEF:0|{}|{}|{}|{}|{}|{}|{}".format(
            "Sentinel",
            "Sentinel OT",
            _cef_header(__version__),
            _cef_header(rule_id or "0"),
            _cef_header(template.clean(dig(finding, "rule.name"), 512)),
            _CEF_SEVERITY.get(severity, 5),
            " ".join(f"{k}={_cef_value(v)}" for k, v in ext.items()),
        )
        return (header + "CEF - " + line)[:MAX_SYSLOG]
    params = {"rule_id": rule_id, "severity": severity, **extra}
    if src:
        params["src"] = src
    if dst:
        params["dst"] = dst
    params["event_id"] = template.clean(dig(finding, "event.id"), 64)
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_escape(v)}"' for k, v in params.items()) + "]"
    return (header + "finding " + sd + " \ufeff" + template.clean(message, 4096))[:MAX_SYSLOG]


@register
class Syslog(Action):
    id = "notify.syslog"
    Options = SyslogOptions
    templates = ("message",)
    targets = "syslog"
    options: SyslogOptions

    def plan(self, ctx: StepContext) -> Plan:
        o = self.options
        target: SyslogTarget = _target(ctx.services.settings.syslog, o.target, "syslog")
        message = ctx.render(o.message)
        line = build_syslog(
            target,
            ctx.finding,
            message,
            {"playbook": ctx.playbook.id, "run_id": ctx.run_id},
            ctx.services.observer,
        )
        return Plan(
            self.id,
            f"syslog ({target.format}, {target.protocol}) to {o.target!r}",
            {"target": o.target, "line": line},
        )

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        name = params["target"]
        t: SyslogTarget = _target(services.settings.syslog, name, "syslog")
        data = params["line"].encode("utf-8")[:MAX_SYSLOG]
        try:
            if t.protocol == "udp":
                family = socket.AF_INET6 if ":" in t.host else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.settimeout(t.timeout)
                    s.sendto(data, (t.host, t.port))
            else:
                frame = str(len(data)).encode() + b" " + data  # RFC 6587 octet counting
                with socket.create_connection((t.host, t.port), timeout=t.timeout) as raw:
                    if t.protocol == "tls":
                        ctx = _ssl_context(t.ca_certs, True)
                        with ctx.wrap_socket(raw, server_hostname=t.host) as s:
                            s.sendall(frame)
                    else:
                        raw.sendall(frame)
        except OSError as exc:
            raise ActionError(
                f"syslog target {name!r} unreachable: {exc.strerror or exc}"
            ) from None
        return {"bytes": len(data)}
