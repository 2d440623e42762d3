"""Config sections of the response side: ``playbooks:``, ``actions:`` and ``service:``.

Example::

    playbooks:
      builtin: [notify-soc, unauthorized-ot-write]  # shipped playbooks ("all": every one)
      paths: [/etc/sentinel/playbooks]             # more playbook files or folders
      dry_run: false                                # true: playbooks only show what they'd do
      approval_ttl: 3600                            # seconds a pending approval waits
    actions:
      allow_network_changes: false                   # firewall.block stays a proposal unless true
      webhooks:
        soc-chat: {url: "https://chat.example.org/hooks/abc", format: mattermost}
      email:
        soc: {host: smtp.example.org, sender: sentinel@example.org, to: [soc@example.org]}
      syslog:
        siem: {host: 192.0.2.5, port: 6514, protocol: tcp, format: cef}
      firewall: {table: sentinel, set4: blocked4, set6: blocked6, timeout: 3600}
    service:
      metrics: {host: 127.0.0.1, port: 9108}

Secrets (SMTP passwords, webhook headers) are ``SecretStr``: never in ``repr``, logs or audit
records. Endpoints live in the config, never in a playbook: a playbook names a target
(``target: soc``), so shipped playbooks work at every site and a value from the wire can never
choose where a request goes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _names(value: dict[str, Any]) -> dict[str, Any]:
    for name in value:
        if not NAME.match(str(name)):
            raise ValueError(f"target name {name!r}: letters, digits, '.', '_', '-' only")
    return value


def _http_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("bad port in URL") from None
    return value


def _host(value: str) -> str:
    if not value or any(c.isspace() or c in "/\\@" for c in value):
        raise ValueError(f"not a host name or address: {value!r}")
    return value


def state_dir() -> Path:
    """``$SENTINEL_STATE``, else ``$XDG_STATE_HOME/sentinel`` (as the Elasticsearch spool)."""
    state = os.environ.get("SENTINEL_STATE")
    if state:
        return Path(state)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "sentinel"


class WebhookTarget(_Strict):
    """An HTTP endpoint that receives a POST per notification."""

    url: str
    format: Literal["json", "slack", "teams", "mattermost"] = "json"
    headers: dict[str, SecretStr] = {}  # e.g. Authorization; never logged
    timeout: float = Field(10.0, gt=0, le=120)
    ca_certs: str | None = None
    verify: bool = True

    _url = field_validator("url")(lambda cls, v: _http_url(v))

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in v.items():
            if not re.match(r"^[A-Za-z0-9-]{1,64}$", name):
                raise ValueError(f"bad header name {name!r}")
            if any(c in value.get_secret_value() for c in "\r\n"):
                raise ValueError(f"header {name} contains a line break")
        return v


class EmailTarget(_Strict):
    """An SMTP server (submission with STARTTLS) and who gets the mail."""

    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    ca_certs: str | None = None
    verify: bool = True
    timeout: float = Field(15.0, gt=0, le=120)

    _host = field_validator("host")(lambda cls, v: _host(v))

    @field_validator("sender", "to")
    @classmethod
    def _mailboxes(cls, v: Any) -> Any:
        for addr in [v] if isinstance(v, str) else v:
            if not re.match(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+$", addr):
                raise ValueError(f"not a mail address: {addr!r}")
        return v

    @model_validator(mode="after")
    def _auth(self) -> EmailTarget:
        if self.password is not None and not self.username:
            raise ValueError("password given without username")
        if self.username and self.security == "none":
            raise ValueError("refusing to send a password without TLS (security: none)")
        return self


class SyslogTarget(_Strict):
    """A syslog collector: RFC 5424 or CEF, over UDP (RFC 5426) or TCP (RFC 6587 framing)."""

    host: str
    port: int = Field(514, ge=1, le=65535)
    protocol: Literal["udp", "tcp", "tls"] = "udp"
    format: Literal["rfc5424", "cef"] = "rfc5424"
    facility: int = Field(4, ge=0, le=23)  # 4: security/authorization (RFC 5424 table 1)
    app_name: str = Field("sentinel", pattern=r"^[!-~]{1,48}$")
    ca_certs: str | None = None
    timeout: float = Field(5.0, gt=0, le=60)

    _host = field_validator("host")(lambda cls, v: _host(v))


class FirewallSettings(_Strict):
    """Where ``firewall.block`` puts addresses: named nftables sets with a timeout.

    The table and sets are created by the site's firewall configuration (see
    docs/playbooks.md); Sentinel only adds elements, which expire by themselves.
    """

    nft: str = "/usr/sbin/nft"
    family: Literal["inet", "ip", "ip6", "bridge", "netdev"] = "inet"
    table: str = Field("sentinel", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    set4: str = Field("blocked4", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    set6: str = Field("blocked6", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    timeout: int = Field(3600, ge=60, le=7 * 86400)
    never_block: list[str] = []  # networks that are never blocked (besides declared assets)

    @field_validator("never_block")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        out = []
        for net in v:
            try:
                out.append(str(ipaddress.ip_network(net, strict=False)))
            except ValueError:
                raise ValueError(f"not an IP network: {net!r}") from None
        return out


class SnapshotSettings(_Strict):
    """``capture.snapshot``: the packet ring of ``sentinel run`` and where pcaps go.

    Snapshots hold payload bytes (which can be personal data): they are opt-in per playbook,
    bounded in size and number, and written with mode 0600.
    """

    dir: str | None = None  # default: <state>/snapshots
    ring_bytes: int = Field(64 << 20, ge=1 << 20, le=4 << 30)
    ring_seconds: float = Field(300.0, gt=0, le=3600)
    max_files: int = Field(1000, ge=1)
    max_total_bytes: int = Field(1 << 30, ge=1 << 20)


class CaseSettings(_Strict):
    """``case.open``: the ``sentinel-cases`` index (Elasticsearch) or a JSONL file."""

    index: str = Field("sentinel-cases", pattern=r"^[a-z0-9][a-z0-9._-]{0,100}$")
    jsonl: str | None = None  # default without Elasticsearch: <state>/cases.jsonl


class ActionSettings(_Strict):
    """``actions:`` — what playbook actions may reach, and whether they may change the network."""

    allow_network_changes: bool = False
    webhooks: dict[str, WebhookTarget] = {}
    email: dict[str, EmailTarget] = {}
    syslog: dict[str, SyslogTarget] = {}
    firewall: FirewallSettings = FirewallSettings()
    snapshot: SnapshotSettings = SnapshotSettings()
    cases: CaseSettings = CaseSettings()

    _check = field_validator("webhooks", "email", "syslog")(lambda cls, v: _names(v))


class PlaybookSettings(_Strict):
    """``playbooks:`` — which playbooks run, and the engine's limits."""

    builtin: list[str] | Literal["all"] = []
    paths: list[str] = []
    dry_run: bool = False  # every playbook in dry-run mode
    state_dir: str | None = None  # audit, approvals, cases fallback (default: $SENTINEL_STATE)
    audit: str | None = None  # audit JSONL (default: <state>/playbook-audit.jsonl)
    audit_index: str = Field("sentinel-playbook-runs", pattern=r"^[a-z0-9][a-z0-9._-]{0,100}$")
    approval_ttl: float = Field(3600.0, gt=0, le=7 * 86400)
    workers: int = Field(2, ge=1, le=32)
    queue_size: int = Field(10000, ge=10)
    close_timeout: float = Field(30.0, ge=0)

    def state(self) -> Path:
        return Path(self.state_dir) if self.state_dir else state_dir()

    def audit_path(self) -> Path:
        return Path(self.audit) if self.audit else self.state() / "playbook-audit.jsonl"

    def approvals_path(self) -> Path:
        return self.state() / "approvals.sqlite"


class MetricsSettings(_Strict):
    """The Prometheus endpoint; loopback only (put a reverse proxy in front to expose it)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)

    @field_validator("host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if v == "localhost":
            return "127.0.0.1"
        try:
            addr = ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"not an IP address: {v!r}") from None
        if not addr.is_loopback:
            raise ValueError("the metrics endpoint listens on loopback only (127.0.0.0/8, ::1)")
        return str(addr)


class ServiceSettings(_Strict):
    """``service:`` — the long-running ``sentinel run``."""

    metrics: MetricsSettings = MetricsSettings()


def section(config: Any, name: str) -> Any:
    """``config.<name>``: one of the sections above, as ``sentinel.config.Config`` holds it."""
    return getattr(config, name)
