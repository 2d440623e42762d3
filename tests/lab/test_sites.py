"""The site files: valid Sentinel configurations plus a valid lab section."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sentinel.config import Config, load_config
from sentinel.errors import ConfigError
from sentinel.lab.config import load_site, merged_config, site_names, sites_dir
from sentinel.lab.process import PROCESSES

from .conftest import sentinel_config

SITES = ("energy", "hospital", "transport")


def test_three_sites_are_shipped() -> None:
    assert tuple(site_names()) == SITES


@pytest.mark.parametrize("name", SITES)
def test_site_loads(name: str, tmp_path: Path) -> None:
    site = load_site(name)
    assert site.config.sites[0].sector == name if name != "energy" else "energy"
    roles = {a.role for a in site.config.assets}
    assert {"plc", "hmi", "engineering"} <= roles
    # the Sentinel part is accepted by load_config as it is
    config = load_config(sentinel_config(site, tmp_path))
    assert config.assets == site.config.assets
    for plc in site.lab.plcs:
        assert plc.process in PROCESSES
        asset = site.asset(plc.asset)
        assert site.lab.hmi.address in asset.allowed_masters
        assert site.lab.attacker.address not in asset.allowed_masters
    net = ipaddress.ip_network(site.lab.subnet)
    assert net.subnet_of(ipaddress.ip_network("198.51.100.0/24"))  # documentation range


@pytest.mark.skipif("lab" not in Config.model_fields, reason="Config.lab not added yet (lead)")
@pytest.mark.parametrize("name", SITES)
def test_site_file_loads_with_load_config(name: str) -> None:
    config = load_config(sites_dir() / f"{name}.yaml")
    assert config.lab is not None  # type: ignore[attr-defined]


def test_sites_do_not_overlap() -> None:
    nets = [ipaddress.ip_network(load_site(n).lab.subnet) for n in SITES]
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            assert not a.overlaps(b)
    merged = merged_config([load_site(n) for n in SITES])
    assert len(merged.sites) == 3


def test_bad_lab_section_is_located(tmp_path: Path) -> None:
    text = (sites_dir() / "hospital.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("period: 1.0", "period: -1").replace("tag: temp_kp", "tag: nope"))
    with pytest.raises(ConfigError) as err:
        load_site(str(bad))
    message = str(err.value)
    assert "bad.yaml:" in message and "period" in message
    bad.write_text(text.replace("tag: temp_kp", "tag: nope"))
    with pytest.raises(ConfigError, match="no writable holding 'nope'"):
        load_site(str(bad))
