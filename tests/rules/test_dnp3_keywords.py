"""Loading the DNP3 keywords: each form into its typed object, located errors and warnings,
and what a DNP3 rule set subscribes to. Matching is tested through tshark in
test_dnp3_pipeline.py; here the pure matching functions are checked on their edges."""

from __future__ import annotations

import pytest

from sentinel.config import Config
from sentinel.detectors.suricata import RuleDetector
from sentinel.errors import RuleError
from sentinel.pipeline.detector import Detector
from sentinel.rules import dnp3 as dn
from sentinel.rules.model import KIND_APP, Dnp3Func, Dnp3Ind, Dnp3Obj, UintMatch
from sentinel.rules.parser import ParseContext, RuleSet, load_text
from tests.rules.helpers import rule


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read", UintMatch("=", 1)),
        ("DIRECT_OPERATE", UintMatch("=", 5)),
        ("authenticate_err", UintMatch("=", 33)),
        ("authenticate_resp", UintMatch("=", 131)),
        ("129", UintMatch("=", 129)),
        ("0x82", UintMatch("=", 130)),
        ("!read", UintMatch("!=", 1)),
        ("!5", UintMatch("!=", 5)),
        ("!=5", UintMatch("!=", 5)),
        (">=3", UintMatch(">=", 3)),
        ("< 10", UintMatch("<", 10)),
        ("3<>7", UintMatch("range", 3, 7)),
        ("!3-7", UintMatch("!range", 3, 7)),
        ("&0x80=0x80", UintMatch("&=", 0x80, 0x80)),
        ("&0x80!=0", UintMatch("&!=", 0x80, 0)),
    ],
)
def test_dnp3_func_forms(text: str, expected: UintMatch) -> None:
    [opt] = rule(f"dnp3_func:{text};").dnp3
    assert opt == Dnp3Func(expected, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("device_restart", Dnp3Ind(legacy=0x8000)),
        ("class_1_events, class_2_events", Dnp3Ind(legacy=0x0600)),
        ("0x8421", Dnp3Ind(legacy=0x8421)),
        ("257", Dnp3Ind(legacy=0x0101)),
        ("010", Dnp3Ind(legacy=8)),  # strtoul base 0: octal
        ("+need_time,object_unknown", Dnp3Ind(modifier="+", mask=0x1002, want=0x1002)),
        ("*config_corrupt", Dnp3Ind(modifier="*", mask=0x0020, want=0x0020)),
        ("-need_time", Dnp3Ind(modifier="-", mask=0x1000, want=0x1000)),
        ("=class_1_events", Dnp3Ind(modifier="=", mask=0x0200, want=0x0200)),
        ("!device_restart", Dnp3Ind(modifier="*", mask=0x8000, want=0)),
        ("+device_restart !need_time", Dnp3Ind(modifier="+", mask=0x9000, want=0x8000)),
        ("!0", Dnp3Ind(match=UintMatch("!=", 0))),
        ("=0x8000", Dnp3Ind(match=UintMatch("=", 0x8000))),
        ("0x100-0x200", Dnp3Ind(match=UintMatch("range", 0x100, 0x200))),
        ("&0xFF00=0x0200", Dnp3Ind(match=UintMatch("&=", 0xFF00, 0x0200))),
    ],
)
def test_dnp3_ind_forms(text: str, expected: Dnp3Ind) -> None:
    [opt] = rule(f"dnp3_ind:{text};").dnp3
    assert opt.legacy == expected.legacy and opt.match == expected.match
    assert (opt.modifier, opt.mask, opt.want) == (expected.modifier, expected.mask, expected.want)


@pytest.mark.parametrize(
    ("text", "group", "variation"),
    [("60,2", 60, 2), ("0x3c,0x02", 60, 2), ("074,02", 60, 2), (" 12 , 1 ", 12, 1), ("0,0", 0, 0)],
)
def test_dnp3_obj_forms(text: str, group: int, variation: int) -> None:
    [opt] = rule(f"dnp3_obj:{text};").dnp3
    assert isinstance(opt, Dnp3Obj) and (opt.group, opt.variation) == (group, variation)


