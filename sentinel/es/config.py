"""The Elasticsearch sink's settings: the config section, the environment, the command line.

The config section (``sinks.elasticsearch`` in the YAML file, model ``ElasticsearchSink``) is
validated with the rest of the config. Connection settings come, highest first, from the
command line (``--es URL``), the environment (``SENTINEL_ES_URL``, ``SENTINEL_ES_USERNAME``,
``SENTINEL_ES_PASSWORD``, ``SENTINEL_ES_API_KEY``, ``SENTINEL_ES_BEARER_TOKEN``,
``SENTINEL_ES_CA_CERTS``) and the config file. Credentials in a URL
(``https://user:pass@host``) are taken out of it. Secrets are ``SecretStr`` and never appear
in ``repr``, logs or error messages: URLs are shown without their user part.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from sentinel.errors import SentinelError

Kind = Literal["findings", "modbus", "flows", "assets"]
ENV_PREFIX = "SENTINEL_ES_"


def _check_url(value: str) -> str:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"not an http(s) URL: {redact_url(value)!r}")
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"bad port in URL {redact_url(value)!r}") from None
    return value


class SpoolSettings(BaseModel):
    """Where unsent documents wait, and how much room the droppable ones may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None  # default: $SENTINEL_STATE/es-spool or ~/.local/state/sentinel/...
    max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    segment_bytes: int = Field(default=16 << 20, ge=4096)


class ElasticsearchSink(BaseModel):
    """``sinks.elasticsearch`` in the config file.

    Example::

        sinks:
          elasticsearch:
            url: https://es.example.org:9200
            username: sentinel_writer      # or api_key / bearer_token
            ca_certs: /etc/sentinel/es-ca.crt
            send: [findings, modbus, flows, assets]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None  # the base64 "id:key" form Kibana shows, or "id:key"
    bearer_token: SecretStr | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    request_timeout: float = Field(default=30.0, gt=0)
    send: list[Kind] = ["findings", "modbus", "flows", "assets"]
    batch_size: int = Field(default=1000, ge=1, le=50_000)
    max_batch_bytes: int = Field(default=16 << 20, ge=1 << 16)
    max_retries: int = Field(default=3, ge=0, le=20)
    initial_backoff: float = Field(default=0.5, gt=0)
    max_backoff: float = Field(default=30.0, gt=0)
    flush_interval: float = Field(default=1.0, gt=0)
    close_timeout: float = Field(default=60.0, ge=0)
    setup_templates: bool = True  # install missing index templates on first contact
    spool: SpoolSettings = SpoolSettings()

    _url = field_validator("url", mode="after")(lambda cls, v: v if v is None else _check_url(v))

    @model_validator(mode="after")
    def _one_auth(self) -> ElasticsearchSink:
        _check_auth(self.username, self.password, self.api_key, self.bearer_token)
        return self


def _check_auth(
    username: str | None,
    password: SecretStr | None,
    api_key: SecretStr | None,
    bearer: SecretStr | None,
) -> None:
    kinds = [n for n, v in (("basic", username), ("api_key", api_key), ("bearer", bearer)) if v]
    if len(kinds) > 1:
        raise ValueError(f"give one way to authenticate, not {' and '.join(kinds)}")
    if password is not None and not username:
        raise ValueError("password given without username")


def redact_url(url: str) -> str:
    """The URL without user and password (for messages)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


@dataclass(frozen=True)
class EsSettings:
    """Resolved connection and sink settings. ``repr`` shows no secret."""

    url: str
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    api_key: SecretStr | None = field(default=None, repr=False)
    bearer_token: SecretStr | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True
    request_timeout: float = 30.0
    sink: ElasticsearchSink = field(default_factory=lambda: ElasticsearchSink())

    @property
    def auth_kind(self) -> str:
        if self.api_key:
            return "API key"
        if self.bearer_token:
            return "bearer token"
        if self.username:
            return f"user {self.username!r}"
        return "no credentials"

    def secrets(self) -> list[str]:
        """The secret strings, so that callers can check text for leaks."""
        return [
            s.get_secret_value()
            for s in (self.password, self.api_key, self.bearer_token)
            if s is not None and s.get_secret_value()
        ]


def sink_section(config: Any) -> ElasticsearchSink | None:
    """``config.sinks.elasticsearch`` if the config has it (the lead wires the model)."""
    sinks = getattr(config, "sinks", None)
    section = getattr(sinks, "elasticsearch", None)
    if section is None and isinstance(sinks, Mapping):
        section = sinks.get("elasticsearch")
    if section is None:
        return None
    if isinstance(section, ElasticsearchSink):
        return section
    return ElasticsearchSink.model_validate(section)


def resolve(
    section: ElasticsearchSink | None,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    require_url: bool = True,
) -> EsSettings:
    """Merge command line, environment and config section (see the module doc)."""
    env = os.environ if env is None else env
    section = section or ElasticsearchSink()

    def pick(name: str, configured: Any) -> Any:
        value = env.get(ENV_PREFIX + name)
        return value if value else configured

    chosen_url = url or pick("URL", section.url)
    if not chosen_url:
        if require_url:
            raise SentinelError(
                "no Elasticsearch URL: give --es URL, set SENTINEL_ES_URL or "
                "sinks.elasticsearch.url in the config"
            )
        chosen_url = "http://127.0.0.1:9200"
    try:
        _check_url(chosen_url)
    except ValueError as exc:
        raise SentinelError(f"Elasticsearch {exc}") from None
    # The environment's credentials replace the config file's as a whole (never a mix).
    auth_names = ("USERNAME", "PASSWORD", "API_KEY", "BEARER_TOKEN")
    if any(env.get(ENV_PREFIX + n) for n in auth_names):
        username = env.get(ENV_PREFIX + "USERNAME") or None
        password = _secret(env.get(ENV_PREFIX + "PASSWORD"))
        api_key = _secret(env.get(ENV_PREFIX + "API_KEY"))
        bearer = _secret(env.get(ENV_PREFIX + "BEARER_TOKEN"))
    else:
        username, password = section.username, section.password
        api_key, bearer = section.api_key, section.bearer_token
    parts = urllib.parse.urlsplit(chosen_url)
    if parts.username is not None:  # user:password@ in the URL wins, and leaves the URL
        username = urllib.parse.unquote(parts.username)
        password = _secret(urllib.parse.unquote(parts.password or ""))
        api_key = bearer = None
        chosen_url = redact_url(chosen_url)
    try:
        _check_auth(username, password, api_key, bearer)
    except ValueError as exc:
        raise SentinelError(f"Elasticsearch credentials: {exc}") from None
    ca_certs = pick("CA_CERTS", section.ca_certs)
    if ca_certs and not os.path.isfile(ca_certs):
        raise SentinelError(f"Elasticsearch CA certificate not found: {ca_certs}")
    return EsSettings(
        url=chosen_url.rstrip("/"),
        username=username,
        password=password,
        api_key=api_key,
        bearer_token=bearer,
        ca_certs=ca_certs,
        verify_certs=section.verify_certs,
        request_timeout=section.request_timeout,
        sink=section,
    )


def _secret(value: Any) -> SecretStr | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, SecretStr) else SecretStr(str(value))
