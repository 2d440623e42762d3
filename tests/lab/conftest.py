"""Shared helpers of the lab tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from sentinel.lab.config import SiteDef, load_site


def sentinel_config(site: SiteDef | str, directory: Path) -> Path:
    """The site file's Sentinel configuration without its ``lab:`` section (what
    ``load_config`` accepts until ``Config`` has the ``lab`` field)."""
    if isinstance(site, str):
        site = load_site(site)
    path = directory / f"{site.name}-sentinel.yaml"
    data = site.config.model_dump(exclude={"lab"}, exclude_defaults=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def sentinel(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed ``sentinel`` command."""
    proc = subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", *args],
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sentinel {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
    return proc


def analyze(capture: Path, out: Path, config: Path | None = None) -> dict[str, Any]:
    args = ["analyze", str(capture), "--out", str(out), "-q"]
    if config is not None:
        args += ["--config", str(config)]
    sentinel(*args)
    return json.loads((out / "stats.json").read_text())


def findings(out: Path) -> list[dict[str, Any]]:
    path = out / "findings.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "live: builds the live lab in network namespaces (root, iproute2)"
    )
