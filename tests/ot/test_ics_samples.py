"""Decoding of the real ICS captures (tests/ot/data/ics-samples): every frame tshark dissects as
one of the protocols yields the expected events, with tshark's own field values.

The reference is tshark itself through ``-T fields`` (flat field lists per frame), a path
independent of the JSON tree the normalisers read: per frame, the number of messages and their
function codes must agree. Then field values checked by hand, the joins to the native flows,
the inventory, and no policy finding on these benign captures.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.ot.conftest import ICS, ot_findings, records

SAMPLES = sorted(p for p in ICS.glob("*/*.pcap"))
MSP = 0x0A
MESSAGE_ROUTER = 0x02


def fields(capture: Path, display: str, names: list[str]) -> dict[int, list[list[str]]]:
    """frame number -> one value list per field (all occurrences), from tshark -T fields."""
    cmd = ["tshark", "-n", "-r", str(capture), "-Y", display, "-T", "fields", "-E", "occurrence=a"]
    cmd += ["-E", "aggregator=|", "-e", "frame.number"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    frames: dict[int, list[list[str]]] = {}
    for line in out.splitlines():
        cols = line.split("\t")
        frames[int(cols[0])] = [c.split("|") if c else [] for c in cols[1:]]
    return frames


def expected_codes(capture: Path, protocol: str) -> dict[int, list[Any]]:
    """frame -> the codes of the events that frame must give (order-insensitive)."""
    out: dict[int, list[Any]] = {}
    if protocol == "dnp3":
        for frame, (funcs,) in fields(capture, "dnp3", ["dnp3.al.func"]).items():
            if funcs:
                out[frame] = [int(f) for f in funcs]
    elif protocol == "iec104":
        names = ["iec60870_104.type", "iec60870_asdu.typeid"]
        for frame, (types, type_ids) in fields(capture, "iec60870_104", names).items():
            ids = iter(int(t) for t in type_ids)
            out[frame] = [next(ids, None) if int(t, 16) == 0 else None for t in types]
    elif protocol == "s7comm":
        names = [
            "s7comm.header.rosctr",
            "s7comm.param.func",
            "s7comm.param.userdata.funcgroup",
            "s7comm.param.userdata.subfunc",
        ]
        for frame, (rosctr, funcs, groups, subs) in fields(capture, "s7comm", names).items():
            f, g, s = iter(funcs), iter(groups), iter(subs)
            codes: list[Any] = []
            for r in rosctr:
                if int(r) == 7:
                    codes.append(int(next(g)) << 8 | int(next(s)))
                else:
                    codes.append(int(next(f, "0"), 16))
            out[frame] = codes
    elif protocol == "enip":
        names = ["enip.command", "cip.service"]
        for frame, (commands, services) in fields(capture, "enip", names).items():
            codes = [int(c, 16) for c in commands if int(c, 16) not in (0x6F, 0x70)]
            codes += [int(s, 16) & 0x7F for s in services if int(s, 16) & 0x7F != MSP]
            out[frame] = codes
    elif protocol == "bacnet":
        names = ["bvlc.function", "bacapp.confirmed_service", "bacapp.unconfirmed_service"]
        for frame, (funcs, confirmed, unconfirmed) in fields(capture, "bvlc", names).items():
            services = [int(x) for x in confirmed + unconfirmed]
            out[frame] = services or [int(f, 16) for f in funcs]
    return out


def _ints(values: list[str]) -> list[int]:
    return [int(v, 0) for v in values]


def expected_fields(capture: Path, protocol: str) -> dict[int, Any]:
    """frame -> key field values of its messages, from ``-T fields`` (compared per frame):
    IEC 104 (type id, cause, common address) per ASDU and its IOAs; S7 item areas; CIP
    request classes and instances; BACnet invoke id and first object type."""
    out: dict[int, Any] = {}
    if protocol == "iec104":
        names = [
            "iec60870_asdu.typeid",
            "iec60870_asdu.causetx",
            "iec60870_asdu.addr",
            "iec60870_asdu.ioa",
        ]
        for frame, (types, causes, addrs, ioas) in fields(capture, "iec60870_104", names).items():
            columns: list[list[Any]] = [_ints(types), _ints(causes), _ints(addrs)]
            if len(types) == 1:  # a truncated ASDU (malformed) misses its last fields
                columns = [c or [None] for c in columns]
            asdus = sorted(zip(*columns, strict=True), key=str)
            out[frame] = (asdus, sorted(_ints(ioas)))
    elif protocol == "s7comm":
        for frame, (areas,) in fields(capture, "s7comm", ["s7comm.param.item.area"]).items():
            out[frame] = sorted(_ints(areas))
    elif protocol == "enip":
        names = ["cip.class", "cip.instance", "cip.service"]
        for frame, (classes, instances, services) in fields(capture, "cip", names).items():
            cls, inst = sorted(_ints(classes)), sorted(_ints(instances))
            for _ in range(_ints(services).count(MSP)):  # the carrier is no event (above):
                cls.remove(MESSAGE_ROUTER)  # its path, the Message Router, is none either
                inst.remove(1)
            out[frame] = (cls, inst)
    elif protocol == "bacnet":
        names = ["bacapp.invoke_id", "bacapp.objectType"]
        for frame, (invokes, types) in fields(capture, "bacapp", names).items():
            out[frame] = (_ints(invokes)[:1] or [None], _ints(types)[:1] or [None])
    return out


def event_fields(events: list[dict[str, Any]], protocol: str) -> dict[int, Any]:
    """The same values as ``expected_fields``, from Sentinel's events."""
    from sentinel.decode.ot.s7comm import AREAS

    area_codes = {name: code for code, name in AREAS.items()}
    frames: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in events:
        frames[r["frame"]].append(r)
    out: dict[int, Any] = {}
    for frame, evs in frames.items():
        if protocol == "iec104":
            asdus = [r["iec104"].get("asdu") for r in evs]
            asdus = [a for a in asdus if a]
            if not asdus:
                continue
            keys = sorted(((a["type_id"], a["cot"], a["common_address"]) for a in asdus), key=str)
            ioas = sorted(o["address"] for r in evs for o in r["objects"])
            out[frame] = (keys, ioas)
        elif protocol == "s7comm":
            areas = [area_codes[o["area"]] for r in evs for o in r["objects"] if "area" in o]
            if areas:
                out[frame] = sorted(areas)
        elif protocol == "enip":
            paths = [r["enip"] for r in evs if r["direction"] == "request"]
            classes = sorted(p["class"] for p in paths if p.get("class") is not None)
            instances = sorted(p["instance"] for p in paths if p.get("instance") is not None)
            if classes or instances:
                out[frame] = (classes, instances)
        elif protocol == "bacnet":
            [r] = evs  # one APDU per datagram
            if r["bacnet"].get("pdu_type") is None:
                continue  # BVLC only
            obj = r["bacnet"].get("object") or {}
            out[frame] = ([r["bacnet"].get("invoke_id")], [obj.get("type")])
    return out


