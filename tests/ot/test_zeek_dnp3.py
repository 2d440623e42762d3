"""Conformance with Zeek's DNP3 analyzer on Zeek's own test captures (tests/ot/data/zeek).

``dnp3.jsonl`` must equal Zeek's ``dnp3.log`` (orig/resp, ``fc_request``, ``fc_reply``,
``iin``, record order), and every application message in ``ot.jsonl`` must match Zeek's event
trace (``output``): direction, application control byte, function code, IIN and the object
headers (group/variation, qualifier, start/stop or count). The deliberate differences, each
asserted below: Wireshark 4.0 does not dissect the object headers of START_APPL / STOP_APPL
/ INITIALIZE_APPL requests, and shows the qualifier without its reserved top bit.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.decode.ot.common import find_all
from sentinel.decode.tshark_worker import FrameParser, split_packets
from tests.ot.conftest import ZEEK_DNP3, ot_config, records

EXPECTED = sorted(p.name for p in (ZEEK_DNP3 / "expected").iterdir())
WITH_LOG = [name for name in EXPECTED if (ZEEK_DNP3 / "expected" / name / "dnp3.log").exists()]
NO_OBJECTS_DISSECTED = {0x10, 0x11, 0x12}  # INITIALIZE_APPL, START_APPL, STOP_APPL


def capture(name: str) -> Path:
    return ZEEK_DNP3 / "pcaps" / f"{'dnp3' if name == 'events' else name}.pcap"


def zeek_log(name: str) -> list[tuple]:
    rows = []
    for line in (ZEEK_DNP3 / "expected" / name / "dnp3.log").read_text().splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        rows.append((f[2], int(f[3]), f[4], int(f[5]), f[6], f[7], f[8]))
    return rows


def zeek_messages(name: str) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    for line in (ZEEK_DNP3 / "expected" / name / "output").read_text().splitlines():
        f = [x.strip() for x in line.split(",")]
        if f[0] in ("dnp3_application_request_header", "dnp3_application_response_header"):
            msgs.append(
                {
                    "is_orig": f[1] == "T",
                    "ctl": int(f[2]),
                    "fc": int(f[3]),
                    "iin": int(f[4]) if len(f) > 4 else None,
                    "headers": [],
                }
            )
        elif f[0] == "dnp3_object_header":
            obj, qual, number, low, high = (int(x) for x in f[2:7])
            msgs[-1]["headers"].append((obj, qual, number, low, high))
    return msgs


def ours(rec: dict[str, Any]) -> dict[str, Any]:
    d = rec["dnp3"]
    a = d["application"]
    return {
        "is_orig": rec["is_orig"],
        "ctl": a["fir"] << 7 | a["fin"] << 6 | a["con"] << 5 | a["uns"] << 4 | a["seq"],
        "fc": rec["code"],
        "iin": d.get("iin"),
        "headers": d["objects"],
    }


@pytest.mark.parametrize("name", WITH_LOG)
def test_dnp3_log_agrees_with_zeek(ot_run, name: str) -> None:
    a = ot_run(capture(name))
    log = records(a, "dnp3")
    got = [
        (
            r["orig_h"],
            r["orig_p"],
            r["resp_h"],
            r["resp_p"],
            r["fc_request"] or "-",
            r["fc_reply"] or "-",
            "-" if r["iin"] is None else str(r["iin"]),
        )
        for r in log
    ]
    assert got == zeek_log(name)
    # Same connection ids as the native path's flows, oriented the same way.
    flows = {f["uid"]: f for f in a.flows}
    for r in log:
        flow = flows[r["uid"]]
        assert (flow["orig_h"], flow["orig_p"], flow["resp_h"], flow["resp_p"]) == (
            r["orig_h"],
            r["orig_p"],
            r["resp_h"],
            r["resp_p"],
        )


@pytest.mark.parametrize("name", EXPECTED)
def test_messages_and_object_headers_agree_with_zeek(ot_run, name: str) -> None:
    theirs = zeek_messages(name)
    mine = [ours(r) for r in records(ot_run(capture(name)), "ot")]
    assert len(mine) == len(theirs)
    compared = 0
    for m, z in zip(mine, theirs, strict=True):
        assert (m["is_orig"], m["ctl"], m["fc"], m["iin"]) == (
            z["is_orig"],
            z["ctl"],
            z["fc"],
            z["iin"],
        )
        if not m["headers"] and z["headers"]:
            assert z["fc"] in NO_OBJECTS_DISSECTED  # deliberate: Wireshark shows none
            continue
        assert len(m["headers"]) == len(z["headers"])
        for h, (obj, qual, number, low, high) in zip(m["headers"], z["headers"], strict=True):
            assert h["group"] << 8 | h["variation"] == obj
            assert h["qualifier"] == qual & 0x7F  # deliberate: the reserved bit 7 is not shown
            if h["range_code"] <= 5:
                assert (h["start"], h["stop"]) == (low, high)
            elif h["range_code"] in (7, 8, 9, 0xB):
                assert h["count"] == number
            compared += 1
    assert compared or not any(z["headers"] for z in theirs)


def test_port_20001_is_not_dnp3_for_either(ot_run) -> None:
    """Zeek has no baseline for dnp3_read_p20001 (its analyzer is bound to port 20000); with
    the default ports Sentinel decodes nothing there either, and with port 20001 configured
    it decodes the same messages as on port 20000."""
    pcap = ZEEK_DNP3 / "pcaps" / "dnp3_read_p20001.pcap"
    assert records(ot_run(pcap), "ot") == []
    config = ot_config(dnp3={"ports": [20000, 20001]})
    extra = records(ot_run(pcap, "p20001", config), "ot")
    same = records(ot_run(capture("dnp3_read")), "ot")
    assert [(r["function"], r["dnp3"]["objects"]) for r in extra] == [
        (r["function"], r["dnp3"]["objects"]) for r in same
    ]


def test_application_buffer_is_the_reassembled_fragment(ot_run) -> None:
    """``OTEvent.data`` (Suricata's ``dnp3_data``): application control, function code, IIN
    (responses), objects; as long as the dissector's reassembled fragment, segments joined."""

    multi = 0
    for pcap in sorted((ZEEK_DNP3 / "pcaps").glob("*.pcap")):
        proc = subprocess.Popen(
            [
                "tshark",
                "-n",
                "-r",
                str(pcap),
                "-Y",
                "dnp3",
                "-T",
                "json",
                "--no-duplicate-keys",
                "-J",
                "frame ip ipv6 tcp udp dnp3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        parser = FrameParser(["dnp3"], 64, {})
        assert proc.stdout is not None
        for raw in split_packets(proc.stdout):
            lengths = [
                int(n) for n in find_all(orjson.loads(raw), "dnp3.al.fragment.reassembled.length")
            ]
            events = [ev for _, ev in parser.parse(raw)]
            assert [len(ev.data or b"") for ev in events] == lengths
            for ev in events:
                d = ev.detail["dnp3"]
                a = d["application"]
                assert ev.data is not None
                assert (
                    ev.data[0]
                    == a["fir"] << 7 | a["fin"] << 6 | a["con"] << 5 | a["uns"] << 4 | a["seq"]
                )
                assert ev.data[1] == ev.code
                if ev.code >= 0x80:
                    assert int.from_bytes(ev.data[2:4], "big") == d["iin"]
                multi += d["transport"]["fir"] is False
        proc.wait()
    assert multi >= 1  # fragments spread over several transport segments were rebuilt
