"""Fixtures of the privacy tests: keys, captures, and runs of the real pipeline.

Every test gets its own ``$SENTINEL_STATE`` (audit log, default paths) under ``tmp_path``.
Captures: the crafted site capture of ``traffic.py`` (people's data outside the inventory)
and lab captures written by the installed ``sentinel lab synth`` (10 minutes, every
scenario, seed 1), each made once per session.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.config import Config, load_config
from sentinel.pipeline import Pipeline
from sentinel.privacy.keys import Key
from sentinel.privacy.pseudonymizer import Pseudonymizer
from sentinel.privacy.runtime import clear_addresses, declared_networks
from sentinel.privacy.settings import Pseudonymization
from tests.privacy import traffic

SITES = ("hospital", "energy", "transport")


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("SENTINEL_STATE", str(state))
    monkeypatch.delenv("SENTINEL_PRIVACY_KEY", raising=False)
    return state


@pytest.fixture
def key() -> Key:
    return Key(bytes(range(32)))


@pytest.fixture(scope="session")
def site_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return traffic.build(tmp_path_factory.mktemp("site") / "site.pcap")


@pytest.fixture
def site_config() -> Config:
    return Config.model_validate(traffic.SITE_CONFIG)


def site_file(name: str) -> Path:
    return Path(str(resources.files("sentinel.lab").joinpath(f"sites/{name}.yaml")))


def lab_config(name: str) -> Config:
    return load_config(site_file(name))


@pytest.fixture(scope="session")
def lab_capture(tmp_path_factory: pytest.TempPathFactory) -> Any:
    made: dict[str, Path] = {}

    def capture(site: str) -> Path:
        if site not in made:
            out = tmp_path_factory.mktemp(f"lab-{site}")
            cmd = "from sentinel.cli import main; main()"
            args = ["lab", "synth", "--site", site, "--minutes", "10", "--scenarios", "all"]
            subprocess.run(
                [sys.executable, "-c", cmd, *args, "--seed", "1", "--out", str(out)],
                check=True,
                capture_output=True,
            )
            made[site] = out / "capture.pcap"
        return made[site]

    return capture


def pseudonymizer(config: Any, key: Key, **settings: Any) -> Pseudonymizer:
    return Pseudonymizer(
        key,
        clear=clear_addresses(config),
        networks=declared_networks(config),
        settings=Pseudonymization(**settings),
    )


@dataclass
class Run:
    out: Path
    stats: dict[str, Any]

    def records(self, name: str) -> list[dict[str, Any]]:
        path = self.out / f"{name}.jsonl"
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]

    def all_bytes(self) -> bytes:
        return b"\n".join(p.read_bytes() for p in sorted(self.out.iterdir()) if p.is_file())


def run(
    capture: Path,
    out: Path,
    config: Config,
    p: Pseudonymizer | None = None,
    sinks: list[Any] | None = None,
) -> Run:
    result = Pipeline(config, out, None, sinks or [], pseudonymizer=p).run(capture)
    return Run(Path(result.out_dir), result.stats)


def address_pattern(address: str) -> re.Pattern[bytes]:
    """``address`` as written anywhere, not as part of a longer number or address."""
    import ipaddress

    addr = ipaddress.ip_address(address)
    forms = {str(addr)}
    if addr.version == 6:
        forms.add(addr.exploded)
    alts = b"|".join(re.escape(f.encode()) for f in forms)
    return re.compile(rb"(?<![0-9A-Fa-f.:])(?:" + alts + rb")(?![0-9A-Fa-f:]|\.[0-9])")


def key_forms(key: Key) -> list[bytes]:
    """Every way a key's secret could be written."""
    s = key.secret
    return [
        s,
        s.hex().encode(),
        s.hex().upper().encode(),
        base64.b64encode(s),
        base64.urlsafe_b64encode(s),
        base64.b64encode(s).rstrip(b"="),
    ]
