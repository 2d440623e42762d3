"""No finding on normal traffic: real benign captures, the lab's normal-only synthetic sites,
and the benchmark generator's realistic polling (writes, start-up device identification,
diagnostics, a misconfigured tag failing every cycle, short-lived connections).

The real captures are the repository's copy of ITI/ICS-Security-Tools pcaps (CC BY 4.0, see
tests/data/ics-samples/README.md). The learned rules are exercised with a short learning window
as well as with the default one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.config import Config
from sentinel.detector_settings import PolicySettings
from sentinel.detectors.modbus_policy import ModbusPolicy
from sentinel.detectors.recon import ModbusRecon
from sentinel.detectors.yara_scan import YaraScanner
from sentinel.lab.config import load_site
from sentinel.lab.synth import synthesize
from tests.conftest import ICS_SAMPLES, TESTS, run_analysis
from tests.detectors.pcaps import summary

REPO = TESTS.parent


def detectors(config: Config, settings: PolicySettings) -> list:
    return [ModbusPolicy(config, settings), ModbusRecon(config, settings), YaraScanner(config)]


@pytest.mark.parametrize("capture", ["ModbusTCP.pcap", "modbus_test.pcap"])
@pytest.mark.parametrize("learning", [600.0, 10.0])
def test_real_benign_captures(tmp_path: Path, capture: str, learning: float) -> None:
    settings = PolicySettings(learning_seconds=learning)
    a = run_analysis(ICS_SAMPLES / capture, tmp_path, Config(), detectors(Config(), settings))
    assert a.stats["modbus_messages"] > 2000
    assert summary(a.findings) == []


@pytest.mark.parametrize("site_name", ["energy", "hospital", "transport"])
@pytest.mark.parametrize("with_config", [False, True])
def test_lab_normal_sites(tmp_path: Path, site_name: str, with_config: bool) -> None:
    site = load_site(site_name)
    run = synthesize(site, 20.0, [], 5, tmp_path / "synth")
    config = (
        Config.model_validate(site.config.model_dump(exclude={"lab"})) if with_config else Config()
    )
    capture = tmp_path / "synth" / "capture.pcap"
    a = run_analysis(capture, tmp_path / "out", config, detectors(config, PolicySettings()))
    assert a.stats["modbus_messages"] > 1000, run
    assert summary(a.findings) == []


def test_bench_generator_polling(tmp_path: Path) -> None:
    capture = tmp_path / "bench.pcap"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gen_modbus_capture.py"),
            str(capture),
            "--packets",
            "60000",
            "--connections",
            "120",
            "--seed",
            "11",
        ],
        check=True,
        capture_output=True,
    )
    a = run_analysis(capture, tmp_path / "out", Config(), detectors(Config(), PolicySettings()))
    assert a.stats["modbus_messages"] > 40000
    assert summary(a.findings) == []
