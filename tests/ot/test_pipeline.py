"""The tshark source inside a run: joins with the native flows, the off switch, a missing or
failing tshark, lazy start, hostile captures, and the ``analyze`` options."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.decode import tshark as ts
from sentinel.decode.ot_settings import OTSettings
from tests.conftest import ICS_SAMPLES, run_analysis
from tests.ot.conftest import ICS, ZEEK_DNP3, ot_config, records


def test_mixed_capture_joins_both_paths(ot_run, crafted) -> None:
    a = ot_run(crafted["mixed"])
    modbus, ot = a.modbus, records(a, "ot")
    assert len(modbus) == 6 and len(ot) == 6
    flows = {f["uid"]: f for f in a.flows}
    assert {flows[r["uid"]]["resp_p"] for r in modbus} == {502}
    assert {flows[r["uid"]]["resp_p"] for r in ot} == {20000}
    for r in ot:
        flow = flows[r["uid"]]
        assert (r["orig_h"], r["resp_h"]) == (flow["orig_h"], flow["resp_h"])
        assert r["is_orig"] == (r["direction"] == "request")
    assert [r["fc_request"] for r in records(a, "dnp3")] == ["READ"] * 3
    assert a.stats["ot"]["events_by_protocol"] == {"dnp3": 6}
    roles = {r["ip"]: r["roles"] for r in a.assets}
    assert roles["192.0.2.70"] == ["dnp3_client"] and roles["192.0.2.80"] == ["dnp3_server"]
    assert roles["192.0.2.91"] == ["modbus_server"]


def test_reused_five_tuple_gets_each_connections_uid(ot_run, crafted) -> None:
    """The READ arrives after its connection ended and the 5-tuple was reused (tshark lags
    behind the native path): it still gets the first connection's uid."""
    a = ot_run(crafted["dnp3_reused"])
    flows = sorted(a.flows, key=lambda f: f["ts"])
    assert len(flows) == 2 and flows[0]["uid"] != flows[1]["uid"]
    requests = [r for r in records(a, "ot") if r["direction"] == "request"]
    assert [(r["function"], r["uid"]) for r in requests] == [
        ("READ", flows[0]["uid"]),
        ("COLD_RESTART", flows[1]["uid"]),
    ]


def test_off_switch_changes_nothing_on_the_modbus_path(tmp_path: Path, ot_run, crafted) -> None:
    on = ot_run(crafted["mixed"])
    off = run_analysis(crafted["mixed"], tmp_path / "off", ot_config(enabled=False))
    assert off.stats["ot"] == {"status": "off"}
    assert not (off.out / "ot.jsonl").exists() and not (off.out / "dnp3.jsonl").exists()
    assert off.modbus == on.modbus
    assert off.flows == on.flows


def test_capture_without_ot_traffic_never_starts_tshark(tmp_path: Path, tshark: str) -> None:
    a = run_analysis(ICS_SAMPLES / "modbus_test.pcap", tmp_path, ot_config())
    assert a.stats["ot"]["status"] == "idle"
    assert "worker" not in a.stats["ot"]  # no tshark process ran
    assert a.stats["modbus_messages"] > 2000


def test_missing_tshark_says_how_to_install_it(
    tmp_path: Path, crafted, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ts, "_warned_missing", False)
    with caplog.at_level(logging.WARNING, logger="sentinel.decode.tshark"):
        a = run_analysis(crafted["mixed"], tmp_path, ot_config(tshark="/nonexistent/tshark"))
    assert a.stats["ot"]["status"] == "tshark-missing"
    assert "apt-get install tshark" in a.stats["ot"]["hint"]
    assert any("apt-get install tshark" in r.getMessage() for r in caplog.records)
    assert len(a.modbus) == 6  # the native path keeps working
    assert not (a.out / "ot.jsonl").exists()


