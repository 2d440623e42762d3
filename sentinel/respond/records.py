"""Actions that write documents: ``case.open`` and ``asset.tag``, and where they write.

``DocumentStore`` is the small interface both use: ``get``, ``index`` and ``update`` (a
partial document, created when missing). ``EsDocumentStore`` is Elasticsearch through the
client that ``sentinel.es.client.connect`` builds from the config's ``sinks.elasticsearch``;
``JsonlDocumentStore`` appends to ``<dir>/<index>.jsonl`` when no cluster is configured (a
sensor without Elasticsearch still keeps its cases).

**Cases** (``sentinel-cases``) group findings: the case id is a hash of the playbook and the
step's ``group_by`` fields (default: rule and destination), so a second finding of the same
kind joins the open case (``case.count``, ``case.findings``) instead of opening another.
**Asset tags** go to the ``tags`` field of the asset's document in ``sentinel-assets`` (id
``<site>/<ip>`` or ``<ip>``, as the Elasticsearch sink writes it), merged with the tags it has.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from sentinel.respond import template
from sentinel.respond.actions import (
    Action,
    ActionError,
    Options,
    Plan,
    Services,
    StepContext,
    dig,
    parse_address,
    register,
)

ASSETS_INDEX = "sentinel-assets"
MAX_CASE_FINDINGS = 1000
_CASES = threading.Lock()  # a case's read-modify-write, against concurrent runs
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,100}$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")


class DocumentStore:
    """Where ``case.open``, ``asset.tag`` and the audit write documents."""

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def index(self, index: str, doc_id: str, doc: dict[str, Any]) -> None:
        raise NotImplementedError

    def update(self, index: str, doc_id: str, partial: dict[str, Any]) -> None:
        """Merge ``partial`` into the document (top-level keys), creating it when missing."""
        raise NotImplementedError


class EsDocumentStore(DocumentStore):
    """Elasticsearch; errors become ``ActionError`` with the client's explanation."""

    def __init__(self, client: Any, settings: Any = None, refresh: bool = False) -> None:
        self.client = client
        self.settings = settings
        self.refresh = refresh

    def _explain(self, exc: Exception) -> str:
        if self.settings is not None:
            from sentinel.es.client import explain

            return explain(exc, self.settings)
        return f"Elasticsearch: {type(exc).__name__}: {exc}"

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        try:
            resp = self.client.options(ignore_status=404).get(index=index, id=doc_id)
        except Exception as exc:
            raise ActionError(self._explain(exc)) from None
        body = resp.body if hasattr(resp, "body") else resp
        return body.get("_source") if body.get("found") else None

    def index(self, index: str, doc_id: str, doc: dict[str, Any]) -> None:
        try:
            self.client.index(index=index, id=doc_id, document=doc, refresh=self.refresh)
        except Exception as exc:
            raise ActionError(self._explain(exc)) from None

    def update(self, index: str, doc_id: str, partial: dict[str, Any]) -> None:
        try:
            self.client.update(
                index=index, id=doc_id, doc=partial, doc_as_upsert=True, refresh=self.refresh
            )
        except Exception as exc:
            raise ActionError(self._explain(exc)) from None


