"""The live lab: real namespaces, pymodbus PLCs, HMIs, attacks, sensor (root only).

Lean on purpose (about four minutes in all): one end-to-end run attacks two sites while the
third runs normal traffic only, and checks every scenario is detected and the normal site
gives no finding; a replay compares the live sensor with ``analyze`` on the same capture;
the hygiene test checks ``lab down`` leaves nothing behind, even after a crash.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.lab import live
from sentinel.lab.config import load_site, merged_config
from sentinel.lab.labels import read_labels
from sentinel.lab.scenarios import load_scenarios

from .conftest import analyze, findings, sentinel, sentinel_config

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
    ),
]
NORMAL_SECONDS = 180.0


@pytest.fixture(autouse=True)
def lab_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    if live.lab_namespaces():
        pytest.skip("a lab is already up on this machine")
    monkeypatch.setenv("SENTINEL_LAB_STATE", str(tmp_path / "state"))
    yield
    live.down()


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _lab_processes() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"sentinel.lab.live" in cmdline or b"sentinel.lab.plc" in cmdline:
            pids.append(int(entry.name))
    return [p for p in pids if p != os.getpid()]


def test_refuses_subnets_that_overlap_host_routes() -> None:
    """Run the route check inside a namespace whose own route overlaps the hospital's."""
    ns = "sentinel-test-routes"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"], check=True
        )
        subprocess.run(["ip", "-n", ns, "addr", "add", "198.51.100.1/25", "dev", "d0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "d0", "up"], check=True)
        code = (
            "from sentinel.lab.live import check_routes\n"
            "from sentinel.lab.config import load_site\n"
            "import sys\n"
            "try:\n    check_routes([load_site(sys.argv[1])])\nexcept Exception as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        clash = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, "hospital"],
            capture_output=True,
            text=True,
        )
        assert clash.returncode == 3 and "overlaps the host's route 198.51.100.0/25" in clash.stdout
        fine = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, "transport"],
            capture_output=True,
            text=True,
        )
        assert fine.returncode == 0, fine.stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_down_leaves_nothing_even_after_a_crash(tmp_path: Path) -> None:
    links_before = _root_links()
    routes_before = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    live.up(["transport"], str(tmp_path / "out"))
    st = live.status()
    assert st["up"] and all(p["alive"] for p in st["processes"].values())
    assert "sl-tran-p148" in st["namespaces"] and "sl-att" in st["namespaces"]
    pids = [p["pid"] for p in st["processes"].values()]
    # no route out: the hosts have only their subnet
    routes = subprocess.run(
        ["ip", "-n", "sl-tran-hmi", "route"], capture_output=True, text=True
    ).stdout
    assert "default" not in routes and routes.split()[0] == "198.51.100.128/26"
    # the host's own namespace was not touched
    assert _root_links() == links_before
    # a recorded live run: a capture and its labels, which analyze and score agree with
    rec = tmp_path / "rec"
    proc = sentinel(
        "lab",
        "record",
        "--out",
        str(rec),
        "--seconds",
        "10",
        "--scenarios",
        "write-setpoint-out-of-range",
        "--seed",
        "4",
    )
    assert "1 attacks" in proc.stdout
    label = read_labels(rec / "labels.jsonl")[0]
    assert label.attacker == "198.51.100.173" and label.technique == "T0836"
    analyze(rec / "capture.pcap", rec / "out", sentinel_config("transport", tmp_path))
    report = json.loads(
        sentinel("lab", "score", str(rec / "out"), str(rec / "labels.jsonl"), "--json").stdout
    )
    assert report["scenarios"][0]["detected"] and report["false_positives"] == 0
    # crash: the state is lost and a stray process runs in a lab namespace
    Path(os.environ["SENTINEL_LAB_STATE"], "state.json").unlink()
    stray = subprocess.Popen(
        ["ip", "netns", "exec", "sl-tran-eng", "sleep", "300"], start_new_session=True
    )
    time.sleep(0.3)
    proc = sentinel("lab", "down")
    assert "namespaces removed" in proc.stdout
    stray.wait(10)
    assert live.lab_namespaces() == []
    assert not [p for p in pids if live._alive(p)]
    assert _lab_processes() == []
    assert _root_links() == links_before
    assert subprocess.run(["ip", "route"], capture_output=True, text=True).stdout == routes_before
    assert sentinel("lab", "status").stdout.strip() == "lab is down"


def _plan() -> list[dict[str, Any]]:
    """Every scenario, on four lanes (one per PLC of hospital and energy); a lane's attacks
    start 62 s apart so that Sentinel's one-minute folding of repeated findings never merges
    two attacks on the same PLC."""
    lanes = [
        ("hospital", "198.51.100.20"),
        ("hospital", "198.51.100.21"),
        ("energy", "198.51.100.84"),
        ("energy", "198.51.100.85"),
    ]
    plan = []
    for i, name in enumerate(load_scenarios()):
        site, target = lanes[i % len(lanes)]
        plan.append(
            {
                "site": site,
                "scenario": name,
                "target": target,
                "lane": i % len(lanes),
                "spacing": 62.0,
            }
        )
    return plan


