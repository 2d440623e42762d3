"""Building the response side from a config: services, playbooks, the runner.

``runner_from_config(config, ...)`` is what ``sentinel run`` (and ``sentinel analyze`` with
playbooks) calls: it loads the configured playbooks (all problems at once, located), checks
their targets against ``actions:``, and wires the services:

- **protected addresses** for ``firewall.block``: every declared asset, every allowed master
  of an asset, and ``actions.firewall.never_block``;
- **documents** (cases, asset tags, audit copies): Elasticsearch when the config has an
  enabled ``sinks.elasticsearch`` section with a URL (or ``SENTINEL_ES_URL``), else JSONL
  files in the state folder;
- the **approval store** and the **audit log** in the state folder (``playbooks.state_dir``).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sentinel.errors import ConfigError, SentinelError
from sentinel.pipeline.engine import SiteLabels
from sentinel.privacy.sensor import SensorPrivacy
from sentinel.respond.actions import ScanQueue, Services
from sentinel.respond.approvals import ApprovalStore
from sentinel.respond.audit import AuditLog
from sentinel.respond.metrics import ServiceMetrics
from sentinel.respond.model import LoadResult, check_targets, load_playbooks
from sentinel.respond.records import DocumentStore, EsDocumentStore, JsonlDocumentStore
from sentinel.respond.ring import PacketRing
from sentinel.respond.runner import PlaybookRunner
from sentinel.respond.settings import ActionSettings, PlaybookSettings, section

log = logging.getLogger(__name__)


def protected_networks(config: Any, actions: ActionSettings) -> tuple[Any, ...]:
    nets: list[Any] = []
    for asset in getattr(config, "assets", []) or []:
        nets.append(ipaddress.ip_network(asset.address))
        nets += [ipaddress.ip_network(m) for m in asset.allowed_masters]
    nets += [ipaddress.ip_network(n) for n in actions.firewall.never_block]
    return tuple(dict.fromkeys(nets))


def document_store(config: Any, state: Path, es_client: Any = None) -> DocumentStore:
    """Elasticsearch when configured (or ``es_client`` given), else JSONL in ``state``."""
    if es_client is not None:
        return EsDocumentStore(es_client)
    try:
        from sentinel.es.config import resolve, sink_section
    except ImportError:  # the Elasticsearch extra is not installed
        return JsonlDocumentStore(state / "documents")
    es_section = sink_section(config)
    if es_section is not None and es_section.enabled:
        try:
            settings = resolve(es_section)
        except SentinelError as exc:
            log.warning("cases and audit go to JSONL: %s", exc)
        else:
            from sentinel.es.client import connect

            return EsDocumentStore(connect(settings), settings)
    actions: ActionSettings = section(config, "actions")
    base = Path(actions.cases.jsonl).parent if actions.cases.jsonl else state / "documents"
    return JsonlDocumentStore(base)


def load_configured(config: Any) -> LoadResult:
    """The config's playbooks, with target problems added; raises nothing."""
    settings: PlaybookSettings = section(config, "playbooks")
    actions: ActionSettings = section(config, "actions")
    result = load_playbooks(settings.paths, settings.builtin)
    for loaded in result.playbooks:
        result.problems += check_targets(loaded, actions)
    return result


def runner_from_config(
    config: Any,
    *,
    emit: Callable[[dict[str, Any]], None] | None = None,
    metrics: ServiceMetrics | None = None,
    ring: PacketRing | None = None,
    scans: ScanQueue | None = None,
    es_client: Any = None,
    synchronous: bool = False,
    approval_poll: float | None = 1.0,
) -> PlaybookRunner:
    """The configured runner; a playbook problem refuses the whole set (``ConfigError``)."""
    settings: PlaybookSettings = section(config, "playbooks")
    actions: ActionSettings = section(config, "actions")
    result = load_configured(config)
    if result.problems:
        raise ConfigError(result.problems)
    state = settings.state()
    state.mkdir(parents=True, exist_ok=True)
    documents = document_store(config, state, es_client)
    jobs = section(config, "jobs")
    services = Services(
        settings=actions,
        observer=config.observer.name,
        state=state,
        documents=documents,
        ring=ring,
        scans=scans,
        scan_jobs=frozenset(n for n, j in jobs.items() if j.type == "modbus.inventory"),
        protected=protected_networks(config, actions),
        site_of=SiteLabels(config).lookup,
        privacy=SensorPrivacy.from_config(config),  # None unless pseudonymization is on
    )
    audit_store = documents if isinstance(documents, EsDocumentStore) else None
    audit = AuditLog(settings.audit_path(), audit_store, settings.audit_index)
    approvals = ApprovalStore(settings.approvals_path())
    return PlaybookRunner(
        result.playbooks,
        services,
        audit,
        approvals,
        settings,
        emit=emit,
        metrics=metrics,
        synchronous=synchronous,
        approval_poll=approval_poll,
    )
