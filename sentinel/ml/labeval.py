"""The lab evaluation of learned baselines, per site (used by CI and by ``bench/bench_ml.py``).

For one lab site, in ``workdir``:

1. ``train_minutes`` of clean traffic (``sentinel lab synth``, no scenario) is the training
   capture; ``sentinel model train`` splits it in time: the last ``calibration_fraction``
   calibrates, the rest trains;
2. each of ``seeds`` test captures is ``test_minutes`` of traffic with *every* lab scenario,
   from another seed and later in time than the training capture;
3. an optional ``clean_minutes`` capture without attacks, later still, measures false alarms
   over a longer stretch of normal traffic;
4. every capture is evaluated with ``sentinel.ml.evaluate`` (the ``ml_anomaly`` findings
   only), and the figures are summed over the captures: recall per attack type (hits over
   attacks), false alarms per hour of normal traffic, median time to detect, precision.

Nothing here is tuned on the test captures: they are generated after the model is saved.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from sentinel.ml.evaluate import TALKER_CHECKS, TARGETS, evaluate
from sentinel.ml.settings import MLSettings

HOUR = 3600


def run_site(
    site_name: str,
    workdir: str | Path,
    train_minutes: float = 300.0,
    test_minutes: float = 60.0,
    seeds: int = 1,
    clean_minutes: float = 0.0,
    settings: MLSettings | None = None,
    seed: int = 1,
) -> dict[str, Any]:
    """Train on ``site_name`` and evaluate (see the module docstring); returns the figures."""
    from sentinel.lab.config import load_site
    from sentinel.lab.scenarios import get_scenarios, load_scenarios
    from sentinel.lab.synth import DEFAULT_START, synthesize
    from sentinel.ml.persist import load_model, save_model
    from sentinel.ml.train import train_model

    settings = settings or MLSettings()
    site = load_site(site_name)
    config = site.config
    work = Path(workdir) / site_name
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    train = work / "train"
    synthesize(site, train_minutes, [], seed * 1000 + 1, train, start=DEFAULT_START)
    timings["synthesise_training_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model = train_model([str(train / "capture.pcap")], config, settings)
    save_model(model, work / "model")
    timings["train_s"] = time.perf_counter() - t
    model = load_model(work / "model")
    after = DEFAULT_START + int(train_minutes * 60) + HOUR
    captures = []
    scenarios = get_scenarios(list(load_scenarios()))
    for i in range(seeds):
        d = work / f"test{i}"
        synthesize(
            site,
            test_minutes,
            scenarios,
            seed * 1000 + 100 + i,
            d,
            start=after + i * int(test_minutes * 60 + HOUR),
        )
        captures.append(d)
    if clean_minutes:
        d = work / "clean"
        synthesize(
            site,
            clean_minutes,
            [],
            seed * 1000 + 200,
            d,
            start=after + seeds * int(test_minutes * 60 + HOUR),
        )
        (d / "labels.jsonl").write_text("", encoding="utf-8")
        captures.append(d)
    t = time.perf_counter()
    reports = [
        evaluate(model, str(d / "capture.pcap"), str(d / "labels.jsonl"), config, settings)
        for d in captures
    ]
    timings["evaluate_s"] = time.perf_counter() - t
    out = combine(reports)
    out["site"] = site_name
    out["period_s"] = site.lab.hmi.period
    out["training"] = {
        "hours": model.report["training_hours"],
        "calibration_hours": model.report["calibration_hours"],
        "channels": [
            {k: c[k] for k in ("channel", "requests", "training_windows", "scorer", "armed")}
            for c in model.report["channels"]
        ],
        "disarmed": model.report["disarmed"],
        "warnings": model.report["warnings"],
    }
    out["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return out


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures summed over several evaluated captures."""
    hits: dict[str, int] = {}
    deep: dict[str, int] = {}
    totals: dict[str, int] = {}
    ttd: list[float] = []
    ttd_by_type: dict[str, list[float]] = {}
    missed: list[str] = []
    alerts = true_alerts = false_alarms = unattributed = 0
    normal_hours = 0.0
    for r in reports:
        for a in r["attacks"]:
            beyond = bool(set(a["checks"]) - TALKER_CHECKS)
            for t in a["types"]:
                totals[t] = totals.get(t, 0) + 1
                hits[t] = hits.get(t, 0) + a["detected"]
                deep[t] = deep.get(t, 0) + beyond
                if a["detected"]:
                    ttd_by_type.setdefault(t, []).append(a["time_to_detect_s"])
            if a["detected"]:
                ttd.append(a["time_to_detect_s"])
            else:
                missed.append(f"{r['capture']}:{a['scenario']}")
        alerts += r["alerts"]
        true_alerts += round((r["precision"] or 0.0) * r["alerts"])
        false_alarms += r["false_alarms"]
        unattributed += r["unattributed_alerts"]
        normal_hours += r["normal_hours"]
    return {
        "recall": {t: round(hits[t] / totals[t], 4) for t in sorted(totals)},
        "attacks": {t: totals[t] for t in sorted(totals)},
        "recall_without_talker_checks": {t: round(deep[t] / totals[t], 4) for t in sorted(totals)},
        "false_alarms_per_hour": round(false_alarms / normal_hours, 4) if normal_hours else None,
        "false_alarms": false_alarms,
        "normal_hours": round(normal_hours, 3),
        "median_time_to_detect_s": round(statistics.median(ttd), 6) if ttd else None,
        "median_time_to_detect_s_by_type": {
            t: round(statistics.median(v), 6) for t, v in sorted(ttd_by_type.items())
        },
        "precision": round(true_alerts / alerts, 4) if alerts else None,
        "alerts": alerts,
        "unattributed_alerts": unattributed,
        "missed": missed,
        "targets": TARGETS,
    }


def meets_targets(figures: dict[str, Any], max_false_alarms_per_hour: float = 1.0) -> list[str]:
    """What misses the issue's targets (empty: all met)."""
    problems = []
    for t, target in TARGETS.items():
        r = figures["recall"].get(t)
        if r is not None and r < target:
            problems.append(f"recall {t} {r:.2f} < {target:.2f}")
    fa = figures["false_alarms_per_hour"]
    if fa is not None and fa > max_false_alarms_per_hour:
        problems.append(f"false alarms {fa:.3f}/h > {max_false_alarms_per_hour}/h")
    ttd = figures["median_time_to_detect_s"]
    if ttd is None or ttd > 2 * figures.get("period_s", 1.0):
        problems.append(f"median time to detect {ttd} s > two polling periods")
    return problems