def test_failing_tshark_is_reported_not_raised(tmp_path: Path, crafted) -> None:
    fake = tmp_path / "tshark"
    fake.write_text("#!/bin/sh\necho 'tshark: cannot do that' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    a = run_analysis(crafted["mixed"], tmp_path / "out", ot_config(tshark=str(fake)))
    assert a.stats["ot"]["status"] == "failed"
    assert "tshark: cannot do that" in a.stats["ot"]["messages"]
    assert len(a.modbus) == 6


def test_truncated_capture(tmp_path: Path, tshark: str) -> None:
    """A capture cut in the middle of a record: both paths read up to the damage."""
    whole = (ICS / "s7comm" / "s7comm_reading_plc_status.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[: len(whole) // 2 + 7])
    a = run_analysis(cut, tmp_path / "out", ot_config())
    events = records(a, "ot")
    assert events and all(r["uid"] for r in events)
    assert a.stats["ot"]["status"] in ("ok", "partial")
    assert a.stats["decode_errors"]  # the native path counted the damage too


@pytest.mark.parametrize("name", ["dnp3-flowbuffer-overflow-assert", "dnp3_link_only"])
def test_hostile_dnp3_captures(ot_run, name: str) -> None:
    """Zeek's regression capture for a DNP3 flow buffer overflow, and link-layer-only
    traffic: no exception, every event still joined to a flow."""
    a = ot_run(ZEEK_DNP3 / "pcaps" / f"{name}.pcap")
    assert a.stats["ot"]["status"] == "ok"
    assert a.stats["ot"]["events_without_flow"] == 0
    assert a.stats["ot"]["worker"]["stats"].get("normaliser_errors", 0) == 0


def test_stats_and_records(ot_run) -> None:
    a = ot_run(ZEEK_DNP3 / "pcaps" / "dnp3.pcap")
    ot = a.stats["ot"]
    assert ot["status"] == "ok" and ot["tshark"]["version"].count(".") == 2
    assert ot["events"] == len(records(a, "ot")) == sum(ot["events_by_protocol"].values())
    record = records(a, "ot")[0]
    for key in ("ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "protocol", "operation"):
        assert key in record
    assert "function" in record and "dnp3" in record and "data" not in record


def test_tshark_command() -> None:
    settings = OTSettings(
        dnp3={"ports": [20000, 20001]}, iec104={"ports": [2405]}, bacnet={"enabled": False}
    )
    cmd = ts.tshark_command("tshark", settings, ts.OTInput(file="x.pcap"))
    assert cmd[:4] == ["tshark", "-n", "-r", "-"]  # the worker's prefilter feeds it
    assert "pkt_comment" in cmd[cmd.index("-J") + 1].split()
    whole = ts.tshark_command(
        "tshark", settings.model_copy(update={"prefilter": False}), ts.OTInput("x.pcap")
    )
    assert whole[:4] == ["tshark", "-n", "-r", "x.pcap"]
    display = cmd[cmd.index("-Y") + 1]
    assert display == "dnp3 or iec60870_104 or s7comm or enip"
    assert cmd[cmd.index("-d") : cmd.index("-d") + 4] == [
        "-d",
        "tcp.port==20001,dnp3",
        "-d",
        "udp.port==20001,dnp3",
    ]
    assert "udp.port==2405,iec60870_104" not in cmd and "tcp.port==2405,iec60870_104" in cmd
    both = ts.tshark_command(
        "tshark", OTSettings(bacnet={"ports": [47808, 47809]}), ts.OTInput("x")
    )
    assert "udp.port==47809,bvlc" in both and "tcp.port==47809,bvlc" not in both
    live = ts.tshark_command("tshark", settings, ts.OTInput(interfaces=("br0", "br1")))
    assert live[2:9] == ["-i", "br0", "-i", "br1", "-l", "-M", "1000000"]
    bpf = live[live.index("-f") + 1]
    assert bpf == (
        "port 102 or port 2222 or port 2405 or port 20000 or port 20001 or port 44818"
        " or (ip[6:2] & 0x3fff != 0)"
    )
    assert ts.effective_settings(ot_config(enabled=False)).enabled_protocols() == []


@pytest.mark.parametrize("capture", ["dnp3.pcap", "mixed"])
def test_prefilter_gives_the_same_events_as_the_whole_file(ot_run, crafted, capture: str) -> None:
    """tshark fed only the OT ports' packets (default) or the whole capture: same events,
    same frame numbers and time stamps; the prefilter hands tshark fewer packets."""
    pcap = crafted["mixed"] if capture == "mixed" else ZEEK_DNP3 / "pcaps" / capture
    filtered = ot_run(pcap)
    whole = ot_run(pcap, "whole-file", ot_config(prefilter=False))
    assert records(filtered, "ot") == records(whole, "ot")
    assert records(filtered, "dnp3") == records(whole, "dnp3")
    worker = filtered.stats["ot"]["worker"]["stats"]
    assert worker["prefilter_read"] == filtered.stats["packets"]
    if capture == "mixed":
        assert worker["prefilter_passed"] < worker["prefilter_read"]  # the Modbus frames stay out


def test_analyze_options(tmp_path: Path) -> None:
    """``sentinel analyze --no-ot`` and ``--tshark`` (the module is loaded by the CLI once the
    lead lists sentinel.decode.cli in COMMAND_MODULES; imported here explicitly)."""
    capture = ZEEK_DNP3 / "pcaps" / "dnp3_read.pcap"
    program = "import sys, sentinel.decode.cli; from sentinel.cli import main; main(sys.argv[1:])"

    def analyze(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", program, "analyze", "-q", str(capture), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "SENTINEL_DEBUG": ""},
        )

    out = tmp_path / "out"
    proc = analyze("--no-ot", "--out", str(out))
    if proc.returncode == 70 and "apply()" in proc.stderr:
        pytest.skip(f"another analyze extension is not loadable yet: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "stats.json").read_text())["ot"] == {"status": "off"}
    proc = analyze("--tshark", "/nonexistent/tshark", "--out", str(out))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "sentinel: --tshark '/nonexistent/tshark' is not an executable file"
    )


def test_analyze_summary_shows_the_ot_decoding(tmp_path: Path, crafted, tshark: str) -> None:
    """The summary of ``sentinel analyze`` has one OT line: events per protocol and the tshark
    version, or why there are none."""
    program = "import sys; from sentinel.cli import main; main(sys.argv[1:])"

    def summary(capture: Path, *args: str) -> str:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        proc = subprocess.run(
            [sys.executable, "-c", program, "analyze", str(capture), "--out", str(out), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200", "SENTINEL_DEBUG": ""},
        )
        assert proc.returncode == 0, proc.stderr
        [line] = [ln for ln in proc.stdout.splitlines() if "OT (tshark)" in ln]
        return line.split("OT (tshark)", 1)[1].strip(" │|")

    version = subprocess.run([tshark, "-v"], capture_output=True, text=True).stdout.split()[2]
    assert summary(crafted["mixed"]) == f"6 events (dnp3 6), tshark {version}"
    assert summary(crafted["mixed"], "--no-ot") == "off"
    assert summary(ICS_SAMPLES / "modbus_test.pcap") == "no OT flow (tshark not started)"
