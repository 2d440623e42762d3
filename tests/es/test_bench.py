"""The sink benchmark runs (small) and prints its figures; no timing is asserted here."""

from __future__ import annotations

import io

from tests.es_support import Node

from .bench_sink import run


def test_benchmark_runs_and_prints_figures(es_node: Node) -> None:
    out = io.StringIO()
    result = run(es_node.settings(), 5_000, 1, out)
    print(out.getvalue())
    assert result["bare"] > 0 and result["sink"] > 0
    assert "sink / bare" in out.getvalue()