def test_dnp3_rules_are_tcp_app_rules_with_the_dnp3_protocol() -> None:
    for options in ("dnp3_func:read;", "dnp3_ind:need_time;", "dnp3_obj:1,2;"):
        r = rule(options)
        assert (r.kind, r.transport, r.app_proto) == (KIND_APP, 6, "dnp3")
    r = rule('dnp3.data; content:"|01|"; offset:1; depth:1;', "alert dnp3 any any -> any any")
    assert r.payload == () and r.dnp3_data is not None and len(r.dnp3_data) == 1
    r = rule("app-layer-event:dnp3.unknown_object;")
    assert r.app_proto == "dnp3" and r.events[0].protocol == "dnp3"


def _load(text: str) -> RuleSet:
    rs = RuleSet()
    load_text(text, "local.rules", ParseContext(), rs)
    return rs


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ("dnp3_func:read_all;", "unknown function 'read_all'"),
        ("dnp3_func:256;", "out of range"),
        ("dnp3_func:5-6;", "empty range"),
        ("dnp3_func:<0;", "can never match"),
        ("dnp3_func:&0x0f=0x10;", "can never match"),
        ("dnp3_ind:restart;", "unknown flag 'restart'"),
        ("dnp3_ind:70000;", "out of range"),
        ("dnp3_ind:08;", "not octal"),
        ("dnp3_ind:+need_time,need_time;", "given twice"),
        ("dnp3_ind:+;", "no flag"),
        ("dnp3_obj:60;", "group,variation"),
        ("dnp3_obj:08,1;", "not octal"),
        ("dnp3_obj:60,256;", "out of range"),
        ("dnp3_obj:a,1;", "not a number"),
        ("dnp3_data:1;", "takes no value"),
        ("dnp3_data;", "no payload keyword follows"),
        ('content:"a"; dnp3_data; content:"b";', "before dnp3_data"),
        ('dnp3_data; content:"a"; dsize:3;', "dsize cannot be combined"),
        ("app-layer-event:dnp3.nosuch;", "unknown event dnp3.nosuch"),
        ("dnp3_func:read; modbus:function 1;", "both Modbus and DNP3"),
        ("dnp3_func:read;", "TCP-only"),  # with the udp header below
    ],
)
def test_errors_are_located(options: str, reason: str) -> None:
    header = "alert udp" if reason == "TCP-only" else "alert dnp3"
    rs = _load(
        "# a comment\n"
        f'alert dnp3 any any -> any any (msg:"ok"; dnp3_func:read; sid:1;)\n'
        f'{header} any any -> any any (msg:"bad"; {options} sid:2;)\n'
    )
    assert [r.sid for r in rs.rules] == [1]
    [problem] = rs.errors
    assert (problem.location.path, problem.location.line) == ("local.rules", 3)
    assert reason in problem.message
    assert str(problem).startswith("local.rules:3")


def test_a_rule_error_carries_its_location() -> None:
    from sentinel.errors import Location
    from sentinel.rules.parser import parse_rule

    with pytest.raises(RuleError) as err:
        parse_rule(
            "alert dnp3 any any -> any any (dnp3_obj:1; sid:1;)",
            Location("x.rules", 7),
            ParseContext(),
        )
    assert "x.rules:7" in str(err.value)


@pytest.mark.parametrize(
    ("options", "warning"),
    [
        ("dnp3_ind:config_corrupt;", "masks IIN2 with 0x0F"),
        ("dnp3_ind:reserved_1,device_restart;", "reserved_1 never match"),
        ("dnp3_ind:0x0030;", "never matches"),
        ("dnp3_ind:0;", "never matches"),
        ("dnp3_ind:010;", "read as octal"),
        ("dnp3_obj:074,2;", "read as octal (60)"),
        ("dnp3_func:confirm;", "CONFIRM requests are not transactions"),
    ],
)
def test_warnings(options: str, warning: str) -> None:
    rs = _load(f'alert dnp3 any any -> any any (msg:"w"; {options} sid:3;)\n')
    assert [r.sid for r in rs.rules] == [3]  # loaded
    assert any(warning in p.message for p in rs.warnings), [p.message for p in rs.warnings]


