"""Shared helpers of the OT protocol tests: real tshark, each capture analysed once.

tshark runs take a noticeable fraction of a second, so ``ot_run`` caches analyses for the whole
session by (capture, configuration name): the conformance, decoding and policy tests share
them. Every run goes through the real pipeline (native flows + the tshark worker) with the OT
policy detector, exactly as ``sentinel analyze`` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from sentinel.config import Config
from sentinel.decode.ot_settings import OTSettings
from sentinel.detectors.ot_policy import OTPolicy
from tests.conftest import Analysis, run_analysis
from tests.ot import craft

DATA = Path(__file__).parent / "data"
ZEEK_DNP3 = DATA / "zeek" / "dnp3"
ICS = DATA / "ics-samples"


class OTConfig(Config):
    """``Config`` with the ``ot`` section (as the lead wires ``OTSettings`` into the schema)."""

    ot: OTSettings = OTSettings()


def ot_config(assets: list[dict[str, Any]] | None = None, **ot: Any) -> OTConfig:
    data: dict[str, Any] = {"ot": ot}
    if assets:
        data["assets"] = assets
    return OTConfig.model_validate(data)


@pytest.fixture(scope="session")
def tshark() -> str:
    path = shutil.which("tshark")
    assert path, "tshark is installed by .ci/run and the Makefile (Debian package tshark)"
    return path


@pytest.fixture(scope="session")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("crafted")
    return {
        "s7": craft.s7_operations(d / "s7.pcap"),
        "s7_reads": craft.s7_reads(d / "s7_reads.pcap"),
        "cip": craft.cip_operations(d / "cip.pcap"),
        "iec104": craft.iec104_operations(d / "iec104.pcap"),
        "bacnet": craft.bacnet_operations(d / "bacnet.pcap"),
        "bacnet_enable": craft.bacnet_operations(d / "bacnet_enable.pcap", dcc="enable"),
        "iec104_rogue": craft.iec104_rogue_master(d / "iec104_rogue.pcap"),
        "dnp3_reused": craft.dnp3_reused_tuple(d / "dnp3_reused.pcap"),
        "dnp3_unsol_off": craft.dnp3_unsolicited(d / "dnp3_unsol_off.pcap", None),
        "dnp3_unsol_restarted": craft.dnp3_unsolicited(d / "dnp3_unsol_on.pcap", 2.0),
        "mixed": craft.mixed_modbus_dnp3(d / "mixed.pcap"),
        "dnp3_auth_fail": craft.dnp3_secure_authentication(d / "dnp3_auth_fail.pcap", True),
        "dnp3_auth_ok": craft.dnp3_secure_authentication(d / "dnp3_auth_ok.pcap", False),
        "dnp3_clock": craft.dnp3_clock_writes(d / "dnp3_clock.pcap"),
        "iec104_auth_fail": craft.iec104_authentication(d / "iec104_auth_fail.pcap", True),
        "iec104_auth_ok": craft.iec104_authentication(d / "iec104_auth_ok.pcap", False),
        "s7_force": craft.s7_force(d / "s7_force.pcap"),
        "cip_firmware": craft.cip_firmware(d / "cip_firmware.pcap"),
        "iec104_stopdt": craft.iec104_stopdt(d / "iec104_stopdt.pcap", None),
        "iec104_stopdt_same": craft.iec104_stopdt(d / "iec104_stopdt_same.pcap", "same"),
        "iec104_stopdt_other": craft.iec104_stopdt(d / "iec104_stopdt_other.pcap", "other"),
    }


_CACHE: dict[tuple[str, str], Analysis] = {}


@pytest.fixture(scope="session")
def ot_run(tmp_path_factory: pytest.TempPathFactory, tshark: str):
    """``ot_run(capture, name="default", config=None) -> Analysis`` (cached per session)."""
    base = tmp_path_factory.mktemp("ot-runs")

    def run(capture: Path, name: str = "default", config: Config | None = None) -> Analysis:
        key = (str(capture), name)
        if key not in _CACHE:
            cfg = config or ot_config()
            out = base / f"{len(_CACHE)}-{Path(capture).stem}-{name}"
            _CACHE[key] = run_analysis(capture, out, cfg, [OTPolicy(cfg)])
        return _CACHE[key]

    return run


def records(a: Analysis, name: str) -> list[dict[str, Any]]:
    path = a.out / f"{name}.jsonl"
    return a.records(name) if path.exists() else []


def ot_findings(a: Analysis) -> list[tuple[str, str]]:
    """(rule id, function) of every OT policy finding, in order."""
    return [
        (f["rule"]["id"], f["sentinel"]["evidence"]["function"])
        for f in a.findings
        if f["sentinel"]["detector"] == "ot_policy"
    ]
