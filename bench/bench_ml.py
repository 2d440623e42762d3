#!/usr/bin/env python3
"""Benchmark and larger evaluation of the ML anomaly detector (``sentinel.ml``).

``python bench/bench_ml.py [speed] ...``: the pipeline with ML scoring enabled against without
(target: at most 10 % slower). ``python bench/bench_ml.py eval ...``: the lab evaluation of
CI (``tests/ml/test_evaluation.py``) at a larger scale: more seeds, a longer clean capture.

Speed
-----

Synthesises a site's traffic with the lab (``sentinel lab synth``): ``--train-minutes`` of
clean traffic to train a model on, and ``--minutes`` of traffic with every attack scenario to
analyse. Then runs the real pipeline on the second capture, alternating:

* ``without``: every built-in detector (the ``ml_anomaly`` one inert: no model), as
  ``sentinel analyze --config SITE`` runs;
* ``with``: the same, plus the ML detector with the trained model, as
  ``sentinel analyze --config SITE --model MODEL`` runs.

Each run gets a fresh output directory; time is measured as process CPU time
(``time.process_time``, this process only: tshark workers or other processes on the machine do
not count) and as wall time. The best (lowest) of ``--repeat`` runs of each is reported, and
the overhead is ``with / without - 1`` on CPU time. It also replays the recorded events through
the scoring engine alone, which is the detector's own cost without the pipeline around it.

Usage::

    python bench/bench_ml.py                     # hospital, 60 min analysed, 15 repeats
    python bench/bench_ml.py speed --site energy --minutes 120 --repeat 7 --json
    python bench/bench_ml.py speed --capture site.pcap --model site.model --config site.yaml

Evaluation
----------
Per site (``sentinel.ml.labeval``): train on ``--train-minutes`` of clean traffic (the last
fifth calibrates), then evaluate on ``--seeds`` captures of ``--test-minutes`` with every lab
scenario and on ``--clean-minutes`` of clean traffic, all later in time and from other seeds;
prints recall per attack type (and without the new-talker checks), false alarms per hour of
normal traffic, median time to detect, precision, and whether the issue's targets are met::

    python bench/bench_ml.py eval                # 3 sites x 5 seeds + 24 h clean each
    python bench/bench_ml.py eval --sites hospital --seeds 2 --clean-minutes 120 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _pipeline_run(config: Any, capture: str, detectors: list[Any]) -> tuple[float, float, int]:
    from sentinel.pipeline import Pipeline

    with tempfile.TemporaryDirectory(prefix="bench-ml-") as out:
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        result = Pipeline(config, out, detectors).run(capture)
        return time.process_time() - cpu, time.perf_counter() - wall, result.stats["packets"]


def _engine_only(config: Any, capture: str, model: Any, repeat: int) -> dict[str, Any]:
    """The engine's cost on the recorded events of ``capture``, without the pipeline."""
    from sentinel.ml.engine import Engine
    from sentinel.pipeline import Pipeline
    from sentinel.pipeline.detector import Detector

    class Record(Detector):
        id = "bench_record"

        def __init__(self) -> None:
            self.events: list[tuple[str, Any]] = []

        def on_modbus(self, msg: Any) -> None:
            self.events.append(("modbus", msg))

        def on_anomaly(self, event: Any) -> None:
            self.events.append(("anomaly", event))

        def on_flow_end(self, flow: dict) -> None:
            self.events.append(("flow_end", flow))

        def on_tick(self, now: float) -> None:
            self.events.append(("tick", now))

    rec = Record()
    with tempfile.TemporaryDirectory(prefix="bench-ml-") as out:
        Pipeline(config, out, [rec]).run(capture)
    times = []
    for _ in range(repeat):
        engine = Engine(model)
        calls = [(getattr(engine, kind), arg) for kind, arg in rec.events]
        gc.collect()
        t = time.process_time()
        for call, arg in calls:
            call(arg)
        times.append(time.process_time() - t)
    messages = sum(1 for kind, _ in rec.events if kind == "modbus")
    return {
        "events": len(rec.events),
        "modbus_messages": messages,
        "cpu_s": round(min(times), 4),
        "us_per_message": round(1e6 * min(times) / max(messages, 1), 3),
        # windows whose score the forest computed, and those its bounds decided
        "windows_scored": engine.stats.get("windows_scored", 0),
        "windows_bounded": engine.stats.get("windows_bounded", 0),
    }


