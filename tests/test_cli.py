"""The `sentinel analyze` command as a user runs it: outputs, summary, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ZEEK_MODBUS

SMALL = ZEEK_MODBUS / "pcaps" / "modbusSmall.pcap"
P502 = ZEEK_MODBUS / "pcaps" / "modbus-and-non-modbus-p502.pcap"


def sentinel(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["sentinel", *args], capture_output=True, text=True, cwd=cwd)


def test_analyze_writes_every_output_and_a_summary(tmp_path):
    proc = sentinel("analyze", str(SMALL), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    for name in ("modbus.jsonl", "flows.jsonl", "assets.jsonl", "findings.jsonl", "stats.json"):
        assert (out / name).exists(), name
    stats = json.loads((out / "stats.json").read_text())
    assert stats["modbus_messages"] == 32 and stats["packets"] == 166
    assert "modbus messages" in proc.stdout and "WRITE_MULTIPLE_COILS" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_default_output_directory_per_capture(tmp_path):
    proc = sentinel("analyze", "-q", str(SMALL), str(P502), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("modbusSmall", "modbus-and-non-modbus-p502"):
        assert (tmp_path / "sentinel-out" / name / "modbus.jsonl").exists()
    proc = sentinel("analyze", "-q", str(SMALL), str(P502), "--out", str(tmp_path / "many"))
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == [
        "modbus-and-non-modbus-p502",
        "modbusSmall",
    ]


def test_usage_errors_exit_2_with_one_line(tmp_path):
    for args in (
        ["analyze"],
        ["analyze", str(tmp_path / "missing.pcap")],
        ["analyze", str(SMALL), "--no-such-option"],
    ):
        proc = sentinel(*args)
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr


def test_a_wrong_config_is_refused_with_every_problem_located(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "sites:\n"
        "  - name: north\n"
        "    sector: spaceport\n"
        "assets:\n"
        "  - address: 10.0.0.300\n"
        "    role: plc\n"
        "decode:\n"
        "  max_flow: 10\n"
    )
    proc = sentinel("analyze", str(SMALL), "--config", str(config), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert f"{config}:3:13" in lines[0] and "sector" in lines[0]
    assert f"{config}:5:14" in lines[1] and "10.0.0.300" in lines[1]
    assert f"{config}:8:3" in lines[2] and "max_flow" in lines[2]
    assert not (tmp_path / "o").exists()  # refused as a whole, before any work


def test_yaml_syntax_error_is_located(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("sites:\n  - name: [unclosed\n")
    proc = sentinel("analyze", str(SMALL), "--config", str(config))
    assert proc.returncode == 2
    assert f"{config}:3:1" in proc.stderr and "YAML syntax" in proc.stderr


def test_site_labels_reach_findings(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(
        "sites:\n  - {name: port-authority, sector: transport, networks: [192.168.10.0/24]}\n"
    )
    proc = sentinel(
        "analyze", "-q", str(P502), "--config", str(config), "--out", str(tmp_path / "o")
    )
    assert proc.returncode == 0, proc.stderr
    findings = [json.loads(line) for line in (tmp_path / "o" / "findings.jsonl").open()]
    assert findings
    assert all(f["labels"] == {"site": "port-authority", "sector": "transport"} for f in findings)


def test_module_entry_points_list_every_command():
    for module in ("sentinel", "sentinel.cli"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        for command in ("analyze", "rules", "run", "jobs", "lab", "model", "privacy"):
            assert f"  {command} " in proc.stdout, (module, command)


def test_config_errors_point_at_the_bad_list_item(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(
        "sites:\n"
        "  - name: a\n"
        "    networks: [10.0.0.0/8, bogus]\n"
        "assets:\n"
        "  - address: 10.0.0.1\n"
        "    allowed_masters: [10.0.0.2, nope]\n"
    )
    proc = sentinel("analyze", str(SMALL), "--config", str(config), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"sentinel: config: {config}:3:28: sites.0.networks.1: not an IP network: 'bogus'",
        f"sentinel: config: {config}:6:33: assets.0.allowed_masters.1: not an IP address: 'nope'",
    ]
    assert not (tmp_path / "o").exists()
