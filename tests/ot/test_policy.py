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
