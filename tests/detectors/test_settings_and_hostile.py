"""Detector settings (defaults, validation, reading them from a config) and hostile input."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from sentinel.config import Config
from sentinel.detector_settings import (
    DetectorSettings,
    PolicySettings,
    YaraSettings,
    detector_settings,
)
from sentinel.detectors.modbus_policy import ModbusPolicy
from sentinel.detectors.recon import ModbusRecon
from sentinel.detectors.yara_scan import YaraScanner
from tests.conftest import ZEEK_MODBUS, run_analysis


def test_defaults_without_a_detectors_section() -> None:
    s = detector_settings(Config())
    assert s == DetectorSettings()
    assert s.policy.learning_seconds == 600 and s.yara.window_bytes == 32768


def test_settings_are_read_from_the_config_section() -> None:
    section = DetectorSettings(policy=PolicySettings(learning_seconds=42))
    config = SimpleNamespace(detectors=section, assets=[], decode=Config().decode)
    assert detector_settings(config).policy.learning_seconds == 42
    assert ModbusPolicy(config).settings.learning_seconds == 42  # type: ignore[arg-type]
    partial = Config.model_validate({"detectors": {"policy": {"max_hosts": 99}}})
    assert detector_settings(partial).policy.max_hosts == 99
    assert detector_settings(partial).yara == YaraSettings()
    assert detector_settings(SimpleNamespace()) == DetectorSettings()


@pytest.mark.parametrize(
    "bad",
    [
        {"overlap_bytes": 20000},  # more than half of the window
        {"window_bytes": 10},
        {"max_streams": 0},
    ],
)
def test_yara_settings_are_validated(bad: dict) -> None:
    with pytest.raises(ValidationError):
        YaraSettings(**bad)


def test_policy_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="not an IP address"):
        PolicySettings(engineering_hosts=["eng-ws"])
    with pytest.raises(ValidationError):
        PolicySettings(unanswered_ratio=1.5)


def test_disabled_yara_subscribes_to_nothing() -> None:
    assert YaraScanner(Config(), YaraSettings(enabled=False)).subscriptions() == []
    wanted = YaraScanner(Config()).subscriptions()
    assert "on_stream_batch" in wanted  # stream bytes in batches: no call per segment
    assert "on_stream" not in wanted


@pytest.mark.parametrize("capture", sorted((ZEEK_MODBUS / "pcaps").glob("*.pcap")), ids=str)
def test_fuzzed_and_odd_captures_never_raise(tmp_path: Path, capture: Path) -> None:
    config = Config()
    learned = PolicySettings(learning_seconds=0)  # every learned rule active from the start
    dets = [ModbusPolicy(config, learned), ModbusRecon(config, learned), YaraScanner(config)]
    a = run_analysis(capture, tmp_path, config, dets)
    assert a.stats["packets"] > 0
    for f in a.findings:
        assert f["threat"]["technique"]["id"][0].startswith("T0")
        assert f["rule"]["id"].startswith("900")


def test_tumbling_windows_start_at_their_first_event() -> None:
    """The window every rate and sweep counter uses (its start unboxed, ``NOT_STARTED``
    before the first event): any first time starts it, even 0 or a negative one (a capture's
    clock may be anything); it rolls at its length, not before, and when time goes back."""
    from sentinel.detectors.common import Window

    for first in (0.0, -5.0, 1.7e9):
        w = Window(10.0)
        assert w.roll(first) and w.start == first
        assert not w.roll(first + 9.999) and w.start == first
        assert w.roll(first + 10.0) and w.start == first + 10.0
        assert w.roll(first + 9.0) and w.start == first + 9.0  # earlier than the start
