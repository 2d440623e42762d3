"""The synthetic generator: deterministic, tshark agrees, normal traffic is clean."""

from __future__ import annotations

import collections
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from sentinel.capture.pcapfile import CaptureFile
from sentinel.lab.config import load_site
from sentinel.lab.labels import read_labels
from sentinel.lab.scenarios import get_scenarios, load_scenarios
from sentinel.lab.synth import synthesize

from .conftest import analyze, findings, sentinel, sentinel_config

ALL = list(load_scenarios())


def _synth(tmp: Path, site: str, minutes: float, scenarios: list[str], seed: int) -> Path:
    out = tmp / f"{site}-{seed}-{len(scenarios)}"
    synthesize(load_site(site), minutes, get_scenarios(scenarios), seed, out)
    return out


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = _synth(tmp_path / "a", "energy", 6, ALL, 11)
    b = _synth(tmp_path / "b", "energy", 6, ALL, 11)
    c = _synth(tmp_path / "c", "energy", 6, ALL, 12)
    assert (a / "capture.pcap").read_bytes() == (b / "capture.pcap").read_bytes()
    assert (a / "labels.jsonl").read_bytes() == (b / "labels.jsonl").read_bytes()
    assert (a / "capture.pcap").read_bytes() != (c / "capture.pcap").read_bytes()


def test_cli_writes_capture_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = sentinel(
        "lab",
        "synth",
        "--site",
        "transport",
        "--minutes",
        "3",
        "--scenarios",
        "write-coil,recon-port-sweep",
        "--seed",
        "5",
        "--out",
        str(out),
    )
    assert "2 attacks labelled" in proc.stdout
    labels = read_labels(out / "labels.jsonl")
    assert [lab.scenario for lab in labels] == ["write-coil", "recon-port-sweep"]
    bad = sentinel(
        "lab",
        "synth",
        "--site",
        "transport",
        "--minutes",
        "1",
        "--scenarios",
        "nope",
        "--out",
        str(out),
        check=False,
    )
    assert bad.returncode == 2 and "unknown scenario nope" in bad.stderr


def test_timestamps_and_labels(tmp_path: Path) -> None:
    out = _synth(tmp_path, "hospital", 12, ALL, 3)
    run = json.loads((out / "run.json").read_text())
    with CaptureFile(out / "capture.pcap") as cap:
        times = [ts for ts, _lt, _f in cap]
    assert times == sorted(times)
    assert run["start"] <= times[0] and times[-1] <= run["end"]
    assert run["end"] - run["start"] >= 12 * 60
    labels = read_labels(out / "labels.jsonl")
    assert [lab.scenario for lab in labels] == ALL
    scenarios = load_scenarios()
    site = load_site("hospital")
    plcs = {p.asset for p in site.lab.plcs}
    previous_end = run["start"]
    for lab in labels:
        assert lab.attacker == site.lab.attacker.address
        assert lab.target in plcs
        assert lab.technique == scenarios[lab.scenario].technique
        assert previous_end <= lab.start < lab.end <= run["end"]
        previous_end = lab.end
        # every attack put packets on the wire inside its interval
        assert any(lab.start <= t <= lab.end for t in times)
    raw = (out / "labels.jsonl").read_text().splitlines()[0]
    assert list(json.loads(raw)) == ["scenario", "start", "end", "attacker", "target", "technique"]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("site", ["hospital", "energy", "transport"])
def test_tshark_agrees_on_every_modbus_message(site: str, tmp_path: Path) -> None:
    out = _synth(tmp_path, site, 8, ALL, 21)
    stats = analyze(out / "capture.pcap", out / "analyze")
    ours: collections.Counter[tuple[int, int]] = collections.Counter()
    for line in (out / "analyze" / "modbus.jsonl").read_text().splitlines():
        rec = json.loads(line)
        ours[(rec["tid"], rec["fc"])] += 1
    proc = subprocess.run(
        [
            "tshark",
            "-r",
            str(out / "capture.pcap"),
            "-Y",
            "mbtcp",
            "-T",
            "fields",
            "-e",
            "mbtcp.trans_id",
            "-e",
            "modbus.func_code",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs: collections.Counter[tuple[int, int]] = collections.Counter()
    for line in proc.stdout.splitlines():
        tids, fcs = line.split("\t")
        for tid, fc in zip(tids.split(","), fcs.split(","), strict=True):
            theirs[(int(tid), int(fc) & 0x7F)] += 1
    assert sum(ours.values()) == stats["modbus_messages"] > 1000
    assert ours == theirs
    by_fc = collections.Counter(fc for _tid, fc in ours.elements())
    assert {1, 2, 3, 4, 5, 6, 8, 16, 17, 43} <= set(by_fc)  # the attacks are in there
    assert stats["decode_errors"] == {}


@pytest.mark.parametrize("site", ["hospital", "energy", "transport"])
def test_normal_traffic_is_clean(site: str, tmp_path: Path) -> None:
    """20 minutes of normal traffic (past the policy detector's learning window and with the
    engineering workstation's sessions): no finding, no anomaly, no exception."""
    out = _synth(tmp_path, site, 20, [], 8)
    stats = analyze(out / "capture.pcap", out / "analyze", sentinel_config(site, tmp_path))
    assert stats["findings"] == 0, findings(out / "analyze")
    assert stats["anomalies"] == {}
    assert stats["modbus_unanswered_requests"] == 0
    assert not [f for f in stats["modbus_by_function"] if f.endswith("_EXCEPTION")]
    assert stats["tcp"] == {}  # no retransmission, gap or resync
    writes = {k: v for k, v in stats["modbus_by_function"].items() if k.startswith("WRITE")}
    assert writes.get("WRITE_SINGLE_REGISTER") and writes.get("WRITE_MULTIPLE_REGISTERS")


def test_tcp_is_well_formed(tmp_path: Path) -> None:
    """Handshakes, sequence numbers and checksums: tshark finds no TCP problem in normal
    traffic and the IPv4/TCP checksums of every frame verify."""
    out = _synth(tmp_path, "transport", 4, [], 2)
    if shutil.which("tshark"):
        proc = subprocess.run(
            [
                "tshark",
                "-r",
                str(out / "capture.pcap"),
                "-o",
                "tcp.check_checksum:TRUE",
                "-Y",
                "tcp.analysis.flags || tcp.checksum.status == 0 || ip.checksum.status == 0",
                "-o",
                "ip.check_checksum:TRUE",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert proc.stdout.strip() == ""
    with CaptureFile(out / "capture.pcap") as cap:
        for _ts, _lt, frame in cap:
            if frame[12:14] != b"\x08\x00":
                continue
            ihl = (frame[14] & 15) * 4
            assert _ones(frame[14 : 14 + ihl]) == 0xFFFF
            total = struct.unpack_from(">H", frame, 16)[0]
            tcp = frame[14 + ihl : 14 + total]
            pseudo = frame[26:34] + struct.pack(">BBH", 0, 6, len(tcp))
            assert _ones(pseudo + tcp) == 0xFFFF


def _ones(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total