@pytest.mark.parametrize("event", ["bad_link_crc", "flooded", "len_too_small"])
def test_link_checker_events_load_without_warning(event: str) -> None:
    """The native link checker (decode/dnp3_link.py) produces them: no 'cannot match'."""
    rs = _load(f'alert dnp3 any any -> any any (msg:"e"; app-layer-event:dnp3.{event}; sid:4;)\n')
    assert [r.sid for r in rs.rules] == [4]
    assert not rs.warnings, [p.message for p in rs.warnings]
    assert all(p.location.line == 1 for p in rs.warnings)


@pytest.mark.parametrize("options", ["dnp3_ind:*config_corrupt;", "dnp3_obj:12,1;", "dnp3_ind:8;"])
def test_no_warning(options: str) -> None:
    rs = _load(f'alert dnp3 any any -> any any (msg:"w"; {options} sid:3;)\n')
    assert rs.problems == []


def test_iin_matching_edges() -> None:
    legacy = dn.parse_ind("0xFFFF")[0]
    assert dn.iin_matches(legacy, 0x0001) and dn.iin_matches(legacy, 0x0100)
    assert not dn.iin_matches(legacy, 0x00F0)  # IIN2 high nibble: masked
    exact = dn.parse_ind("=device_restart,!need_time")[0]
    assert dn.iin_matches(exact, 0x8000) and not dn.iin_matches(exact, 0x9000)
    assert not dn.iin_matches(exact, 0x8001)
    any_of = dn.parse_ind("*device_restart,!need_time")[0]
    assert dn.iin_matches(any_of, 0x0000) and dn.iin_matches(any_of, 0x9000)
    assert not dn.iin_matches(any_of, 0x1000)
    not_all = dn.parse_ind("-device_restart,need_time")[0]
    assert dn.iin_matches(not_all, 0x8000) and not dn.iin_matches(not_all, 0x9001)


def _variant(rules_text: str, tmp_path) -> type:
    f = tmp_path / "x.rules"
    f.write_text(rules_text)
    det = RuleDetector(Config(), paths=(str(f),), include_default=False)
    return type(det)


def test_only_rule_sets_with_dnp3_rules_subscribe_to_ot_events(tmp_path) -> None:
    modbus = _variant(
        'alert modbus any any -> any any (msg:"m"; modbus:function 1; sid:1;)\n', tmp_path
    )
    assert modbus.on_ot is Detector.on_ot
    assert modbus.on_modbus is not Detector.on_modbus
    dnp3 = _variant('alert dnp3 any any -> any any (msg:"d"; dnp3_func:read; sid:1;)\n', tmp_path)
    assert dnp3.on_ot is not Detector.on_ot
    assert dnp3.on_modbus is Detector.on_modbus  # DNP3-only: no Modbus subscription
    events = _variant(
        'alert dnp3 any any -> any any (msg:"e"; app-layer-event:dnp3.malformed; sid:1;)\n',
        tmp_path,
    )
    assert events.on_ot is not Detector.on_ot


def test_dnp3_ports_follow_the_ot_config() -> None:
    from sentinel.rules.loader import variables_for

    assert variables_for(Config()).ports["DNP3_PORTS"] == "20000"
    config = Config.model_validate({"ot": {"dnp3": {"ports": [20000, 20001]}}})
    assert variables_for(config).ports["DNP3_PORTS"] == "[20000,20001]"
    r = rule("dnp3_func:read;", "alert dnp3 any any -> any $DNP3_PORTS", variables_for(config))
    assert r.header.dst_ports.match(20001) and not r.header.dst_ports.match(20002)
