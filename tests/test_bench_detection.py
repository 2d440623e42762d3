"""bench/bench_detection.py runs end to end on a small capture, in child processes and in
process, and reports every mode with the same packets, best-of and within-round overheads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_detection.py"


@pytest.mark.parametrize("extra", [[], ["--in-process"]])
def test_bench_detection_reports_every_mode(extra: list[str]) -> None:
    cmd = [sys.executable, str(BENCH), "--packets", "3000", "--repeat", "1", "--json", *extra]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    summary = json.loads(done.stdout)
    rows = {r["mode"]: r for r in summary["results"]}
    assert list(rows) == ["decode", "rules", "all"]
    assert {r["packets"] for r in rows.values()} == {3000}
    assert rows["decode"]["findings"] == 0
    assert rows["decode"]["overhead_cpu"] == 0.0
    assert rows["all"]["findings"] >= rows["rules"]["findings"]
    assert all(r["cpu_seconds"] > 0 for r in rows.values())
    # Within-round overheads: with one round they are the best-of figure itself.
    for r in rows.values():
        paired = [r[f"overhead_cpu_paired_{k}"] for k in ("min", "median", "max")]
        assert paired == [pytest.approx(r["overhead_cpu"], abs=2e-4)] * 3
    assert rows["decode"]["overhead_cpu_paired_median"] == 0.0
