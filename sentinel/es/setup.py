"""``sentinel es setup``: index templates, lifecycle policies and what the indices are called.

Everything installed ships as versioned JSON in ``sentinel/es/templates/`` (ElastAlert's
habit): ``*.component.json`` are component templates, ``*.index.json`` composable index
templates and ``*.ilm.json`` ILM policies, each file the exact body of its API call with a
``version`` (policies: ``_meta.version``). Setup installs what is missing or older than the
package's, and leaves newer ones alone unless forced.

Indices: ``sentinel-findings-YYYY.MM.DD``, ``sentinel-modbus-YYYY.MM.DD`` and
``sentinel-flows-YYYY.MM.DD`` (one per day of packet time, see ``documents``) and
``sentinel-assets`` (one document per asset, upserted). Plain daily indices rather than data
streams or rollover aliases, because a document's index must follow from the document itself
for re-sending to overwrite instead of duplicating (and the integ-test distribution has
neither data streams nor ILM).

Lifecycle: where the cluster has ILM, the policies ``sentinel-findings`` (delete after a year)
and ``sentinel-events`` (Modbus and flows, 30 days) are installed with the component templates
``sentinel-findings@ilm`` / ``sentinel-events@ilm`` that attach them; the age is taken from
the day in the index name (``index.lifecycle.parse_origination_date``), so replayed old
captures age correctly. The index templates list those components as
``ignore_missing_component_templates``: on a cluster without ILM they are simply not
installed, and setup says that old indices must then be deleted by hand.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from elasticsearch import ApiError, Elasticsearch

_JSON = {
    "accept": "application/vnd.elasticsearch+json; compatible-with=8",
    "content-type": "application/vnd.elasticsearch+json; compatible-with=8",
}
ILM_COMPONENTS = {"sentinel-findings@ilm", "sentinel-events@ilm"}
NO_ILM_NOTE = (
    "this cluster has no index lifecycle management (ILM): daily sentinel-* indices are not "
    "deleted automatically; delete old ones yourself (e.g. DELETE sentinel-modbus-2024.01.*)"
)
_RETENTION = re.compile(r"^\d+[dhms]$")


@dataclass
class Bundle:
    """The package's templates and policies, by name."""

    components: dict[str, dict[str, Any]]
    index_templates: dict[str, dict[str, Any]]
    policies: dict[str, dict[str, Any]]


def load_bundle() -> Bundle:
    folder = resources.files("sentinel.es") / "templates"
    bundle = Bundle({}, {}, {})
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        name = entry.name
        for suffix, target in (
            (".component.json", bundle.components),
            (".index.json", bundle.index_templates),
            (".ilm.json", bundle.policies),
        ):
            if name.endswith(suffix):
                target[name.removesuffix(suffix)] = json.loads(entry.read_text("utf-8"))
    return bundle


def merged_mappings(bundle: Bundle, index_template: str) -> dict[str, Any]:
    """The properties an index created from ``index_template`` gets (components merged)."""
    merged: dict[str, Any] = {}
    for comp in bundle.index_templates[index_template]["composed_of"]:
        body = bundle.components.get(comp)
        if body is None:
            continue
        props = body["template"].get("mappings", {}).get("properties", {})
        _merge(merged, props)
    return merged


def _merge(into: dict[str, Any], props: dict[str, Any]) -> None:
    for key, value in props.items():
        if key in into and "properties" in into[key] and "properties" in value:
            _merge(into[key]["properties"], value["properties"])
        else:
            into[key] = copy.deepcopy(value)


def field_types(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten mapping properties to ``{"source.ip": "ip", ...}`` (multi-fields included)."""
    out: dict[str, str] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out[path] = spec.get("type", "object")
            out.update(field_types(spec["properties"], path + "."))
        else:
            out[path] = spec["type"]
            for sub, subspec in spec.get("fields", {}).items():
                out[f"{path}.{sub}"] = subspec["type"]
    return out


def has_ilm(client: Elasticsearch) -> bool:
    try:
        resp = client.perform_request("GET", "/_ilm/status")
    except ApiError as exc:
        if exc.meta.status in (400, 404, 405, 410):
            return False
        raise
    return isinstance(resp.body, dict) and "operation_mode" in resp.body


@dataclass
class SetupReport:
    ilm: bool
    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, what)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{kind} {name}: {what}" for kind, name, what in self.actions]
        return out + [f"note: {n}" for n in self.notes]


def _installed_version(client: Elasticsearch, kind: str, name: str) -> int | None:
    path = {"component": "_component_template", "index": "_index_template"}[kind]
    try:
        resp = client.perform_request("GET", f"/{path}/{name}")
    except ApiError as exc:
        if exc.meta.status == 404:
            return None
        raise
    key = {"component": "component_templates", "index": "index_templates"}[kind]
    items = resp.body.get(key) or []
    if not items:
        return None
    body = items[0]["component_template" if kind == "component" else "index_template"]
    return int(body.get("version") or 0)


def setup(
    client: Elasticsearch,
    *,
    findings_retention: str = "365d",
    events_retention: str = "30d",
    force: bool = False,
    bundle: Bundle | None = None,
) -> SetupReport:
    """Install the templates (and policies where ILM exists); see the module doc."""
    for value in (findings_retention, events_retention):
        if not _RETENTION.match(value):
            raise ValueError(f"retention must look like 90d, not {value!r}")
    bundle = bundle or load_bundle()
    ilm = has_ilm(client)
    report = SetupReport(ilm)
    if ilm:
        retention = {"sentinel-findings": findings_retention, "sentinel-events": events_retention}
        for name, policy in bundle.policies.items():
            body = copy.deepcopy(policy)
            if name in retention:
                body["phases"]["delete"]["min_age"] = retention[name]
            client.perform_request(
                "PUT",
                f"/_ilm/policy/{name}",
                body={"policy": body},
                headers=_JSON,
            )
            report.actions.append(
                (
                    "ilm policy",
                    name,
                    f"installed (delete after {body['phases']['delete']['min_age']})",
                )
            )
    else:
        report.notes.append(NO_ILM_NOTE)
    for kind, templates, path in (
        ("component", bundle.components, "_component_template"),
        ("index", bundle.index_templates, "_index_template"),
    ):
        for name, body in templates.items():
            if name in ILM_COMPONENTS and not ilm:
                continue
            want = int(body.get("version") or 0)
            have = _installed_version(client, kind, name)
            if have is not None and not force and have >= want:
                what = "up to date" if have == want else f"newer version {have} kept"
                report.actions.append((f"{kind} template", name, what))
                continue
            client.perform_request("PUT", f"/{path}/{name}", body=body, headers=_JSON)
            what = "installed" if have is None else f"updated from version {have}"
            report.actions.append((f"{kind} template", name, f"{what} (version {want})"))
    return report


def templates_missing(client: Elasticsearch, bundle: Bundle | None = None) -> list[str]:
    """Index templates of the package that the cluster lacks (or has in an older version)."""
    bundle = bundle or load_bundle()
    missing = []
    for name, body in bundle.index_templates.items():
        have = _installed_version(client, "index", name)
        if have is None or have < int(body.get("version") or 0):
            missing.append(name)
    return missing