@pytest.mark.parametrize("capture", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_dissected_message_is_one_event(ot_run, capture: Path) -> None:
    protocol = capture.parent.name
    a = ot_run(capture)
    events = records(a, "ot")
    got: dict[int, list[Any]] = defaultdict(list)
    for r in events:
        assert r["protocol"] == protocol
        got[r["frame"]].append(r["code"])
    expected = expected_codes(capture, protocol)
    assert {f: sorted(c, key=str) for f, c in got.items()} == {
        f: sorted(c, key=str) for f, c in expected.items() if c
    }
    assert a.stats["ot"]["events"] == len(events)
    assert a.stats["ot"]["status"] in ("ok", "idle")
    # Key fields of every message: tshark's flat fields against the events' values.
    assert event_fields(events, protocol) == {
        f: v for f, v in expected_fields(capture, protocol).items() if v and any(v)
    }


@pytest.mark.parametrize("capture", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_events_join_the_native_flows(ot_run, capture: Path) -> None:
    a = ot_run(capture)
    flows = {f["uid"]: f for f in a.flows}
    for r in records(a, "ot"):
        flow = flows[r["uid"]]  # every event has its connection's uid
        assert (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"]) == (
            flow["orig_h"],
            flow["orig_p"],
            flow["resp_h"],
            flow["resp_p"],
        )
        assert flow["ts"] <= r["ts"] <= flow["last_ts"]
    assert a.stats["ot"]["events_without_flow"] == 0


@pytest.mark.parametrize("capture", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_policy_finding_on_benign_captures(ot_run, capture: Path) -> None:
    assert ot_findings(ot_run(capture)) == []


def by_function(a: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records(a, "ot"):
        out[r["function"]].append(r)
    return out


def assets(a: Any) -> dict[str, dict[str, Any]]:
    return {r["ip"]: r for r in a.assets}


def test_iec104_fields(ot_run) -> None:
    events = records(ot_run(ICS / "iec104" / "090813_diverse.pcap"), "ot")
    first = events[0]
    assert (first["function"], first["code"], first["direction"], first["operation"]) == (
        "M_ME_NC_1",
        13,
        "unsolicited",
        "report",
    )
    assert first["iec104"]["asdu"] | {"type_id": 13} == {
        "type_id": 13,
        "sq": False,
        "count": 2,
        "cot": 1,
        "cot_name": "per/cyc",
        "negative": False,
        "test": False,
        "originator": 0,
        "common_address": 3,
    }
    assert first["iec104"]["apci"] == {"type": "I", "tx": 77, "rx": 20}
    assert [(o["address"], o["value"]) for o in first["objects"]] == [(1300, 30), (1301, 708)]
    assert first["unit"] == 3
    kinds = {r["iec104"]["apci"]["type"] for r in events}
    assert kinds == {"I", "S", "U"}
    commands = by_function(ot_run(ICS / "iec104" / "TestDissectIec104.pcap"))["C_DC_NA_1"]
    assert commands[0]["operation"] == "control"
    assert {"select", "qualifier", "value"} <= set(commands[0]["objects"][0])


def test_s7comm_fields_and_identity(ot_run) -> None:
    a = ot_run(ICS / "s7comm" / "s7comm_reading_plc_status.pcap")
    fn = by_function(a)
    setup = fn["Setup communication"]
    assert [r["direction"] for r in setup] == ["request", "response"]
    szl = fn["CPU functions / Read SZL"]
    assert szl[0]["operation"] == "diagnostics" and szl[0]["s7comm"]["szl_id"] == 0x0132
    plc = assets(a)["192.168.1.40"]
    assert "s7comm_server" in plc["roles"]
    assert plc["identity"]["s7comm.serial"] == "S C-C6TW74882012"
    assert plc["identity"]["s7comm.module_name"] == "IM151-8 PN/DP CPU"
    assert plc["identity"]["s7comm.order_number"] == "6ES7 151-8AB01-0AB0"
    assert "s7comm_client" in assets(a)["192.168.1.10"]["roles"]
    reads = by_function(ot_run(ICS / "s7comm" / "s7comm_clean.pcap"))["Read Var"]
    assert reads[0]["objects"][0] | {"address": None} == {
        "address": None,
        "area": "I",
        "byte": 0,
        "bit": 0,
        "size": 2,
        "count": 1,
    }
    assert {r["direction"] for r in reads} == {"request", "response"}


def test_s7comm_plus_is_not_dissected_by_this_wireshark(ot_run) -> None:
    a = ot_run(ICS / "s7comm" / "S7-1511_db2_var1_HMI.pcap")
    assert records(a, "ot") == [] and a.stats["ot"]["events"] == 0


def test_enip_cip_fields_and_identity(ot_run) -> None:
    a = ot_run(ICS / "enip" / "enip_test.pcap")
    request, response = records(a, "ot")
    assert (request["function"], request["direction"]) == ("ListIdentity", "request")
    assert response["enip"]["identity"] == {
        "vendor": 1,
        "device_type": 12,
        "product_code": 58,
        "revision": "3.4",
        "serial": 0x00524D8E,
        "product_name": "1756-ENBT/A",
        "state": 3,
    }
    adapter = assets(a)["10.1.1.164"]
    assert adapter["identity"]["enip.product_name"] == "1756-ENBT/A"
    msp = records(ot_run(ICS / "enip" / "cip-multiple-1.pcap"), "ot")
    assert len(msp) == 11
    assert {r["enip"]["embedded_in"] for r in msp} == {"Multiple_Service_Packet"}
    assert msp[0]["objects"] == [{"address": "class 0x01/instance 1"}]
    assert msp[0]["operation"] == "diagnostics"  # reading the Identity object


def test_bacnet_fields_and_identity(ot_run) -> None:
    a = ot_run(ICS / "bacnet" / "bacnet_test.pcap")
    fn = by_function(a)
    reads = fn["readProperty"]
    assert {r["direction"] for r in reads} == {"request", "response"}
    assert reads[0]["objects"] == [{"address": "device:4194303", "property": "object-identifier"}]
    device = assets(a)["10.1.1.165"]
    assert device["identity"]["bacnet.model-name"] == "MS-NAE4510-2"
    assert device["identity"]["bacnet.firmware-revision"] == "5.1.0.4400"
    assert {r["operation"] for r in fn["BVLC-Result"]} == {"session"}


def test_dnp3_fields(ot_run) -> None:
    events = records(ot_run(ICS / "dnp3" / "select_operate_and_responses.pcap"), "ot")
    assert [r["function"] for r in events] == ["SELECT", "RESPONSE", "OPERATE", "RESPONSE"]
    point = events[0]["objects"][0]
    assert point == {
        "address": 0,
        "group": 12,
        "control": {"op": "LATCH_ON", "tcc": "NUL", "count": 1, "on_ms": 100, "off_ms": 100},
    }
    assert events[1]["objects"][0]["status"] == "SUCCESS"
    assert [r["operation"] for r in events] == ["control"] * 4
    assert events[0]["unit"] == 10 and events[0]["dnp3"]["link"] == {
        "src": 1,
        "dst": 10,
        "dir": True,
        "prm": True,
        "fcb": False,
        "fcv": False,
        "function": 4,
    }
    unsolicited = records(ot_run(ICS / "dnp3" / "unsolcited_response_and_confirm.pcap"), "ot")
    assert [(r["function"], r["direction"]) for r in unsolicited] == [
        ("UNSOLICITED_RESPONSE", "unsolicited"),
        ("CONFIRM", "request"),
    ]


def test_iec104_malformed_asdus_are_labelled(ot_run, tshark: str) -> None:
    """Wireshark's TestDissectIec104.pcap holds truncated ASDUs: each frame tshark flags
    malformed gives an event with status ``malformed``, and no other event has it (APDUs
    shorter than an APCI, flagged too, are no message: no event, as counted above)."""
    capture = ICS / "iec104" / "TestDissectIec104.pcap"
    flagged = fields(capture, "_ws.malformed && iec60870_104.type", [])
    events = records(ot_run(capture), "ot")
    malformed = [r for r in events if r["status"] == "malformed"]
    assert flagged and {r["frame"] for r in malformed} == set(flagged)
    truncated = [
        r for r in malformed if r["code"] is not None and r["iec104"]["asdu"]["cot"] is None
    ]
    assert truncated  # the cause is missing: not reported as 0
