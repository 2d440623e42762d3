"""Decoding of the crafted captures (tests/ot/craft.py): the fields the issue names that the
public corpora lack (BACnet WriteProperty priority and ReinitializeDevice state, IEC 104
select/execute and qualifier, S7 Write Var area and warm/cold start, CIP attribute of the
path, DNP3 and IEC 104 identities in the inventory), and that Wireshark dissects every
crafted message without a malformed flag (they are valid protocol messages).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.ot.conftest import records


@pytest.mark.parametrize(
    "name",
    [
        "s7",
        "s7_force",
        "cip",
        "cip_firmware",
        "iec104",
        "iec104_auth_fail",
        "iec104_auth_ok",
        "bacnet",
        "dnp3_auth_fail",
        "dnp3_auth_ok",
        "dnp3_clock",
        "iec104_stopdt_other",
    ],
)
def test_crafted_captures_are_not_malformed(crafted, tshark: str, name: str) -> None:
    """No malformed flag and no expert note of severity warning (0x600000) or error."""
    display = "_ws.malformed || _ws.expert.severity >= 0x600000"
    cmd = [tshark, "-n", "-r", str(crafted[name]), "-Y", display, "-T", "fields"]
    out = subprocess.run([*cmd, "-e", "frame.number"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []


def by_function(a: Any, direction: str = "request") -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records(a, "ot"):
        if r["direction"] == direction:
            out.setdefault(r["function"], []).append(r)
    return out


def test_bacnet_write_priority_and_reinitialize_state(ot_run, crafted) -> None:
    fn = by_function(ot_run(crafted["bacnet"]))
    [write] = fn["writeProperty"]
    assert write["bacnet"]["priority"] == 8
    assert write["bacnet"]["object"] == {"type": 2, "type_name": "analog-value", "instance": 1}
    assert write["objects"] == [
        {"address": "analog-value:1", "property": "present-value", "value": 72.5}
    ]
    [reinit] = fn["reinitializeDevice"]
    assert reinit["bacnet"]["state"] == "coldstart"
    assert reinit["bacnet"]["password"] is True and "abcd" not in str(reinit)


def test_iec104_select_execute_and_qualifier(ot_run, crafted) -> None:
    a = ot_run(crafted["iec104"])
    commands = by_function(a)["C_SC_NA_1"]
    assert [c["objects"] for c in commands] == [
        [{"address": 1001, "select": True, "qualifier": 0, "value": 1}],
        [{"address": 1001, "select": False, "qualifier": 0, "value": 1}],
    ]
    [setpoint] = by_function(a)["C_SE_NC_1"]
    assert setpoint["objects"] == [
        {"address": 2001, "value": 55.5, "select": False, "qualifier": 0}
    ]
    assert {c["iec104"]["asdu"]["cot_name"] for c in commands} == {"act"}
    assert {c["iec104"]["asdu"]["cot_name"] for c in by_function(a, "response")["C_SC_NA_1"]} == {
        "actcon"
    }


def test_s7_write_var_area_and_start_modes(ot_run, crafted) -> None:
    fn = by_function(ot_run(crafted["s7"]))
    [write] = fn["Write Var"]
    assert write["operation"] == "write"
    (item,) = write["objects"]
    assert {k: item[k] for k in ("area", "db", "address", "byte", "bit", "count")} == {
        "area": "DB",
        "db": 1,
        "address": "DB1.10.0",
        "byte": 10,
        "bit": 0,
        "count": 1,
    }
    assert item["data"] == "1234"
    starts = fn["PI-Service P_PROGRAM"]
    assert [s["s7comm"]["start_mode"] for s in starts] == ["warm", "cold"]
    assert [s["operation"] for s in starts] == ["start", "start"]


def test_cip_path_attribute(ot_run, crafted) -> None:
    fn = by_function(ot_run(crafted["cip"]))
    identity, _ = fn["Get_Attribute_Single"]  # the second one is inside the MSP
    assert {k: identity["enip"].get(k) for k in ("class", "instance", "attribute")} == {
        "class": 1,
        "instance": 1,
        "attribute": 7,
    }
    [time_set] = fn["Set_Attribute_Single"]
    assert (time_set["enip"]["class"], time_set["enip"]["attribute"]) == (0x43, 6)
    assert time_set["objects"] == [{"address": "class 0x43/instance 1/attribute 6"}]
    assert time_set["operation"] == "time_sync"


def test_dnp3_and_iec104_identities_in_the_inventory(ot_run, crafted) -> None:
    dnp3 = {r["ip"]: r for r in ot_run(crafted["dnp3_auth_ok"]).assets}
    assert dnp3["192.0.2.80"]["identity"]["dnp3.address"] == "10"
    assert dnp3["192.0.2.70"]["identity"]["dnp3.address"] == "1"
    assert "dnp3_server" in dnp3["192.0.2.80"]["roles"]
    iec104 = {r["ip"]: r for r in ot_run(crafted["iec104"]).assets}
    assert iec104["192.0.2.60"]["identity"]["iec104.common_address"] == "7"
    assert "iec104_server" in iec104["192.0.2.60"]["roles"]
    assert "iec104.common_address" not in (iec104["192.0.2.50"].get("identity") or {})
