"""The DNP3 keywords through the real pipeline: a crafted DNP3 session (tests/ot/craft.py,
``dnp3_keyword_session``) decoded by tshark, matched by the rules detector, written as EVE.

Each message carries its own application sequence number, so an alert is named by the
message it fired on: ``qN`` is the request (to server) with sequence N, ``rN`` the response
(to client). The session:

====  ============================================  ====  ========================
seq   request (objects)                             IIN   response
====  ============================================  ====  ========================
0     READ g60v2 (class 1)                          0000  RESPONSE
1     DIRECT_OPERATE g12v1 (CROB, 2 data blocks)    8000  RESPONSE g12v1 (echo)
2     COLD_RESTART                                  0020  RESPONSE
3     WRITE g80v1 (IIN clear)                       1002  RESPONSE
5     -                                             0200  UNSOLICITED_RESPONSE
6     CONFIRM (not a transaction in Suricata)       -     -
7     READ g60v1 (class 0)                          0008  RESPONSE
====  ============================================  ====  ========================
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from sentinel.config import Config
from sentinel.detectors.suricata import RuleDetector
from sentinel.pipeline import Pipeline
from sentinel.rules.loader import load_ruleset
from sentinel.sinks.eve import EveSink
from tests.ot import craft

ALL_TX = ["q0", "q1", "q2", "q3", "q7", "r0", "r1", "r2", "r3", "r5", "r7"]
RESPONSES = ["r0", "r1", "r2", "r3", "r5", "r7"]

# (options, the messages the rule must alert on)
CASES: list[tuple[str, list[str]]] = [
    # dnp3_func: names, numbers, 9.x integer forms, direction
    ("dnp3_func:read;", ["q0", "q7"]),
    ("dnp3_func:1;", ["q0", "q7"]),
    ("dnp3_func:response;", ["r0", "r1", "r2", "r3", "r7"]),
    ("dnp3_func:unsolicited_response;", ["r5"]),
    ("dnp3_func:>128;", RESPONSES),
    ("dnp3_func:1-6;", ["q1", "q3"]),  # exclusive: 2..5
    ("dnp3_func:!1-6;", ["q0", "q2", "q7", *RESPONSES]),
    ("dnp3_func:!read;", ["q1", "q2", "q3", *RESPONSES]),
    ("dnp3_func:confirm;", []),  # CONFIRM requests are ignored, as in Suricata
    ("dnp3_func:0x0d;", ["q2"]),
    ("DNP3.FUNC:COLD_RESTART;", ["q2"]),
    ("dnp3_func:cold_restart; flow:to_client;", []),
    ("dnp3_func:read; flow:established,to_server;", ["q0", "q7"]),
    ("dnp3_func:read; flow:not_established;", []),
    # dnp3_ind: 7/8 forms (any bit, IIN2 masked with 0x0F), 9.x forms, to client only
    ("dnp3_ind:device_restart;", ["r1"]),
    ("dnp3_ind:0x8000;", ["r1"]),
    ("dnp3_ind:config_corrupt;", []),  # quirk: IIN2 & 0x0F
    ("dnp3_ind:0x0020;", []),  # the same quirk, numeric form
    ("dnp3_ind:*config_corrupt;", ["r2"]),  # 9.x: all 16 bits
    ("dnp3_ind:need_time,object_unknown;", ["r3"]),
    ("dnp3_ind:class_1_events , device_restart;", ["r1", "r5"]),
    ("dnp3_ind:+need_time,object_unknown;", ["r3"]),
    ("dnp3_ind:+need_time,device_restart;", []),
    ("dnp3_ind:-need_time,object_unknown;", ["r0", "r1", "r2", "r5", "r7"]),
    ("dnp3_ind:=class_1_events;", ["r5"]),
    ("dnp3_ind:=need_time;", []),  # r3 has object_unknown too
    ("dnp3_ind:+device_restart,!need_time;", ["r1"]),
    ("dnp3_ind:!device_restart;", ["r0", "r2", "r3", "r5", "r7"]),
    ("dnp3_ind:*device_restart,!need_time;", ["r0", "r1", "r2", "r5", "r7"]),
    ("dnp3_ind:!0;", ["r1", "r2", "r3", "r5", "r7"]),
    ("dnp3_ind:=0;", ["r0"]),
    ("dnp3_ind:010;", ["r7"]),  # octal 8: event_buffer_overflow
    ("dnp3_ind:8;", ["r7"]),
    ("dnp3_ind:&0xFF00=0x0200;", ["r5"]),
    ("dnp3.ind:>0x1000;", ["r1", "r3"]),
    ("dnp3_ind:device_restart; flow:to_server;", []),
    # dnp3_obj: decimal, hex, octal quirk, both directions
    ("dnp3_obj:60,2;", ["q0"]),
    ("dnp3_obj:074,02;", ["q0"]),  # octal 60,2
    ("dnp3_obj:74,2;", []),
    ("dnp3_obj:12,1;", ["q1", "r1"]),
    ("dnp3.obj:0x50,1;", ["q3"]),
    ("dnp3_obj:60,1;", ["q7"]),
    # dnp3_data: the application buffer, content and relative keywords in it
    ('dnp3_data; content:"|c0 01 3c 02 06|"; startswith; endswith;', ["q0"]),
    (
        'dnp3_data; content:"|81|"; offset:1; depth:1; content:"|80 00|"; distance:0; within:2;',
        ["r1"],
    ),
    ('dnp3_data; content:"|05 64|";', []),  # no link header in the buffer
    ('dnp3.data; content:"|0c 01 28|"; content:"|64 00 00 00 64|"; distance:0;', ["q1", "r1"]),
    (r'dnp3_data; pcre:"/^.\x0d$/s";', ["q2"]),
    ("dnp3_data; byte_test:2,=,0x1002,2;", ["r3"]),
    ('dnp3_data; content:!"|81|"; offset:1; depth:1; flow:to_client;', ["r5"]),
    # several keywords are ANDed
    ("dnp3_func:response; dnp3_ind:device_restart; dnp3_obj:12,1;", ["r1"]),
    ("dnp3_func:direct_operate; dnp3_ind:device_restart;", []),
    # no keyword: every transaction
    ("", ALL_TX),
]
HEADERS = [
    ("alert dnp3 any any -> any 20001", "dnp3_func:read;", []),
    ("alert dnp3 any any -> any $DNP3_PORTS", "dnp3_func:read;", ["q0", "q7"]),
    ("alert dnp3 $HOME_NET any -> any any", "dnp3_func:read;", []),  # 192.0.2.x is outside
    ("alert tcp any any -> any any", "dnp3_func:read;", ["q0", "q7"]),  # the keyword sets dnp3
    ("alert dnp3 any 20000 <> any any", "dnp3_func:response;", ["r0", "r1", "r2", "r3", "r7"]),
    ("alert modbus any any -> any any", "", []),  # Modbus rules never see DNP3
]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """sid -> the messages it alerted on (one EVE alert each)."""
    assert shutil.which("tshark"), "tshark is installed by .ci/run and the Makefile"
    d = tmp_path_factory.mktemp("dnp3-keywords")
    pcap = craft.dnp3_keyword_session(d / "session.pcap")
    lines = [
        f'alert dnp3 any any -> any any (msg:"case {i}"; {opts} sid:{i};)'
        for i, (opts, _) in enumerate(CASES, 1)
    ]
    lines += [
        f'{header} (msg:"header {i}"; {opts} sid:{1000 + i};)'
        for i, (header, opts, _) in enumerate(HEADERS, 1)
    ]
    (d / "local.rules").write_text("\n".join(lines) + "\n")
    config = Config()
    rs = load_ruleset(config, (str(d / "local.rules"),), include_default=False)
    assert rs.errors == []
    out = d / "out"
    eve = EveSink(out)
    Pipeline(config, out, [RuleDetector(config, rs, eve=eve)], [eve]).run(pcap)
    names = {}
    for line in (out / "ot.jsonl").open():
        r = json.loads(line)
        names[r["frame"]] = ("q" if r["is_orig"] else "r") + str(r["dnp3"]["application"]["seq"])
    alerts: dict[int, list[str]] = defaultdict(list)
    for line in (out / "eve.json").open():
        r = json.loads(line)
        alerts[r["alert"]["signature_id"]].append(names[r["pcap_cnt"]])
    return alerts


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES, 1)), ids=[c[0] for c in CASES])
def test_keyword(session: dict[int, list[str]], index: int, case: tuple[str, list[str]]) -> None:
    assert sorted(session.get(index, [])) == sorted(case[1])  # one alert per message


@pytest.mark.parametrize(
    ("index", "case"), list(enumerate(HEADERS, 1)), ids=[f"{h} {o}" for h, o, _ in HEADERS]
)
def test_header(session: dict[int, list[str]], index: int, case: tuple[str, str, list]) -> None:
    assert sorted(session.get(1000 + index, [])) == sorted(case[2])


def test_eve_alert_carries_app_proto_and_the_dnp3_object(tmp_path: Path) -> None:
    pcap = craft.dnp3_keyword_session(tmp_path / "s.pcap")
    (tmp_path / "r.rules").write_text(
        'alert dnp3 any any -> any any (msg:"restart"; dnp3_ind:device_restart; sid:7;)\n'
        'alert dnp3 any any -> any any (msg:"cold"; dnp3_func:cold_restart; sid:8;)\n'
    )
    config = Config()
    rs = load_ruleset(config, (str(tmp_path / "r.rules"),), include_default=False)
    eve = EveSink(tmp_path / "out")
    Pipeline(config, tmp_path / "out", [RuleDetector(config, rs, eve=eve)], [eve]).run(pcap)
    records = [json.loads(line) for line in (tmp_path / "out" / "eve.json").open()]
    by_sid = {r["alert"]["signature_id"]: r for r in records}
    restart = by_sid[7]
    assert restart["app_proto"] == "dnp3" and restart["direction"] == "to_client"
    assert restart["tx_id"] == 3  # q0 r0 q1 r1: the fourth DNP3 message of the flow
    assert (restart["src_ip"], restart["src_port"]) == ("192.0.2.80", 20000)
    assert restart["dnp3"] == {
        "response": {
            "type": "response",
            "control": {"dir": False, "pri": True, "fcb": False, "fcv": False, "function_code": 4},
            "src": 10,
            "dst": 1,
            "application": {
                "control": {"fir": True, "fin": True, "con": False, "uns": False, "sequence": 1},
                "function_code": 129,
                "objects": [
                    {
                        "group": 12,
                        "variation": 1,
                        "qualifier": 0x28,
                        "prefix_code": 2,
                        "range_code": 8,
                        "count": 1,
                    }
                ],
                "complete": True,
            },
            "iin": {"indicators": ["device_restart"]},
        }
    }
    cold = by_sid[8]
    assert cold["direction"] == "to_server" and cold["tx_id"] == 4
    assert cold["dnp3"]["request"]["type"] == "request"
    assert cold["dnp3"]["request"]["application"]["function_code"] == 13
    assert "iin" not in cold["dnp3"]["request"]
    findings = [json.loads(line) for line in (tmp_path / "out" / "findings.jsonl").open()]
    f = next(f for f in findings if f["rule"]["id"] == "7")
    assert f["network"] == {"transport": "tcp", "protocol": "dnp3"}
    assert f["sentinel"]["evidence"]["dnp3"] == {
        "direction": "response",
        "function": "RESPONSE",
        "fc": 129,
        "link": {"src": 10, "dst": 1},
        "objects": ["g12v1"],
        "iin": 0x8000,
        "iin_flags": ["device_restart"],
    }
    assert f["sentinel"]["evidence"]["inspected"] == "transaction"