class JsonlDocumentStore(DocumentStore):
    """``<dir>/<index>.jsonl``: one line per write (``{"_id", "_op", "doc"}``)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self._lock = threading.Lock()

    def _path(self, index: str) -> Path:
        if not INDEX_NAME.match(index):
            raise ActionError(f"bad index name {index!r}")
        return self.dir / f"{index}.jsonl"

    def _append(self, index: str, line: dict[str, Any]) -> None:
        path = self._path(index)
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        path = self._path(index)
        doc: dict[str, Any] | None = None
        if not path.exists():
            return None
        with self._lock, open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("_id") != doc_id:
                    continue
                if rec.get("_op") == "update" and doc is not None:
                    doc = {**doc, **rec["doc"]}
                else:
                    doc = dict(rec["doc"])
        return doc

    def index(self, index: str, doc_id: str, doc: dict[str, Any]) -> None:
        self._append(index, {"_id": doc_id, "_op": "index", "doc": doc})

    def update(self, index: str, doc_id: str, partial: dict[str, Any]) -> None:
        self._append(index, {"_id": doc_id, "_op": "update", "doc": partial})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _store(services: Services) -> DocumentStore:
    if services.documents is None:
        raise ActionError("no document store (Elasticsearch or JSONL) is configured")
    return services.documents


# -- case.open
class CaseOptions(Options):
    title: str = "{{ rule.name }} on {{ destination.ip }}"
    description: str = "{{ message }}"
    group_by: list[str] = Field(["rule.id", "destination.ip"], min_length=1, max_length=8)
    severity: str | None = None  # default: the finding's

    @field_validator("severity")
    @classmethod
    def _severity(cls, v: str | None) -> str | None:
        if v is not None and v not in ("low", "medium", "high", "critical"):
            raise ValueError("severity is low, medium, high or critical")
        return v


def case_id(playbook: str, finding: dict[str, Any], group_by: list[str]) -> str:
    key = json.dumps([playbook, *[dig(finding, f) for f in group_by]], default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@register
class OpenCase(Action):
    id = "case.open"
    Options = CaseOptions
    templates = ("title", "description")
    options: CaseOptions

    def plan(self, ctx: StepContext) -> Plan:
        o = self.options
        f = ctx.finding
        cid = case_id(ctx.playbook.id, f, o.group_by)
        severity = o.severity or str(dig(f, "sentinel.severity_label") or "medium")
        title = template.clean(ctx.render(o.title), 300)
        case = {
            "id": cid,
            "title": title,
            "description": ctx.render(o.description),
            "status": "open",
            "severity": severity,
            "playbook": ctx.playbook.id,
        }
        doc: dict[str, Any] = {"message": title, "case": case}
        for key in ("rule", "source", "destination", "labels", "threat", "related"):
            if isinstance(f.get(key), dict):
                doc[key] = f[key]
        return Plan(
            self.id,
            f"open or update case {cid} ({title!r})",
            {
                "index": ctx.services.settings.cases.index,
                "case_id": cid,
                "doc": doc,
                "finding_id": template.clean(dig(f, "event.id"), 64),
                "run_id": ctx.run_id,
            },
        )

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        with _CASES:
            return cls._open(params, _store(services))

    @staticmethod
    def _open(params: dict[str, Any], store: DocumentStore) -> dict[str, Any]:
        index, cid = params["index"], params["case_id"]
        now = _now()
        existing = store.get(index, cid)
        if existing and (existing.get("case") or {}).get("status") == "open":
            case = dict(existing["case"])
            findings = list(case.get("findings") or [])
            if params["finding_id"] not in findings:
                findings = ([*findings, params["finding_id"]])[-MAX_CASE_FINDINGS:]
            case.update(
                findings=findings,
                count=int(case.get("count") or 1) + 1,
                updated=now,
                run_ids=([*list(case.get("run_ids") or []), params["run_id"]])[-100:],
            )
            store.update(index, cid, {"case": case, "@timestamp": existing.get("@timestamp", now)})
            return {"case_id": cid, "created": False, "count": case["count"]}
        doc = dict(params["doc"])
        doc["case"] = {
            **doc["case"],
            "created": now,
            "updated": now,
            "count": 1,
            "findings": [params["finding_id"]],
            "run_ids": [params["run_id"]],
        }
        doc["@timestamp"] = now
        doc["event"] = {"kind": "event", "category": ["intrusion_detection"], "type": ["creation"]}
        store.index(index, cid, doc)
        return {"case_id": cid, "created": True, "count": 1}


# -- asset.tag
class TagOptions(Options):
    address: str = "{{ destination.ip }}"
    tags: list[str] = Field(min_length=1, max_length=16)


@register
class TagAsset(Action):
    id = "asset.tag"
    Options = TagOptions
    templates = ("address", "tags")
    options: TagOptions

    def plan(self, ctx: StepContext) -> Plan:
        addr = str(parse_address(ctx.render(self.options.address)))
        tags = []
        for source in self.options.tags:
            tag = ctx.render(source).strip()
            if not TAG.match(tag):
                raise ActionError(f"tag {template.clean(tag, 80)!r} is not a valid tag")
            tags.append(tag)
        site = None
        if ctx.services.site_of is not None:  # the config's site networks, as the ES sink
            site = (ctx.services.site_of(addr) or {}).get("site")
        doc_id = f"{site}/{addr}" if site else addr
        return Plan(
            self.id,
            f"tag asset {doc_id} with {', '.join(tags)}",
            {"index": ASSETS_INDEX, "asset_id": doc_id, "ip": addr, "tags": tags},
        )

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        store = _store(services)
        existing = store.get(params["index"], params["asset_id"]) or {}
        have = existing.get("tags") if isinstance(existing.get("tags"), list) else []
        tags = sorted({*have, *params["tags"]})
        partial: dict[str, Any] = {"tags": tags}
        if not existing:
            partial["host"] = {"ip": [params["ip"]]}
            partial["@timestamp"] = _now()
        store.update(params["index"], params["asset_id"], partial)
        return {"asset_id": params["asset_id"], "tags": tags}
