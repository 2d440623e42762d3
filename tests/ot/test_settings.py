"""The ``ot`` settings: defaults, partial protocol sections, and located errors once wired
into the config (simulated here with a Config subclass, as the lead will add the field)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sentinel.decode.ot_settings import DEFAULT_PORTS, OTSettings, ot_settings
from tests.ot.conftest import OTConfig


def test_defaults() -> None:
    s = OTSettings()
    assert s.enabled and s.lazy_start and s.prefilter
    assert s.enabled_protocols() == ["dnp3", "iec104", "s7comm", "enip", "bacnet"]
    assert s.server_ports() == {p for ports in DEFAULT_PORTS.values() for p in ports}
    assert ot_settings(object()) == s  # a config without an ot section


def test_partial_protocol_sections_keep_the_registered_ports() -> None:
    s = OTSettings.model_validate({"dnp3": {"enabled": True}, "bacnet": {"enabled": False}})
    assert s.dnp3.ports == [20000]
    assert "bacnet" not in s.enabled_protocols() and 47808 not in s.server_ports()
    assert OTSettings.model_validate({"s7comm": {"ports": []}}).s7comm.ports == []
    assert OTSettings(enabled=False).enabled_protocols() == []


@pytest.mark.parametrize(
    "section",
    [
        {"dnp3": {"ports": [70000]}},
        {"tshark_preferences": ["no colon"]},
        {"policy": {"engineering_hosts": ["not-an-ip"]}},
        {"unknown": 1},
    ],
)
def test_bad_values_are_refused(section: dict) -> None:
    with pytest.raises(ValidationError):
        OTSettings.model_validate(section)


def test_located_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sentinel.config as config_module
    from sentinel.errors import ConfigError

    path = tmp_path / "site.yaml"
    path.write_text("ot:\n  dnp3:\n    ports: [70000]\n")
    monkeypatch.setattr(config_module, "Config", OTConfig)  # what the lead's wiring will do
    with pytest.raises(ConfigError) as err:
        config_module.load_config(path)
    (problem,) = err.value.problems
    assert "ot.dnp3.ports" in str(problem) and ":3:" in str(problem)
