#!/usr/bin/env python3
"""Benchmark: what detection costs on top of decoding (target: at most 25%).

Runs the real pipeline in this process on one capture in several modes and compares each
with decode-only:

* ``decode``   no detector at all (decoders, flow table, JSONL outputs);
* ``rules``    only the rule engine with every shipped rule (signatures/*.rules);
* ``<id>``     each other registered built-in detector alone (``--each``);
* ``all``      every registered detector, as ``sentinel analyze`` runs them.

Modes are interleaved, each repeated ``--repeat`` times, every run in a fresh interpreter
(imports and set-up untimed), so that no mode inherits another's heap or caches;
``--in-process`` runs them all in this process instead (runs after the first then start
warm: on the benchmark capture that gave ``all`` some points less). The best (lowest) wall
time and CPU time of each mode are reported, which is the robust figure on a shared
machine. The overhead is ``best(mode) / best(decode) - 1``, on CPU time (wall time shown
too). Beside it, the overhead within each round (``mode / decode - 1`` of runs a few
seconds apart, which share the machine's load): its median and range across the rounds,
``overhead_cpu_paired_*`` in ``--json``; on a shared machine the best-of figures of two
modes may come from different minutes.

Without ``--capture`` a capture of ``--packets`` packets is generated first with
``bench/gen_modbus_capture.py`` (not timed). ``--config`` passes a Sentinel config (for
example one whose site networks make the generator's hosts ``$HOME_NET``).

Usage::

    python bench/bench_detection.py                        # 1,000,000 generated packets
    python bench/bench_detection.py --packets 200000 --repeat 5 --each
    python bench/bench_detection.py --capture site.pcap --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = 0.25


def generate(path: Path, packets: int, connections: int, seed: int) -> None:
    cmd = [
        sys.executable,
        str(HERE / "gen_modbus_capture.py"),
        str(path),
        "--packets",
        str(packets),
        "--connections",
        str(connections),
        "--seed",
        str(seed),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def detectors_of(mode: str, config: Any, ruleset: Any) -> list[Any]:
    """The detectors a mode runs: none, the rule engine, one registered detector, or all."""
    from sentinel.detectors.suricata import RuleDetector
    from sentinel.pipeline.detector import REGISTRY

    if mode == "decode":
        return []
    if mode == "rules":
        return [RuleDetector(config, ruleset)]
    if mode == "all":
        return [
            RuleDetector(config, ruleset) if cls is RuleDetector else cls(config)
            for cls in REGISTRY.values()
        ]
    return [REGISTRY[mode](config)]


def timed_run(config: Any, ruleset: Any, mode: str, capture: Path, out: Path) -> dict[str, Any]:
    """One run of the pipeline in this process; only the run itself is timed."""
    from sentinel.pipeline import Pipeline

    detectors = detectors_of(mode, config, ruleset)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = Pipeline(config, out, detectors).run(capture)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "wall": wall,
        "cpu": cpu,
        "packets": result.stats["packets"],
        "findings": result.stats["findings"],
        "depth_reached": result.stats["tcp"].get("stream_depth_reached", 0),
    }


def paired_overheads(cpu: list[float], decode_cpu: list[float]) -> dict[str, float]:
    """The overhead over decode within each round (runs minutes apart share the machine's
    load, which moves single figures by more than the changes one measures): the median and
    the range across rounds, beside the best-of figures."""
    ratios = sorted(c / d - 1 for c, d in zip(cpu, decode_cpu, strict=True))
    return {
        "overhead_cpu_paired_median": round(statistics.median(ratios), 4),
        "overhead_cpu_paired_min": round(ratios[0], 4),
        "overhead_cpu_paired_max": round(ratios[-1], 4),
    }


def child_run(args: argparse.Namespace, mode: str, capture: Path, out: Path) -> dict[str, Any]:
    """``timed_run`` in a fresh interpreter (this script with ``--run-mode``)."""
    cmd = [sys.executable, __file__, "--run-mode", mode, "--capture", str(capture)]
    cmd += ["--out", str(out)]
    if args.config:
        cmd += ["--config", str(args.config)]
    if args.stream_depth is not None:
        cmd += ["--stream-depth", str(args.stream_depth)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, help="capture to use (default: generate one)")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--config", type=Path, help="Sentinel YAML config")
    ap.add_argument(
        "--stream-depth",
        type=int,
        help="decode.stream_depth for every mode (bytes per TCP direction that stream "
        "consumers inspect; 0: unlimited); default: the config's",
    )
    ap.add_argument("--each", action="store_true", help="also time each detector alone")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--in-process", action="store_true", help="run every mode in this process")
    ap.add_argument("--run-mode", help=argparse.SUPPRESS)  # one timed run (a child process)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    from sentinel._native import compiled
    from sentinel.config import load_config
    from sentinel.detectors.suricata import RuleDetector
    from sentinel.pipeline.detector import REGISTRY
    from sentinel.rules.loader import load_ruleset

    config = load_config(args.config)
    if args.stream_depth is not None:
        decode = config.decode.model_copy(update={"stream_depth": args.stream_depth})
        config = config.model_copy(update={"decode": decode})
    ruleset = load_ruleset(config)
    if args.run_mode:  # a child: one timed run, its figures as JSON
        import sentinel.detectors  # noqa: F401 - registers the built-in detectors

        print(json.dumps(timed_run(config, ruleset, args.run_mode, args.capture, args.out)))
        return 0

    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        capture = args.capture
        if capture is None:
            capture = Path(tmp) / "bench.pcap"
            print(f"generating {args.packets:,} packets ...", file=sys.stderr)
            generate(capture, args.packets, args.connections, args.seed)

        names = ["decode", "rules"]
        if args.each:
            names += [det_id for det_id in REGISTRY if det_id != RuleDetector.id]
        names.append("all")
        best: dict[str, dict[str, Any]] = {}
        cpu_by_round: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(args.repeat):
            for name in names:
                out = Path(tmp) / f"out-{name}"
                if args.in_process:
                    run = timed_run(config, ruleset, name, capture, out)
                else:
                    run = child_run(args, name, capture, out)
                cpu_by_round[name].append(run["cpu"])
                entry = best.setdefault(name, dict(run))
                entry["wall"] = min(entry["wall"], run["wall"])
                entry["cpu"] = min(entry["cpu"], run["cpu"])
                print(
                    f"  run {rep + 1}/{args.repeat} {name:<14} {run['wall']:7.2f} s wall "
                    f"{run['cpu']:7.2f} s cpu",
                    file=sys.stderr,
                )

    base = best["decode"]
    rows = []
    for name, e in best.items():
        rows.append({
            "mode": name,
            "wall_seconds": round(e["wall"], 3),
            "cpu_seconds": round(e["cpu"], 3),
            "packets": e["packets"],
            "packets_per_second": round(e["packets"] / e["wall"]) if e["wall"] else None,
            "findings": e["findings"],
            "stream_depth_reached": e["depth_reached"],
            "overhead_cpu": round(e["cpu"] / base["cpu"] - 1, 4),
            "overhead_wall": round(e["wall"] / base["wall"] - 1, 4),
            **paired_overheads(cpu_by_round[name], cpu_by_round["decode"]),
        })  # fmt: skip
    summary = {
        "capture": str(args.capture or f"generated {args.packets} packets (seed {args.seed})"),
        "stream_depth": config.decode.stream_depth,
        "rules": ruleset.signatures,
        "detectors": list(REGISTRY),
        "repeat": args.repeat,
        "compiled": compiled(),  # docs/native.md: the mypyc-built modules, or their sources
        "target_overhead": TARGET,
        "results": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['capture']}; {ruleset.signatures} shipped rules; detectors: "
            f"{', '.join(REGISTRY)}; stream depth {summary['stream_depth']}; "
            f"best of {args.repeat}; {'compiled' if summary['compiled'] else 'pure-Python'} modules"
        )
        print(
            f"{'mode':<14} {'wall s':>8} {'cpu s':>8} {'packets/s':>11} {'findings':>9} "
            f"{'overhead (cpu)':>15} {'(wall)':>8}"
        )
        for r in rows:
            print(
                f"{r['mode']:<14} {r['wall_seconds']:>8.2f} {r['cpu_seconds']:>8.2f} "
                f"{r['packets_per_second']:>11,} {r['findings']:>9} "
                f"{r['overhead_cpu'] * 100:>14.1f}% {r['overhead_wall'] * 100:>7.1f}%"
            )
        reached = max(r["stream_depth_reached"] for r in rows)
        print(f"flow directions that reached the stream depth: {reached}")
        verdict = "meets" if best["all"]["cpu"] / base["cpu"] - 1 <= TARGET else "misses"
        print(f"all detectors {verdict} the {TARGET:.0%} target")
        paired = next(r for r in rows if r["mode"] == "all")
        print(
            f"all over decode within each round (same minutes): median "
            f"{paired['overhead_cpu_paired_median'] * 100:.1f}%, from "
            f"{paired['overhead_cpu_paired_min'] * 100:.1f}% to "
            f"{paired['overhead_cpu_paired_max'] * 100:.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
