"""Findings: the one alert shape used everywhere (JSONL, Elasticsearch, playbooks).

``Finding.to_ecs`` renders the Elastic Common Schema document described in ARCHITECTURE.md.
Its ``_id`` is a hash of what identifies the finding (rule, flow, first frame), so re-sending a
finding never duplicates it. ``Aggregator`` folds repeats of the same rule between the same
hosts within a window of packet time into one finding with a count, first and last seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sentinel.events import ConnId

# Elastic Security's severity scale (risk score of low / medium / high / critical).
SEVERITY = {"low": 21, "medium": 47, "high": 73, "critical": 99}
ATTACK_ICS = "MITRE ATT&CK for ICS"
ECS_VERSION = "8.11.0"
ATTACK_URL = "https://attack.mitre.org/techniques/{}/"


@dataclass(frozen=True)
class Technique:
    """A MITRE ATT&CK for ICS technique and the tactic it serves here."""

    id: str
    name: str
    tactic: str


@dataclass(frozen=True)
class Finding:
    ts: float
    rule_id: str
    rule_name: str
    ruleset: str
    severity: str  # low | medium | high | critical
    technique: Technique
    message: str
    detector: str
    conn: ConnId | None = None
    uid: str | None = None
    transport: str = "tcp"
    protocol: str = "modbus"
    dataset: str = "sentinel.modbus"
    frame: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    count: int = 1
    last_ts: float | None = None
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def id(self) -> str:
        key = f"{self.rule_id}|{self.uid}|{self.conn}|{self.ts!r}|{self.frame}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def to_ecs(self, observer: str, site: dict[str, str] | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "@timestamp": _iso(self.ts),
            "ecs": {"version": ECS_VERSION},
            "event": {
                "id": self.id,  # the document _id in Elasticsearch
                "kind": "alert",
                "category": ["network", "intrusion_detection"],
                "type": ["info"],
                "severity": SEVERITY[self.severity],
                "dataset": self.dataset,
                "module": "sentinel",
                "start": _iso(self.ts),
                "end": _iso(self.last_ts if self.last_ts is not None else self.ts),
            },
            "rule": {
                "id": self.rule_id,
                "name": self.rule_name,
                "ruleset": self.ruleset,
                "reference": self.reference or ATTACK_URL.format(self.technique.id),
            },
            "threat": {
                "framework": ATTACK_ICS,
                "technique": {
                    "id": [self.technique.id],
                    "name": [self.technique.name],
                    "reference": [ATTACK_URL.format(self.technique.id)],
                },
                "tactic": {"name": [self.technique.tactic]},
            },
            "network": {"transport": self.transport, "protocol": self.protocol},
            "observer": {"name": observer, "type": "ids", "vendor": "Sentinel"},
            "message": self.message,
            "sentinel": {
                "detector": self.detector,
                "severity_label": self.severity,
                "count": self.count,
                "evidence": self.evidence,
            },
        }
        if self.uid:
            doc["sentinel"]["flow_uid"] = self.uid
        if self.frame is not None:
            doc["sentinel"]["frame"] = self.frame
        if self.conn is not None:
            c = self.conn
            doc["source"] = {"ip": c.orig_h, "port": c.orig_p}
            doc["destination"] = {"ip": c.resp_h, "port": c.resp_p}
            doc["related"] = {"ip": sorted({c.orig_h, c.resp_h})}
        if site:
            doc["labels"] = dict(site)
        return doc


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Aggregator:
    """Fold repeats (same rule, same source, destination and port) within ``window`` seconds.

    Offline (the default), a finding is emitted once its window has closed, with its final
    count. ``immediate`` (a live sensor) emits the first occurrence at once, so that playbooks
    act within seconds, then, when the window closes, the same finding (same id) again with
    its count if it repeated: sinks keyed by the id (Elasticsearch) hold the latest count.
    """

    def __init__(
        self, emit: Callable[[Finding], None], window: float = 60.0, immediate: bool = False
    ) -> None:
        self.emit = emit
        self.window = window
        self.immediate = immediate
        self._open: dict[tuple, Finding] = {}

    def add(self, finding: Finding) -> None:
        c = finding.conn
        key = (
            finding.rule_id,
            c.orig_h if c else None,
            c.resp_h if c else None,
            c.resp_p if c else None,
        )
        current = self._open.get(key)
        if current is not None and finding.ts - current.ts <= self.window:
            self._open[key] = replace(current, count=current.count + 1, last_ts=finding.ts)
            return
        if current is not None:
            self._close(current)
        self._open[key] = finding
        if self.immediate:
            self.emit(finding)

    def _close(self, finding: Finding) -> None:
        if not self.immediate or finding.count > 1:
            self.emit(finding)

    def expire(self, now: float) -> None:
        for key in [k for k, f in self._open.items() if now - f.ts > self.window]:
            self._close(self._open.pop(key))

    def flush(self) -> None:
        for finding in sorted(self._open.values(), key=lambda f: (f.ts, f.rule_id)):
            self._close(finding)
        self._open.clear()

    def __iter__(self) -> Iterator[Finding]:
        return iter(self._open.values())
