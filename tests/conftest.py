"""Shared test helpers: run the real pipeline on a capture and load what it wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sentinel.config import Config
from sentinel.pipeline import Pipeline
from tests.es_support import clean_es, es, es_node  # noqa: F401 - one node for the whole run

TESTS = Path(__file__).parent
ZEEK_MODBUS = TESTS / "conformance" / "data" / "zeek" / "modbus"
ICS_SAMPLES = TESTS / "data" / "ics-samples"


@dataclass
class Analysis:
    out: Path
    stats: dict[str, Any]

    def records(self, name: str) -> list[dict[str, Any]]:
        with open(self.out / f"{name}.jsonl", encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    @property
    def modbus(self) -> list[dict[str, Any]]:
        return self.records("modbus")

    @property
    def findings(self) -> list[dict[str, Any]]:
        return self.records("findings")

    @property
    def flows(self) -> list[dict[str, Any]]:
        return self.records("flows")

    @property
    def assets(self) -> list[dict[str, Any]]:
        return self.records("assets")


def run_analysis(
    capture: Path | str, out: Path, config: Config | None = None, detectors: list | None = None
) -> Analysis:
    result = Pipeline(config or Config(), out, detectors).run(capture)
    return Analysis(Path(result.out_dir), result.stats)


@pytest.fixture
def analyze(tmp_path: Path):
    counter = iter(range(1000))

    def _analyze(
        capture: Path | str, config: Config | None = None, detectors: list | None = None
    ) -> Analysis:
        return run_analysis(capture, tmp_path / f"run{next(counter)}", config, detectors)

    return _analyze
