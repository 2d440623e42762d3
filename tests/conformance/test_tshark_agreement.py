"""tshark (Wireshark's Modbus/TCP dissector) sees the same messages as Sentinel's decoder."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import pytest

from tests.conftest import ICS_SAMPLES, ZEEK_MODBUS

CAPTURES = [
    ICS_SAMPLES / "ModbusTCP.pcap",
    ICS_SAMPLES / "modbus_test.pcap",
    ZEEK_MODBUS / "pcaps" / "modbusSmall.pcap",
    ZEEK_MODBUS / "pcaps" / "modbus-and-non-modbus-p502.pcap",
]


def tshark_messages(capture) -> Counter:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(capture),
            "-Y",
            "mbtcp",
            "-T",
            "fields",
            "-e",
            "mbtcp.trans_id",
            "-e",
            "mbtcp.unit_id",
            "-e",
            "modbus.func_code",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen: Counter = Counter()
    for line in out.splitlines():
        tids, units, fcs = line.split("\t")
        for tid, unit, fc in zip(tids.split(","), units.split(","), fcs.split(","), strict=True):
            seen[(int(tid), int(unit), int(fc))] += 1
    return seen


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_tshark_agrees(analyze, capture):
    assert shutil.which("tshark"), "tshark is installed by .ci/run (Debian package tshark)"
    ours = Counter((r["tid"], r["unit"], r["fc"]) for r in analyze(capture).modbus)
    theirs = tshark_messages(capture)
    assert ours == theirs
    assert sum(ours.values()) > 0
