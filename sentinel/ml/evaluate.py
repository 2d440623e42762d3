"""``sentinel model eval``: the detector's own findings against the lab's ground truth.

The capture goes through the real pipeline with only the ``ml_anomaly`` detector (other
detectors' findings never count). Each finding (one document after the pipeline's folding of
repeats) is an *alert* at its ``@timestamp``, which for this detector is when it raised it.

- An alert *belongs to* an attack when it involves the attack's target or attacker (source or
  destination address) and was raised between the attack's start and ``grace`` seconds after
  its end (detectors report at the end of a window or a flow).
- An attack is *detected* when an alert belongs to it (event level: one attack, one
  outcome; no point-adjust, and alerts before the attack started never count). Its time to
  detect is from its start to the first such alert.
- *Recall* per attack type: detected attacks / attacks of that type (``ATTACK_TYPES``; an
  attack from a host the model's baseline never saw is also of type ``new-talker``).
- *False alarms*: alerts raised during *normal traffic* (outside every attack interval
  extended by ``grace``); per hour of normal traffic, the observed span minus those intervals.
  An alert raised during an attack but involving neither its attacker nor its target (the
  HMI losing its rhythm on another PLC while one is silenced) is not in normal traffic, but
  it belongs to no attack either: it counts against precision.
- *Precision*: alerts that belong to an attack / all alerts.

Every lab attack except the man in the middle comes from the lab's attacker host, which a
baseline has never seen, so the new-talker checks alone would find them. The report also gives
``recall_without_talker_checks``: the attacks that checks other than talker and connection
novelty found as well (sequences, functions, values, provenance, timing, replay,
windows, anomalies).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass
from typing import Any

from sentinel.config import Config
from sentinel.lab.labels import Label, read_labels
from sentinel.ml.model import Model
from sentinel.ml.rules import DETECTOR_ID
from sentinel.ml.settings import MLSettings
from sentinel.sinks.base import Sink

GRACE = 30.0

# Attack types of the lab's scenarios (``lab/scenarios``). Several types per scenario allowed.
ATTACK_TYPES: dict[str, tuple[str, ...]] = {
    "recon-address-sweep": ("reconnaissance",),
    "recon-device-identification": ("reconnaissance",),
    "recon-function-code-sweep": ("reconnaissance",),
    "recon-port-sweep": ("reconnaissance",),
    "recon-unit-id-sweep": ("reconnaissance",),
    "write-coil": ("unauthorized-write",),
    "diag-restart-communications": ("unauthorized-write",),
    "diag-force-listen-only": ("unauthorized-write",),
    "modbus-flood": ("flood",),
    "syn-flood": ("flood",),
    "malformed-frames": ("malformed",),
    "write-setpoint-out-of-range": ("out-of-range",),
    "replay-write": ("replay",),
    "write-setpoint-in-range": ("in-range-tampering",),
    "mitm-arp-spoof": ("in-range-tampering", "timing"),
}
# Scenarios whose traffic the attacker sends from its own address (the man in the middle
# only forwards other hosts' frames).
OWN_ADDRESS = frozenset(ATTACK_TYPES) - {"mitm-arp-spoof"}
# Checks that only say "this host never talked to that one": every lab attack but the man in
# the middle comes from a new host, so recall without them shows what the other checks see.
TALKER_CHECKS = frozenset({"talker", "connection"})
# The targets per type (recall at least).
TARGETS = {
    "reconnaissance": 1.0,
    "new-talker": 1.0,
    "unauthorized-write": 1.0,
    "flood": 1.0,
    "malformed": 1.0,
    "out-of-range": 0.9,
    "replay": 0.9,
    "in-range-tampering": 0.7,
    "timing": 0.7,
}


@dataclass(frozen=True)
class Alert:
    ts: float
    ips: frozenset[str]
    rule: str
    check: str


class _Collect(Sink):
    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def finding(self, document: dict[str, Any]) -> None:
        self.docs.append(document)


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def alerts_of(docs: list[dict[str, Any]]) -> list[Alert]:
    """The ml_anomaly alerts among ECS finding documents."""
    out = []
    for doc in docs:
        if doc.get("sentinel", {}).get("detector") != DETECTOR_ID:
            continue
        ips = set(doc.get("related", {}).get("ip", []))
        for side in ("source", "destination"):
            if isinstance(doc.get(side), dict) and doc[side].get("ip"):
                ips.add(doc[side]["ip"])
        check = str(doc.get("sentinel", {}).get("evidence", {}).get("check", ""))
        out.append(Alert(_epoch(doc["@timestamp"]), frozenset(ips), doc["rule"]["id"], check))
    return sorted(out, key=lambda a: a.ts)


def attack_types(label: Label, known_hosts: set[str]) -> tuple[str, ...]:
    types = ATTACK_TYPES.get(label.scenario, (label.scenario,))
    if label.scenario in OWN_ADDRESS and label.attacker not in known_hosts:
        types = (*types, "new-talker")
    return types


def score(
    alerts: list[Alert],
    labels: list[Label],
    span: tuple[float, float],
    known_hosts: set[str],
    grace: float = GRACE,
) -> dict[str, Any]:
    """The evaluation figures (see the module docstring)."""
    first: dict[int, float] = {}
    by_check: dict[int, set[str]] = {}
    false_alarms = 0
    unattributed = 0
    true_alerts = 0
    for a in alerts:
        during = [i for i, lab in enumerate(labels) if lab.start <= a.ts <= lab.end + grace]
        owners = [i for i in during if labels[i].target in a.ips or labels[i].attacker in a.ips]
        if not owners:
            if during:
                unattributed += 1
            else:
                false_alarms += 1
            continue
        true_alerts += 1
        for i in owners:
            if i not in first:
                first[i] = a.ts - labels[i].start
            by_check.setdefault(i, set()).add(a.check)
    start, end = span
    attack_time = _union([(max(lab.start, start), min(lab.end + grace, end)) for lab in labels])
    normal_hours = max(end - start - attack_time, 0.0) / 3600.0
    totals: dict[str, int] = {}
    hits: dict[str, int] = {}
    deep: dict[str, int] = {}  # detected by a check other than the talker ones
    attacks = []
    for i, lab in enumerate(labels):
        types = attack_types(lab, known_hosts)
        beyond = bool(by_check.get(i, set()) - TALKER_CHECKS)
        for t in types:
            totals[t] = totals.get(t, 0) + 1
            hits[t] = hits.get(t, 0) + (i in first)
            deep[t] = deep.get(t, 0) + beyond
        attacks.append(
            {
                "scenario": lab.scenario,
                "types": list(types),
                "start": lab.start,
                "target": lab.target,
                "detected": i in first,
                "time_to_detect_s": round(first[i], 6) if i in first else None,
                "checks": sorted(by_check.get(i, ())),
            }
        )
    ttd = [first[i] for i in first]
    return {
        "recall": {t: round(hits[t] / totals[t], 4) for t in sorted(totals)},
        "recall_without_talker_checks": {t: round(deep[t] / totals[t], 4) for t in sorted(totals)},
        "false_alarms_per_hour": round(false_alarms / normal_hours, 4) if normal_hours else None,
        "median_time_to_detect_s": round(statistics.median(ttd), 6) if ttd else None,
        "precision": round(true_alerts / len(alerts), 4) if alerts else None,
        "attacks": attacks,
        "alerts": len(alerts),
        "false_alarms": false_alarms,
        "unattributed_alerts": unattributed,
        "normal_hours": round(normal_hours, 6),
        "grace_s": grace,
    }


def _union(intervals: list[tuple[float, float]]) -> float:
    total = 0.0
    cur_lo = cur_hi = None
    for lo, hi in sorted(i for i in intervals if i[1] > i[0]):
        if cur_hi is None or lo > cur_hi:
            if cur_hi is not None:
                total += cur_hi - cur_lo  # type: ignore[operator]
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    if cur_hi is not None:
        total += cur_hi - cur_lo  # type: ignore[operator]
    return total


def evaluate(
    model: Model,
    capture: str,
    labels_path: str,
    config: Config,
    settings: MLSettings | None = None,
    out_dir: str | None = None,
    grace: float = GRACE,
) -> dict[str, Any]:
    """Run ``capture`` through the pipeline with the ML detector and score its alerts."""
    from sentinel.ml.detector import MLDetector
    from sentinel.pipeline import Pipeline

    labels = read_labels(labels_path)
    detector = MLDetector(config, model=model, settings=settings)
    collect = _Collect()
    if out_dir is not None:
        result = Pipeline(config, out_dir, [detector], [collect]).run(capture)
    else:
        with tempfile.TemporaryDirectory(prefix="sentinel-eval-") as tmp:
            result = Pipeline(config, tmp, [detector], [collect]).run(capture)
    span = _span(capture, labels_path, result.stats)
    hosts = {h for p in model.baseline.get("flow_pairs", []) for h in p.split("|")[:2]}
    hosts |= {h for p in model.baseline.get("pairs", []) for h in p.split("|")}
    report = score(alerts_of(collect.docs), labels, span, hosts, grace)
    report["capture"] = os.path.basename(capture)
    report["span"] = list(span)
    return report


def _span(capture: str, labels_path: str, stats: dict[str, Any]) -> tuple[float, float]:
    """The observed time: the lab's run.json beside the labels, else the capture's packets."""
    import json
    from pathlib import Path

    lp = Path(labels_path)
    stem = lp.name.removesuffix(".jsonl").removesuffix(".labels")
    run = lp.with_name("run.json" if lp.name == "labels.jsonl" else f"{stem}.run.json")
    if run.is_file():
        try:
            info = json.loads(run.read_text(encoding="utf-8"))
            return float(info["start"]), float(info["end"])
        except (ValueError, KeyError, TypeError):
            pass
    from sentinel.ml.train import capture_info

    info_c = capture_info(capture)
    return info_c.first, info_c.last
