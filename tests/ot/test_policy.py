"""The OT policy detector (detectors/ot_policy.py): positive and negative captures per rule.

Positives come from Zeek's DNP3 test captures (restarts, stops, file deletion, file download,
disabled unsolicited reporting are in them) and from crafted captures of what the public
corpora lack (tests/ot/craft.py). Negatives: the same operations from a declared engineering
workstation or an allowed master, a disable that is re-enabled in time, a DCC enable, a
disabled rule, and the benign ics-samples (tests/ot/test_ics_samples.py).
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.ot.conftest import ZEEK_DNP3, ot_config, ot_findings


def rules(a) -> Counter[str]:
    return Counter(rule for rule, _ in ot_findings(a))


def test_s7comm_operations(ot_run, crafted) -> None:
    found = ot_findings(ot_run(crafted["s7"]))
    assert set(found) == {
        ("9000701", "PLC Stop"),
        ("9000702", "PI-Service P_PROGRAM"),
        ("9000704", "Request download"),
        ("9000707", "PI-Service _DELE"),
        ("9000705", "Start upload"),
        ("9000713", "Security / PLC password"),
    }
    # Repeats of a rule between the same hosts fold into one finding with a count.
    a = ot_run(crafted["s7"])
    counts = {f["rule"]["id"]: f["sentinel"]["count"] for f in a.findings}
    assert counts["9000704"] == 4  # request download, download block, download ended, _INSE
    assert counts["9000707"] == 2  # _DELE and the memory reset
    assert counts["9000702"] == 2  # warm and cold start


def test_engineering_workstation_may_program_the_plc(ot_run, crafted) -> None:
    config = ot_config(
        assets=[
            {"address": "192.0.2.10", "role": "engineering"},
            {"address": "192.0.2.20", "role": "plc", "allowed_masters": ["192.0.2.10"]},
        ]
    )
    # Password failures are reported whoever the client is.
    assert set(rules(ot_run(crafted["s7"], "engineering", config))) == {"9000713"}
    not_allowed = ot_config(
        assets=[
            {"address": "192.0.2.10", "role": "engineering"},
            {"address": "192.0.2.20", "role": "plc", "allowed_masters": ["192.0.2.11"]},
        ]
    )
    assert "9000701" in rules(ot_run(crafted["s7"], "engineering-not-allowed", not_allowed))


def test_cip_operations(ot_run, crafted) -> None:
    found = ot_findings(ot_run(crafted["cip"]))
    assert Counter(found) == Counter(
        {
            ("9000703", "Reset"): 1,  # two resets (one in a Multiple Service Packet), folded
            ("9000701", "Stop"): 1,
            ("9000713", "Stop"): 1,  # refused: privilege violation
            ("9000704", "Initiate_Download"): 1,
        }
    )
    a = ot_run(crafted["cip"])
    reset = next(f for f in a.findings if f["rule"]["id"] == "9000703")
    assert reset["sentinel"]["count"] == 2


def test_iec104_restart_and_learned_masters(ot_run, crafted) -> None:
    assert ot_findings(ot_run(crafted["iec104"])) == [("9000703", "C_RP_NA_1")]
    found = ot_findings(ot_run(crafted["iec104_rogue"]))
    rogue = [f for f in ot_run(crafted["iec104_rogue"]).findings if f["rule"]["id"] != "9000703"]
    assert sorted(found) == sorted(
        [
            ("9000703", "C_RP_NA_1"),  # the usual master
            ("9000703", "C_RP_NA_1"),  # the rogue one
            ("9000708", "C_SC_NA_1"),  # select and execute: one finding (reported once)
            ("9000709", "C_SE_NC_1"),
            ("9000712", "C_CS_NA_1"),
        ]
    )
    assert {f["source"]["ip"] for f in rogue} == {"192.0.2.99"}


@pytest.mark.parametrize("allowed, expected", [("192.0.2.99", True), ("192.0.2.50", False)])
def test_iec104_allowed_masters(ot_run, crafted, allowed: str, expected: bool) -> None:
    config = ot_config(assets=[{"address": "192.0.2.60", "allowed_masters": [allowed]}])
    got = rules(ot_run(crafted["iec104"], f"allowed-{allowed}", config))
    assert ("9000708" in got) is expected
    assert ("9000709" in got) is expected
    assert ("9000712" in got) is expected
    assert got["9000703"] == 1


def test_bacnet_operations(ot_run, crafted) -> None:
    assert set(ot_findings(ot_run(crafted["bacnet"]))) == {
        ("9000703", "reinitializeDevice"),
        ("9000711", "deviceCommunicationControl"),
        ("9000713", "deviceCommunicationControl"),  # password failure
        ("9000707", "deleteObject"),  # of a file object
        ("9000704", "atomicWriteFile"),
    }
    enabled = rules(ot_run(crafted["bacnet_enable"]))
    assert "9000711" not in enabled and "9000703" in enabled


def test_dnp3_unsolicited_reporting(ot_run, crafted) -> None:
    assert ot_findings(ot_run(crafted["dnp3_unsol_off"])) == [("9000710", "DISABLE_UNSOLICITED")]
    assert ot_findings(ot_run(crafted["dnp3_unsol_restarted"])) == []


@pytest.mark.parametrize(
    "name, expected",
    [
        ("dnp3_file_del", {("9000707", "DELETE_FILE")}),
        ("dnp3_file_write", {("9000704", "OPEN_FILE")}),
        ("dnp3_file_read", set()),
        ("dnp3_en_spon", set()),
        ("dnp3_read", set()),
        ("dnp3_select_operate", set()),
        ("dnp3_udp_select_operate", set()),
        ("dnp3_write", set()),
        (
            "dnp3",
            {
                ("9000703", "COLD_RESTART"),
                ("9000703", "WARM_RESTART"),
                ("9000701", "STOP_APPL"),
                ("9000710", "DISABLE_UNSOLICITED"),
                ("9000708", "SELECT"),  # a new master, years into the concatenated trace
            },
        ),
    ],
)
def test_dnp3_on_zeek_captures(ot_run, name: str, expected: set) -> None:
    assert set(ot_findings(ot_run(ZEEK_DNP3 / "pcaps" / f"{name}.pcap"))) == expected


def test_finding_document(ot_run) -> None:
    a = ot_run(ZEEK_DNP3 / "pcaps" / "dnp3_file_del.pcap")
    (doc,) = [f for f in a.findings if f["sentinel"]["detector"] == "ot_policy"]
    assert doc["rule"]["id"] == "9000707" and doc["rule"]["ruleset"] == "sentinel-ot-policy"
    assert doc["threat"]["technique"]["id"] == ["T0809"]
    assert doc["threat"]["framework"] == "MITRE ATT&CK for ICS"
    assert doc["network"] == {"transport": "tcp", "protocol": "dnp3"}
    assert doc["event"]["dataset"] == "sentinel.dnp3"
    assert (doc["source"]["ip"], doc["destination"]["port"]) == ("130.126.142.250", 20000)
    flow_uids = {f["uid"] for f in a.flows}
    assert doc["sentinel"]["flow_uid"] in flow_uids
    evidence = doc["sentinel"]["evidence"]
    assert evidence["function"] == "DELETE_FILE" and evidence["code"] == 27
    assert (
        evidence["dnp3"]["file"]["name"]
        == "C:/temp/DNPDeviceConfiguration written to Remote Device.xml"
    )
    assert evidence["dnp3"]["objects"][0]["group"] == 70


def test_disabled_rules(ot_run) -> None:
    config = ot_config(policy={"disabled_rules": [9000703, 9000710]})
    got = rules(ot_run(ZEEK_DNP3 / "pcaps" / "dnp3.pcap", "disabled", config))
    assert "9000703" not in got and "9000710" not in got and "9000701" in got


ENGINEERING = [
    {"address": "192.0.2.10", "role": "engineering"},
    {"address": "192.0.2.30", "role": "engineering"},
]


def test_cip_firmware_update(ot_run, crafted) -> None:
    a = ot_run(crafted["cip_firmware"])
    assert ot_findings(a) == [("9000706", "unknown-75")]  # service 0x4B on class 0xA1
    [f] = a.findings
    assert f["threat"]["technique"]["id"] == ["T0857"]
    assert f["sentinel"]["evidence"]["enip"]["class"] == 0xA1
    assert f["source"]["ip"] == "192.0.2.30"
    engineering = ot_config(assets=ENGINEERING)
    assert ot_findings(ot_run(crafted["cip_firmware"], "engineering", engineering)) == []


def test_s7_force(ot_run, crafted) -> None:
    a = ot_run(crafted["s7_force"])
    assert ot_findings(a) == [("9000714", "Programmer commands / Force")]
    assert a.findings[0]["threat"]["technique"]["id"] == ["T0835"]
    engineering = ot_config(assets=ENGINEERING)
    assert ot_findings(ot_run(crafted["s7_force"], "engineering", engineering)) == []


def test_iec104_authentication_error(ot_run, crafted) -> None:
    """S_ER_NA_1 travels with cause 14 (authentication), which reads as a request."""
    a = ot_run(crafted["iec104_auth_fail"])
    assert ot_findings(a) == [("9000713", "S_ER_NA_1")]
    [f] = a.findings
    assert (f["source"]["ip"], f["destination"]["ip"]) == ("192.0.2.50", "192.0.2.60")
    assert f["sentinel"]["evidence"]["iec104"]["asdu"]["cot"] == 14
    # Challenge and reply without an error: authentication traffic, no finding.
    assert ot_findings(ot_run(crafted["iec104_auth_ok"])) == []


def test_dnp3_authentication_error(ot_run, crafted) -> None:
    a = ot_run(crafted["dnp3_auth_fail"])
    assert ot_findings(a) == [("9000713", "AUTHENTICATE_RESPONSE")]
    [f] = a.findings
    assert f["sentinel"]["evidence"]["status"] == "authentication_error"
    assert (f["source"]["ip"], f["destination"]["ip"]) == ("192.0.2.70", "192.0.2.80")
    assert ot_findings(ot_run(crafted["dnp3_auth_ok"])) == []


def test_dnp3_clock_set_by_a_new_host(ot_run, crafted) -> None:
    """The usual master's clock write after learning is allowed; the new host's is not."""
    a = ot_run(crafted["dnp3_clock"])
    assert ot_findings(a) == [("9000712", "WRITE")]
    assert a.findings[0]["source"]["ip"] == "192.0.2.99"
    allowed = ot_config(assets=[{"address": "192.0.2.80", "allowed_masters": ["192.0.2.99"]}])
    a = ot_run(crafted["dnp3_clock"], "allowed", allowed)
    assert ot_findings(a) == [("9000712", "WRITE")]
    assert a.findings[0]["source"]["ip"] == "192.0.2.70"  # declared masters replace learning
    both = ot_config(
        assets=[{"address": "192.0.2.80", "allowed_masters": ["192.0.2.70", "192.0.2.99"]}]
    )
    assert ot_findings(ot_run(crafted["dnp3_clock"], "both-allowed", both)) == []


def test_dnp3_authentication_response_iin_and_objects(ot_run, crafted) -> None:
    """Wireshark 4.0 shows neither the IIN nor the objects of an Authentication Response:
    both come from the fragment's bytes, and a valid one raises no protocol event."""
    from tests.ot.conftest import records

    for name, last in (("dnp3_auth_ok", (0x81, 12, 1)), ("dnp3_auth_fail", (0x83, 120, 7))):
        a = ot_run(crafted[name])
        responses = [r for r in records(a, "ot") if r["direction"] == "response"]
        assert [r["code"] for r in responses] == [0x83, last[0]]
        for r in responses:
            assert r["dnp3"]["iin"] == 0x0200 and r["flags"] == ["class_1_events"]
            assert "events" not in r["dnp3"]
        challenge = responses[0]["dnp3"]["objects"]
        assert [(o["group"], o["variation"], o["qualifier"]) for o in challenge] == [(120, 1, 0x5B)]
        assert responses[0]["status"] == "ok"
        (obj,) = responses[1]["dnp3"]["objects"]
        assert (obj["group"], obj["variation"]) == last[1:]
        assert [r["iin"] for r in records(a, "dnp3")] == [0x0200, 0x0200]


def test_iec104_data_transfer_stopped(ot_run, crafted) -> None:
    """STOPDT not followed by STARTDT to the same RTU within the grace: reporting blocked."""
    a = ot_run(crafted["iec104_stopdt"])
    assert ot_findings(a) == [("9000710", "STOPDT_ACT")]
    assert a.findings[0]["threat"]["technique"]["id"] == ["T0804"]
    assert ot_findings(ot_run(crafted["iec104_stopdt_same"])) == []
    assert ot_findings(ot_run(crafted["iec104_stopdt_other"])) == []  # redundancy switch-over
