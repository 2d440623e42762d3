"""Scoring a run: Sentinel's findings against the ground-truth labels.

A finding has a first and a last occurrence (``event.start``, ``event.end``: Sentinel folds
repeats of a finding within a minute into one). It belongs to an attack when it involves the
target (``related.ip``, ``source.ip`` or ``destination.ip``), or the attacker and no other
attack's target (attacks may run at the same time from one attacker), and its first or
its last occurrence falls inside the attack's interval (a folded finding that merely spans an
attack, repeating before and after it, says nothing about it); when it falls inside no
attack's interval, it may still belong to an attack that ended less than ``grace`` seconds
before it started (detectors that report at the end of a window). A scenario is detected
when a finding belongs to it; its time to detect is from the attack's start to the first
such finding (zero when that finding began earlier and was still repeating during the
attack). A finding that belongs to no attack is a false positive. Normal hours are the
observed time outside the attack intervals (each extended by ``grace``), so false positives
per hour are ``false_positives / normal_hours`` (``None`` when there was no normal time).

The observed time is, in order of preference: ``--span``; the ``run.json`` written beside
the labels by ``lab synth`` and ``lab record`` (``<name>.run.json`` for ``<name>.labels.jsonl``);
the first and last flow of the run's ``flows.jsonl``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sentinel.errors import Location, SentinelError
from sentinel.lab.labels import Label

GRACE = 60.0  # seconds after an attack's end in which a finding still belongs to it


@dataclass(frozen=True)
class FindingTime:
    start: float
    ips: frozenset[str]
    rule: str
    end: float | None = None

    @property
    def last(self) -> float:
        return self.start if self.end is None else max(self.end, self.start)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_findings(path: str | os.PathLike[str]) -> list[FindingTime]:
    """Findings of a run: its output directory or its ``findings.jsonl``."""
    p = Path(path)
    if p.is_dir():
        p = p / "findings.jsonl"
    out = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SentinelError(f"cannot read findings: {exc.strerror}", Location(str(p))) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            start = _epoch(doc.get("event", {}).get("start") or doc["@timestamp"])
            end_text = doc.get("event", {}).get("end")
            end = _epoch(end_text) if end_text else None
            ips = set(doc.get("related", {}).get("ip", []))
            for key in ("source", "destination"):
                if isinstance(doc.get(key), dict) and doc[key].get("ip"):
                    ips.add(doc[key]["ip"])
            rule = str(doc.get("rule", {}).get("id", ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SentinelError(f"not a finding: {exc}", Location(str(p), n)) from None
        out.append(FindingTime(start, frozenset(ips), rule, end))
    return sorted(out, key=lambda f: f.start)


def observed_span(
    results: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[float, float] | None:
    """The run's observed time (see the module docstring), or None if nothing tells it."""
    lp = Path(labels_path)
    stem = lp.name.removesuffix(".jsonl").removesuffix(".labels")
    candidate = lp.with_name("run.json" if lp.name == "labels.jsonl" else f"{stem}.run.json")
    if candidate.is_file():
        try:
            info = json.loads(candidate.read_text(encoding="utf-8"))
            return float(info["start"]), float(info["end"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SentinelError(f"bad run file: {exc}", Location(str(candidate))) from None
    flows = Path(results) / "flows.jsonl" if Path(results).is_dir() else None
    if flows is not None and flows.is_file():
        first = last = None
        for line in flows.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                ts, end = float(rec["ts"]), float(rec.get("last_ts", rec["ts"]))
            except (ValueError, KeyError, TypeError):
                continue
            first = ts if first is None else min(first, ts)
            last = end if last is None else max(last, end)
        if first is not None and last is not None:
            return first, last
    return None


def _owner(f: FindingTime, labels: list[Label], grace: float) -> list[int]:
    """Indexes of the attacks a finding belongs to (see the module docstring)."""
    targets = {lab.target for lab in labels}
    involved = [
        i
        for i, lab in enumerate(labels)
        if lab.target in f.ips or (lab.attacker in f.ips and not f.ips & (targets - {lab.target}))
    ]
    core = [
        i
        for i in involved
        if labels[i].start <= f.start <= labels[i].end or labels[i].start <= f.last <= labels[i].end
    ]
    if core:
        return core
    return [
        i
        for i in involved
        if labels[i].end < f.start <= labels[i].end + grace
        and not any(lab.start <= f.start <= lab.end for lab in labels)
    ]


def score(
    findings: list[FindingTime],
    labels: list[Label],
    span: tuple[float, float] | None,
    grace: float = GRACE,
) -> dict[str, Any]:
    """The score object of ``sentinel lab score --json``."""
    first: dict[int, float] = {}
    false_positives = 0
    for f in findings:
        owners = _owner(f, labels, grace)
        if not owners:
            false_positives += 1
        for i in owners:
            at = max(f.start, labels[i].start)
            first[i] = min(first.get(i, at), at)
    scenarios = [
        {
            "name": label.scenario,
            "detected": i in first,
            "time_to_detect_s": round(first[i] - label.start, 3) if i in first else None,
        }
        for i, label in enumerate(labels)
    ]
    intervals = _merge([(lab.start, lab.end + grace) for lab in labels])
    normal_hours = None
    if span is not None:
        lo, hi = span
        attack = sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)
        normal_hours = round(max(hi - lo - attack, 0.0) / 3600.0, 6)
    per_hour = round(false_positives / normal_hours, 3) if normal_hours else None
    return {
        "scenarios": scenarios,
        "false_positives": false_positives,
        "false_positives_per_hour": per_hour,
        "normal_hours": normal_hours,
    }


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged
