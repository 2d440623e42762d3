#!/usr/bin/env python3
"""Benchmark: what detection costs on top of decoding (target: at most 25%).

Runs the real pipeline in this process on one capture in several modes and compares each
with decode-only:

* ``decode``   no detector at all (decoders, flow table, JSONL outputs);
* ``rules``    only the rule engine with every shipped rule (signatures/*.rules);
* ``<id>``     each other registered built-in detector alone (``--each``);
* ``all``      every registered detector, as ``sentinel analyze`` runs them.

Modes are interleaved, each repeated ``--repeat`` times; the best (lowest) wall time and
CPU time of each mode are reported, which is the robust figure on a shared machine. The
overhead is ``best(mode) / best(decode) - 1``, on CPU time (wall time shown too).

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
        "consumers inspect; 0: unlimited); default: the config's (1 MiB)",
    )
    ap.add_argument("--each", action="store_true", help="also time each detector alone")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)

    from sentinel.config import load_config
    from sentinel.detectors.suricata import RuleDetector
    from sentinel.pipeline import Pipeline
    from sentinel.pipeline.detector import REGISTRY
    from sentinel.rules.loader import load_ruleset

    config = load_config(args.config)
    if args.stream_depth is not None:
        decode = config.decode.model_copy(update={"stream_depth": args.stream_depth})
        config = config.model_copy(update={"decode": decode})
    ruleset = load_ruleset(config)

    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        capture = args.capture
        if capture is None:
            capture = Path(tmp) / "bench.pcap"
            print(f"generating {args.packets:,} packets ...", file=sys.stderr)
            generate(capture, args.packets, args.connections, args.seed)

        modes: dict[str, Any] = {
            "decode": lambda: [],
            "rules": lambda: [RuleDetector(config, ruleset)],
        }
        if args.each:
            for det_id, cls in REGISTRY.items():
                if det_id != RuleDetector.id:
                    modes[det_id] = lambda cls=cls: [cls(config)]
        modes["all"] = lambda: [
            RuleDetector(config, ruleset) if cls is RuleDetector else cls(config)
            for cls in REGISTRY.values()
        ]
        best: dict[str, dict[str, Any]] = {}
        for rep in range(args.repeat):
            for name, make in modes.items():
                detectors = make()
                out = Path(tmp) / f"out-{name}"
                wall0, cpu0 = time.perf_counter(), time.process_time()
                result = Pipeline(config, out, detectors).run(capture)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                entry = best.setdefault(name, {"wall": wall, "cpu": cpu})
                entry["wall"] = min(entry["wall"], wall)
                entry["cpu"] = min(entry["cpu"], cpu)
                entry["packets"] = result.stats["packets"]
                entry["findings"] = result.stats["findings"]
                entry["depth_reached"] = result.stats["tcp"].get("stream_depth_reached", 0)
                print(
                    f"  run {rep + 1}/{args.repeat} {name:<14} {wall:7.2f} s wall {cpu:7.2f} s cpu",
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
        })  # fmt: skip
    summary = {
        "capture": str(args.capture or f"generated {args.packets} packets (seed {args.seed})"),
        "stream_depth": config.decode.stream_depth,
        "rules": ruleset.signatures,
        "detectors": list(REGISTRY),
        "repeat": args.repeat,
        "target_overhead": TARGET,
        "results": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['capture']}; {ruleset.signatures} shipped rules; detectors: "
            f"{', '.join(REGISTRY)}; stream depth {summary['stream_depth']}; best of {args.repeat}"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