def evaluation(argv: list[str]) -> int:
    from sentinel.ml.labeval import meets_targets, run_site

    ap = argparse.ArgumentParser(prog="bench_ml.py eval", description="lab evaluation")
    ap.add_argument("--sites", default="hospital,energy,transport")
    ap.add_argument("--seeds", type=int, default=5, help="attack captures per site")
    ap.add_argument("--train-minutes", type=float, default=300.0)
    ap.add_argument("--test-minutes", type=float, default=60.0)
    ap.add_argument("--clean-minutes", type=float, default=1440.0)
    ap.add_argument("--seed", type=int, default=2, help="base seed (CI uses 1)")
    ap.add_argument("--keep", help="keep the captures and models in this directory")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ml-eval-") as tmp:
        work = args.keep or tmp
        for site in args.sites.split(","):
            figures = run_site(
                site,
                work,
                args.train_minutes,
                args.test_minutes,
                args.seeds,
                args.clean_minutes,
                seed=args.seed,
            )
            figures["unmet_targets"] = meets_targets(figures)
            results[site] = figures
            if not args.json:
                _print_site(figures)
    if args.json:
        print(json.dumps(results))
    return 0 if all(not r["unmet_targets"] for r in results.values()) else 1


def _print_site(f: dict[str, Any]) -> None:
    print(
        f"{f['site']}: {f['training']['hours']:.2f} h training, "
        f"{f['training']['calibration_hours']:.2f} h calibration; "
        f"{f['normal_hours']:.1f} h of normal traffic evaluated"
    )
    print(
        f"  {'attack type':22s} {'attacks':>7s} {'recall':>7s} {'w/o talker':>10s} "
        f"{'median TTD s':>12s}"
    )
    for t, r in f["recall"].items():
        ttd = f["median_time_to_detect_s_by_type"].get(t)
        print(
            f"  {t:22s} {f['attacks'][t]:7d} {100 * r:6.1f}% "
            f"{100 * f['recall_without_talker_checks'][t]:9.1f}% "
            f"{'-' if ttd is None else f'{ttd:.4f}':>12s}"
        )
    print(
        f"  false alarms {f['false_alarms']} ({f['false_alarms_per_hour']} per hour), "
        f"precision {f['precision']}, median time to detect {f['median_time_to_detect_s']} s, "
        f"{f['unattributed_alerts']} alert(s) during attacks on other hosts"
    )
    print(f"  targets: {'all met' if not f['unmet_targets'] else '; '.join(f['unmet_targets'])}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":
        return evaluation(argv[1:])
    if argv and argv[0] == "speed":
        argv = argv[1:]
    ap = argparse.ArgumentParser(prog="bench_ml.py speed", description="ML scoring overhead")
    ap.add_argument("--site", default="hospital", help="lab site (hospital, energy, transport)")
    ap.add_argument("--minutes", type=float, default=60.0, help="minutes of traffic analysed")
    ap.add_argument("--train-minutes", type=float, default=300.0, help="minutes to train on")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=15, help="alternating runs of each")
    ap.add_argument("--capture", help="analyse this capture instead of a synthesised one")
    ap.add_argument("--model", help="use this model instead of training one")
    ap.add_argument("--config", help="config file (default: the site's lab config)")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    args = ap.parse_args(argv)

    import sentinel.detectors  # noqa: F401 - registers the built-in detectors
    from sentinel._native import compiled
    from sentinel.config import load_config
    from sentinel.lab.config import load_site
    from sentinel.lab.scenarios import get_scenarios, load_scenarios
    from sentinel.lab.synth import DEFAULT_START, synthesize
    from sentinel.ml.detector import MLDetector
    from sentinel.ml.persist import load_model, save_model
    from sentinel.ml.settings import ml_settings
    from sentinel.ml.train import train_model
    from sentinel.pipeline.detector import REGISTRY

    site = load_site(args.site)
    config = load_config(args.config) if args.config else site.config
    with tempfile.TemporaryDirectory(prefix="bench-ml-data-") as tmp:
        work = Path(tmp)
        capture = args.capture
        if capture is None:
            synthesize(
                site,
                args.minutes,
                get_scenarios(list(load_scenarios())),
                args.seed,
                work / "test",
                start=DEFAULT_START + 24 * 3600,
            )
            capture = str(work / "test" / "capture.pcap")
        if args.model:
            model = load_model(args.model)
            train_s = None
        else:
            synthesize(site, args.train_minutes, [], args.seed + 1, work / "train")
            t = time.perf_counter()
            model = train_model([str(work / "train" / "capture.pcap")], config, ml_settings(config))
            train_s = round(time.perf_counter() - t, 2)
            save_model(model, work / "model")
            model = load_model(work / "model")
        runs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        packets = 0
        for _ in range(args.repeat):
            for name in ("without", "with"):
                dets = [cls(config) for cls in REGISTRY.values()]
                if name == "with":
                    dets.append(MLDetector(config, model=model))
                cpu, wall, packets = _pipeline_run(config, capture, dets)
                runs[name].append((cpu, wall))
        engine = _engine_only(config, capture, model, args.repeat)
    best = {k: (min(c for c, _ in v), min(w for _, w in v)) for k, v in runs.items()}
    med = {k: statistics.median(c for c, _ in v) for k, v in runs.items()}
    report = {
        "site": args.site,
        "capture": capture if args.capture else f"synthesised, {args.minutes:g} min, all scenarios",
        "packets": packets,
        "repeat": args.repeat,
        "compiled": compiled(),  # docs/native.md: the mypyc-built modules, or their sources
        "train_seconds": train_s,
        "without": {
            "cpu_s": round(best["without"][0], 3),
            "wall_s": round(best["without"][1], 3),
            "median_cpu_s": round(med["without"], 3),
        },
        "with": {
            "cpu_s": round(best["with"][0], 3),
            "wall_s": round(best["with"][1], 3),
            "median_cpu_s": round(med["with"], 3),
        },
        "overhead_cpu": round(best["with"][0] / best["without"][0] - 1, 4),
        "overhead_cpu_median": round(med["with"] / med["without"] - 1, 4),
        "packets_per_second_with": round(packets / best["with"][0]),
        "engine_only": engine,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    kind = "compiled" if report["compiled"] else "pure-Python"
    print(
        f"site {args.site}: {report['capture']}, {packets:,} packets, best of {args.repeat}, "
        f"{kind} modules"
    )
    for name in ("without", "with"):
        r = report[name]
        print(
            f"  {name:8s} CPU {r['cpu_s']:7.3f} s (median {r['median_cpu_s']:.3f})"
            f"  wall {r['wall_s']:7.3f} s"
        )
    print(
        f"  overhead of ML scoring: {100 * report['overhead_cpu']:.1f} % CPU (best runs), "
        f"{100 * report['overhead_cpu_median']:.1f} % (medians); target at most 10 %"
    )
    e = report["engine_only"]
    print(
        f"  engine alone: {e['cpu_s']:.3f} s CPU for {e['modbus_messages']:,} Modbus messages "
        f"({e['us_per_message']} us per message, windows and findings included); windows "
        f"scored {e['windows_scored']:,}, decided by the score bounds {e['windows_bounded']:,}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