def test_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "sensor"
    started = time.time()
    live.up(["hospital", "energy", "transport"], str(out))
    labels = tmp_path / "labels.jsonl"
    live.run_attacks(None, [], 9, str(labels), gap=1.0, plan=_plan())
    remaining = started + NORMAL_SECONDS - time.time()
    if remaining > 0:
        time.sleep(remaining)
    live.down()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["live"]["kernel_drops"] == 0
    assert stats["live"]["stopped"] - started >= NORMAL_SECONDS
    truth = read_labels(labels)
    assert sorted(lab.scenario for lab in truth) == sorted(load_scenarios())
    # the transport site ran normal traffic only, for the whole run: no finding about it
    transport = ipaddress.ip_network(load_site("transport").lab.subnet)
    found = findings(out)
    about_transport = [
        f for f in found if any(ipaddress.ip_address(ip) in transport for ip in f["related"]["ip"])
    ]
    assert about_transport == [], about_transport
    modbus = [json.loads(line) for line in (out / "modbus.jsonl").read_text().splitlines()]
    transport_msgs = [m for m in modbus if ipaddress.ip_address(m["resp_h"]) in transport]
    assert len(transport_msgs) > 2 * 7 * (NORMAL_SECONDS - 30)  # it was polled all along
    report = json.loads(sentinel("lab", "score", str(out), str(labels), "--json").stdout)
    assert report["false_positives"] == 0, report
    missed = {s["name"] for s in report["scenarios"] if not s["detected"]}
    assert not missed, f"not detected: {sorted(missed)}"


def _normalised(
    doc: dict[str, Any], origin: float, uids: dict[str, str]
) -> tuple[dict[str, Any], list[float]]:
    """A finding without its times and ids (flow uids renamed in order of appearance), and
    its times relative to ``origin``."""
    from sentinel.lab.score import _epoch

    doc = json.loads(json.dumps(doc))
    event = doc["event"]
    times = [_epoch(event.pop(key)) - origin for key in ("start", "end")]
    del event["id"], doc["@timestamp"]
    sentinel_part = doc["sentinel"]
    if "flow_uid" in sentinel_part:
        uid = sentinel_part["flow_uid"]
        sentinel_part["flow_uid"] = uids.setdefault(uid, f"flow{len(uids)}")
    evidence = sentinel_part.get("evidence", {})
    for key, value in list(evidence.items()):
        if isinstance(value, float) and value > 1e9:  # an epoch time
            times.append(evidence.pop(key) - origin)
    return doc, times


@pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="tcpreplay not installed")
def test_replay_gives_the_findings_of_analyze(tmp_path: Path) -> None:
    syn = tmp_path / "syn"
    sentinel(
        "lab",
        "synth",
        "--site",
        "hospital",
        "--minutes",
        "0.5",
        "--seed",
        "3",
        "--scenarios",
        "recon-function-code-sweep,write-setpoint-out-of-range,malformed-frames",
        "--out",
        str(syn),
    )
    proc = sentinel("lab", "replay", str(syn / "capture.pcap"), "--out", str(tmp_path / "live"))
    assert "0 dropped by the kernel" in proc.stdout
    config = tmp_path / "all.yaml"
    sites = [load_site(n) for n in ("hospital", "energy", "transport")]
    data = merged_config(sites).model_dump(exclude={"lab"}, exclude_defaults=True)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    stats = analyze(syn / "capture.pcap", tmp_path / "analyze", config)
    live_stats = json.loads((tmp_path / "live" / "stats.json").read_text())
    assert live_stats["packets"] == stats["packets"]
    assert live_stats["modbus_by_function"] == stats["modbus_by_function"]
    expected = findings(tmp_path / "analyze")
    got = findings(tmp_path / "live")
    assert len(expected) >= 5
    assert len(got) == len(expected)
    from sentinel.lab.score import _epoch

    def origin(docs: list[dict[str, Any]]) -> float:
        return min(_epoch(d["event"]["start"]) for d in docs)

    uids_a: dict[str, str] = {}
    uids_b: dict[str, str] = {}
    a = [_normalised(d, origin(expected), uids_a) for d in expected]
    b = [_normalised(d, origin(got), uids_b) for d in got]
    assert [doc for doc, _ in a] == [doc for doc, _ in b]
    for (_, times_a), (_, times_b) in zip(a, b, strict=True):
        # replayed at the captured pace: the same times, give or take tcpreplay's pacing
        # (measured here: it runs up to 1.5 % slow)
        for ta, tb in zip(times_a, times_b, strict=True):
            assert abs(ta - tb) <= 0.1 + 0.03 * abs(ta)
