"""The Elasticsearch client for resolved settings, and errors a person can act on.

``connect`` builds the official client (orjson serializer, bounded transport retries: the
sink does its own backoff). ``explain`` turns any client exception into one line that says
what is wrong and what to check, naming the URL without credentials and never a secret.
"""

from __future__ import annotations

import ssl
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TlsError, TransportError
from elasticsearch import ApiError, Elasticsearch

from sentinel.errors import SentinelError
from sentinel.es.config import EsSettings

try:
    from elasticsearch.serializer import OrjsonSerializer

    _SERIALIZER: dict[str, Any] = {"serializer": OrjsonSerializer()}
except ImportError:  # pragma: no cover - orjson is a core dependency
    _SERIALIZER = {}


class EsError(SentinelError):
    """Elasticsearch could not be used; the message says why."""


def connect(settings: EsSettings, *, max_retries: int = 1, **extra: Any) -> Elasticsearch:
    kwargs: dict[str, Any] = {
        "request_timeout": settings.request_timeout,
        "max_retries": max_retries,
        "retry_on_timeout": False,
        **_SERIALIZER,
        **extra,
    }
    if settings.api_key:
        kwargs["api_key"] = settings.api_key.get_secret_value()
    elif settings.bearer_token:
        kwargs["bearer_auth"] = settings.bearer_token.get_secret_value()
    elif settings.username:
        password = settings.password.get_secret_value() if settings.password else ""
        kwargs["basic_auth"] = (settings.username, password)
    if settings.url.startswith("https"):
        if settings.ca_certs:
            kwargs["ca_certs"] = settings.ca_certs
        kwargs["verify_certs"] = settings.verify_certs
        if not settings.verify_certs:
            kwargs["ssl_show_warn"] = False
    try:
        return Elasticsearch(settings.url, **kwargs)
    except (ValueError, OSError, ssl.SSLError) as exc:
        raise EsError(f"cannot set up the Elasticsearch client for {settings.url}: {exc}") from None


def explain(exc: BaseException, settings: EsSettings) -> str:
    """One line about ``exc`` for a person; secrets are scrubbed from it."""
    url = settings.url
    if isinstance(exc, ApiError):
        status = exc.meta.status if exc.meta else None
        reason = _api_reason(exc)
        if status == 401:
            text = (
                f"Elasticsearch at {url} refused the credentials ({settings.auth_kind}, HTTP "
                "401): check SENTINEL_ES_USERNAME/PASSWORD, SENTINEL_ES_API_KEY or the config's "
                "sinks.elasticsearch section"
            )
        elif status == 403:
            text = f"Elasticsearch at {url}: {settings.auth_kind} lacks a privilege: {reason}"
        elif status == 429:
            text = f"Elasticsearch at {url} is overloaded (HTTP 429): {reason}"
        else:
            text = f"Elasticsearch at {url} answered HTTP {status}: {reason}"
    elif isinstance(exc, TlsError):
        text = (
            f"TLS with Elasticsearch at {url} failed ({_transport_reason(exc)}): give its CA "
            "certificate with SENTINEL_ES_CA_CERTS or sinks.elasticsearch.ca_certs"
        )
    elif isinstance(exc, ConnectionTimeout):
        text = f"Elasticsearch at {url} did not answer in time ({settings.request_timeout:g} s)"
    elif isinstance(exc, TransportConnectionError):
        text = f"cannot reach Elasticsearch at {url}: {_transport_reason(exc)}"
    elif isinstance(exc, TransportError):
        text = f"Elasticsearch at {url}: {_transport_reason(exc)}"
    else:
        text = f"Elasticsearch at {url}: {type(exc).__name__}: {exc}"
    return scrub(text, settings)


def scrub(text: str, settings: EsSettings) -> str:
    for secret in settings.secrets():
        text = text.replace(secret, "***")
    return text


def _api_reason(exc: ApiError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            root = (error.get("root_cause") or [error])[0]
            return f"{root.get('type', 'error')}: {root.get('reason', '')}"[:300]
        if isinstance(error, str):
            return error[:300]
    return str(exc.message)[:300]


def _transport_reason(exc: TransportError) -> str:
    text = str(exc.message) if getattr(exc, "message", None) else str(exc)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "certificate verify failed" in lowered:
        return "certificate verify failed"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "unknown host name"
    if "reset by peer" in lowered or "remote end closed" in lowered:
        return "connection closed by the server"
    return text.split("(")[0].strip()[:200] or type(exc).__name__
