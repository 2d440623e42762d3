"""Kibana saved objects for Sentinel and their import.

``kibana/sentinel-ot.ndjson`` (package data) holds, in Kibana's export format:

- data views ``sentinel-findings``, ``sentinel-modbus``, ``sentinel-flows``, ``sentinel-assets``
  (one per index pattern, time field ``@timestamp``);
- saved searches: all findings, high and critical findings, protocol anomalies, Modbus write
  requests, Modbus exception responses, the asset inventory;
- aggregation-based visualisations: findings over time by sector and site, top rules, ATT&CK
  for ICS techniques, top talkers, Modbus writes per device;
- the dashboard "Sentinel OT overview" with all of them and the asset table.

Objects carry ``migrationVersion`` 8.0.0 so that any Kibana 8 (or later) migrates them on
import. Saved-search queries are written in Lucene syntax, which Kibana runs as an
Elasticsearch ``query_string`` query: the tests run exactly that query against a real node and
check the results, and every field any object names is checked against the index templates.

``import_objects`` posts the file to ``POST /api/saved_objects/_import`` (``/s/<space>/...`` for
a space) as multipart form data with ``kbn-xsrf``, and basic auth or an API key.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from base64 import b64encode
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sentinel.errors import SentinelError
from sentinel.es.config import redact_url

NDJSON = "sentinel-ot.ndjson"


class KibanaError(SentinelError):
    """Kibana could not take the saved objects; the message says why."""


def ndjson_bytes() -> bytes:
    return (resources.files("sentinel.es") / "kibana" / NDJSON).read_bytes()


def saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in ndjson_bytes().splitlines() if line.strip()]


@dataclass(frozen=True)
class KibanaAuth:
    username: str | None = None
    password: str | None = None
    api_key: str | None = None

    def header(self) -> str | None:
        if self.api_key:
            return f"ApiKey {self.api_key}"
        if self.username:
            token = b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            return f"Basic {token}"
        return None

    def scrub(self, text: str) -> str:
        for secret in (self.password, self.api_key):
            if secret:
                text = text.replace(secret, "***")
        return text


@dataclass
class ImportResult:
    url: str
    success_count: int
    response: dict[str, Any]


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file; returns (body, content type)."""
    boundary = f"sentinel-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def import_objects(
    url: str,
    auth: KibanaAuth,
    *,
    space: str | None = None,
    ca_certs: str | None = None,
    overwrite: bool = True,
    timeout: float = 60.0,
    data: bytes | None = None,
) -> ImportResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KibanaError(f"not an http(s) URL: {redact_url(url)!r}")
    if parts.username:
        auth = KibanaAuth(
            urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        )
        url = redact_url(url)
    base = url.rstrip("/")
    if space:
        if not all(c.isalnum() or c in "-_" for c in space):
            raise KibanaError(f"not a Kibana space id: {space!r}")
        base += f"/s/{space}"
    endpoint = f"{base}/api/saved_objects/_import" + ("?overwrite=true" if overwrite else "")
    body, content_type = multipart("file", NDJSON, data if data is not None else ndjson_bytes())
    request = urllib.request.Request(endpoint, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    request.add_header("kbn-xsrf", "true")
    header = auth.header()
    if header:
        request.add_header("Authorization", header)
    context = None
    if endpoint.startswith("https"):
        context = ssl.create_default_context(cafile=ca_certs) if ca_certs else None
    shown = redact_url(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            payload = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", "replace")
        if exc.code == 401:
            raise KibanaError(f"Kibana at {shown} refused the credentials (HTTP 401)") from None
        if exc.code == 403:
            raise KibanaError(
                f"Kibana at {shown}: the user may not import saved objects (HTTP 403)"
            ) from None
        if exc.code == 404:
            raise KibanaError(
                f"Kibana at {shown} has no saved objects import API (HTTP 404): is this Kibana, "
                "and does the space exist?"
            ) from None
        message = f"Kibana at {shown} answered HTTP {exc.code}: {detail}"
        raise KibanaError(auth.scrub(message)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KibanaError(auth.scrub(f"cannot reach Kibana at {shown}: {reason}")) from None
    except ValueError:
        raise KibanaError(f"Kibana at {shown} did not answer with JSON") from None
    if not payload.get("success", False):
        problems = []
        for err in payload.get("errors", [])[:10]:
            kind = err.get("error", {}).get("type", "error")
            problems.append(f"{err.get('type')} {err.get('id')} ({err.get('title', '')}): {kind}")
        raise KibanaError(
            f"Kibana at {shown} imported {payload.get('successCount', 0)} objects but refused "
            f"others: " + "; ".join(problems)
        )
    return ImportResult(shown, int(payload.get("successCount", 0)), payload)
