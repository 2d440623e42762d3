"""Rule grammar: files, header, options, meta keywords, duplicates, located errors
(spec section 1), and the address / port / variable forms of the header."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import Config
from sentinel.errors import RuleError
from sentinel.rules.addresses import Variables, default_variables, parse_address, parse_ports
from sentinel.rules.loader import load_vars_file, variables_for
from sentinel.rules.model import KIND_APP, KIND_PACKET, KIND_STREAM
from sentinel.rules.parser import ParseContext, load_rules, rule_lines, split_options
from tests.rules.helpers import CLASSES, rule


# --------------------------------------------------------------------------- file grammar
def test_rule_lines_skip_comments_blank_and_indented_and_join_continuations() -> None:
    text = (
        "# comment\n"
        "\n"
        " alert tcp any any -> any any (sid:9;)\n"  # leading space: skipped (Suricata)
        "\talert tcp any any -> any any (sid:8;)\n"
        'alert tcp any any -> any any (msg:"a"; \\\n'
        "  sid:1;)\n"
        "alert tcp any any -> any any (sid:2;)\n"
    )
    assert list(rule_lines(text)) == [
        (5, 'alert tcp any any -> any any (msg:"a";   sid:1;)'),
        (7, "alert tcp any any -> any any (sid:2;)"),
    ]


def test_split_options_honours_escaped_semicolons() -> None:
    assert split_options(r'msg:"a\;b"; sid:1;') == [r'msg:"a\;b"', "sid:1"]
    assert split_options(r'content:"a\\"; sid:1;') == [r'content:"a\\"', "sid:1"]


def test_header_brackets_keep_spaces_together() -> None:
    r = rule("sid:1;", header="alert tcp [10.0.0.1, 10.0.0.2] any -> any [80, 502]")
    assert r.header.src.match("10.0.0.2") and r.header.dst_ports.match(502)


def test_msg_backslashes_removed_and_keyword_names_case_insensitive() -> None:
    r = rule(r'MSG:"a\;b \\c"; SID:5; Rev:3;')
    assert (r.msg, r.sid, r.rev, r.gid) == ("a;b c", 5, 3, 1)


def test_meta_keywords() -> None:
    r = rule(
        'msg:"m"; classtype:attempted-recon; reference:url,example.org/x; '
        "reference:cve,2020-1234; metadata: created_at 2024_01_01, former_category X, "
        "created_at 2024_02_02; gid:3; sid:7;"
    )
    assert (r.gid, r.sid, r.rev, r.priority, r.category) == (
        3,
        7,
        0,
        2,
        "Attempted Information Leak",
    )
    assert [(x.type, x.value) for x in r.references] == [
        ("url", "example.org/x"),
        ("cve", "2020-1234"),
    ]
    assert r.reference_url == "https://example.org/x"
    assert r.metadata_dict == {"created_at": ["2024_01_01", "2024_02_02"], "former_category": ["X"]}


def test_priority_overrides_classtype_and_unknown_classtype_warns(tmp_path: Path) -> None:
    assert rule("classtype:attempted-recon; priority:1;").priority == 1
    f = tmp_path / "a.rules"
    f.write_text('alert tcp any any -> any any (msg:"x"; classtype:nope; sid:1;)\n')
    rs = load_rules([f], ParseContext(Variables(), CLASSES))
    r = rs.rules[0]
    assert (r.priority, r.category) == (3, "")
    assert [str(p) for p in rs.problems] == [
        f"{f}:1: warning: unknown classtype 'nope': priority 3, no category"
    ]


def test_severity_from_priority() -> None:
    assert [rule(f"priority:{p};").severity for p in (1, 2, 3, 4, 255)] == [
        "high",
        "medium",
        "low",
        "low",
        "low",
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('alert tcp any any -> any any (msg:"x";)', "no sid"),
        ("alert tcp any any -> any any (sid:0;)", "below 1"),
        ("alert tcp any any -> any any (sid:1)", "not terminated"),
        ("alert tcp any any any -> any any (sid:1;)", "7 fields"),
        ("alert tcp any any <- any any (sid:1;)", "direction must be"),
        ("block tcp any any -> any any (sid:1;)", "unknown action"),
        ("alert http any any -> any any (sid:1;)", "not supported"),
        ("alert dnp3 any any -> any any (content:\"a\"; sid:1;)", "must follow dnp3_data"),
        ("alert tcp any any -> any any (sid:1; nosuch:1;)", "unknown keyword 'nosuch'"),
        ("alert tcp any any -> any any (msg:x; sid:1;)", "needs a quoted value"),
        ('alert tcp any any -> any any (msg:"x; sid:1;)', "unterminated"),
        ('alert tcp any any -> any any (sid:"1";)', "does not take a quoted"),
        ("alert tcp any any -> any any (priority:256; sid:1;)", "above 255"),
        ("alert tcp any any -> any any (reference:nocomma; sid:1;)", "type,value"),
        ("alert tcp any any -> any any sid:1;", "parentheses"),
        ("alert tcp !any any -> any any (sid:1;)", "!any"),
        ("alert tcp $NOPE any -> any any (sid:1;)", "unknown variable"),
        ("alert tcp any 70000 -> any any (sid:1;)", "not a port"),
        ("alert tcp 10.0.0.300 any -> any any (sid:1;)", "not an address"),
        ("alert udp any any -> any any (modbus:function 1; sid:1;)", "TCP-only"),
        (
            'alert modbus any any -> any any (content:"a"; modbus:function 1; sid:1;)',
            "cannot be combined",
        ),
        ("alert tcp any any -> any any (flow:to_server,to_client; sid:1;)", "contradictory"),
        ("alert tcp any any -> any any (flow:sideways; sid:1;)", "unknown flow option"),
        ("alert tcp any any -> any any (nocase:1; sid:1;)", "takes no value"),
    ],
)
def test_rule_errors(text: str, reason: str) -> None:
    from sentinel.errors import Location
    from sentinel.rules.parser import parse_rule

    with pytest.raises(RuleError, match=reason):
        parse_rule(text, Location("t.rules", 1), ParseContext(Variables(), CLASSES))


def test_every_problem_is_reported_with_its_line_and_the_rest_load(tmp_path: Path) -> None:
    f = tmp_path / "mixed.rules"
    f.write_text(
        'alert tcp any any -> any any (msg:"good"; content:"a"; sid:1;)\n'
        'alert tcp any any -> any any (msg:"bad hex"; content:"|0|"; sid:2;)\n'
        "# a comment\n"
        'alert tcp any any -> any any (msg:"bad kw"; foo; sid:3;)\n'
        'alert tcp any any -> any any (msg:"good 2"; sid:4;)\n'
    )
    rs = load_rules([tmp_path])
    assert [r.sid for r in rs.rules] == [1, 4]
    assert [(p.severity, p.location.line, p.message) for p in rs.problems] == [
        ("error", 2, "odd number of hex digits in |...|"),
        ("error", 4, "unknown keyword 'foo'"),
    ]
    assert str(rs.problems[0]).startswith(f"{f}:2: error: ")


def test_duplicate_sid_keeps_higher_rev_else_first(tmp_path: Path) -> None:
    f = tmp_path / "dup.rules"
    f.write_text(
        'alert tcp any any -> any any (msg:"one"; sid:1; rev:1;)\n'
        'alert tcp any any -> any any (msg:"two"; sid:1; rev:3;)\n'
        'alert tcp any any -> any any (msg:"three"; sid:1; rev:2;)\n'
        'alert tcp any any -> any any (msg:"other gid"; gid:2; sid:1;)\n'
    )
    rs = load_rules([f])
    assert sorted((r.gid, r.sid, r.msg) for r in rs.rules) == [(1, 1, "two"), (2, 1, "other gid")]
    assert [p.location.line for p in rs.warnings] == [2, 3]


def test_bidirectional_rules_load_twice_with_swapped_header() -> None:
    from sentinel.errors import Location
    from sentinel.rules.parser import parse_rule

    rules, _ = parse_rule(
        "alert tcp 10.0.0.1 any <> 10.0.0.2 502 (sid:1;)", Location("t", 1), ParseContext()
    )
    assert len(rules) == 2
    assert rules[1].swapped and rules[1].header.src.match("10.0.0.2")
    assert rules[1].header.src_ports.match(502) and rules[1].header.dst_ports.is_any


def test_rule_kinds() -> None:
    assert rule('content:"a";').kind == KIND_STREAM
    assert rule('content:"a"; flow:no_stream;').kind == KIND_PACKET
    assert rule("flow:to_server;").kind == KIND_PACKET
    assert rule('content:"a";', header="alert udp any any -> any any").kind == KIND_PACKET
    assert rule('content:"a";', header="alert tcp-pkt any any -> any any").kind == KIND_PACKET
    assert rule("modbus:function 1;").kind == KIND_APP
    assert rule("modbus:function 1;").app_proto == "modbus"
    assert rule("app-layer-event:modbus.flooded;").kind == KIND_APP
    assert rule("sid:1;", header="alert modbus any any -> any any").kind == KIND_APP


def test_app_layer_event_names() -> None:
    assert rule("app-layer-event:Modbus.Invalid_Length;").events[0].name == "invalid_length"
    with pytest.raises(RuleError, match=r"unknown event modbus\.nope"):
        rule("app-layer-event:modbus.nope;")
    with pytest.raises(RuleError, match="removed in Suricata 7"):
        rule("app-layer-event:modbus.invalid_unit_identifier;")
    with pytest.raises(RuleError, match="no app-layer events"):
        rule("app-layer-event:http.whatever;")


def test_flowbits_and_threshold_syntax() -> None:
    r = rule(
        "flowbits:set,a; flowbits:isset,b|c; flowbits:noalert; "
        "threshold: count 3, seconds 60, type both, track by_src;"
    )
    assert [(f.command, f.names) for f in r.flowbits] == [("set", ("a",)), ("isset", ("b", "c"))]
    assert r.noalert and r.threshold is not None
    assert (r.threshold.type, r.threshold.track, r.threshold.count, r.threshold.seconds) == (
        "both",
        "by_src",
        3,
        60.0,
    )
    for bad, reason in [
        ("flowbits:set,a|b;", "only works with isset"),
        ("flowbits:jump,a;", "unknown flowbits command"),
        ("threshold:type limit, track by_src, count 1;", "needs seconds"),
        ("threshold:type backoff, track by_src, count 1, multiplier 10;", "by_flow only"),
        ("threshold:type limit, track by_x, count 1, seconds 1;", "track must be"),
        (
            "threshold:type limit, track by_src, count 1, seconds 1; "
            "detection_filter:track by_src, count 1, seconds 1;",
            "only one threshold",
        ),
        ("detection_filter:track by_src, count 1, seconds 1, unique_on proto;", "unique_on"),
    ]:
        with pytest.raises(RuleError, match=reason):
            rule(bad)


# --------------------------------------------------------------------------- addresses
V = Variables(
    {"HOME_NET": "[10.0.0.0/8,192.168.0.0/16]", "EXTERNAL_NET": "!$HOME_NET",
     "SERVERS": "[$HOME_NET,!10.9.0.0/16]"},
    {"MODBUS_PORTS": "[502,1502]", "HIGH": "1024:"},
)  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("any", ["1.2.3.4", "::1"], []),
        ("10.0.0.0/24", ["10.0.0.9"], ["10.0.1.1"]),
        ("!10.0.0.0/24", ["10.0.1.1"], ["10.0.0.9"]),
        ("[10.0.0.0/24,!10.0.0.5]", ["10.0.0.4"], ["10.0.0.5", "11.0.0.1"]),
        ("[10.0.0.0/8,![10.1.0.0/16,10.2.0.0/16]]", ["10.3.0.1"], ["10.1.2.3", "10.2.0.1"]),
        ("$HOME_NET", ["192.168.1.1"], ["8.8.8.8"]),
        ("$EXTERNAL_NET", ["8.8.8.8"], ["10.1.1.1"]),
        ("$SERVERS", ["10.1.1.1"], ["10.9.1.1"]),
        ("[!10.0.0.1]", ["10.0.0.2"], ["10.0.0.1"]),
        ("2001:db8::/32", ["2001:db8::1"], ["2001:db9::1", "10.0.0.1"]),
    ],
)
def test_addresses(spec: str, inside: list[str], outside: list[str]) -> None:
    a = parse_address(spec, V)
    assert all(a.match(ip) for ip in inside)
    assert not any(a.match(ip) for ip in outside)


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("502", [502], [503]),
        ("500:510", [500, 505, 510], [499, 511]),
        ("1024:", [1024, 65535], [1023]),
        ("!502", [80], [502]),
        ("[80:100,!99]", [80, 100], [99, 101]),
        ("[1:10,[20:30,!25]]", [5, 20], [25, 15]),
        ("$MODBUS_PORTS", [502, 1502], [503]),
        ("!$HIGH", [80], [2000]),
    ],
)
def test_ports(spec: str, inside: list[int], outside: list[int]) -> None:
    p = parse_ports(spec, V)
    assert all(p.match(x) for x in inside)
    assert not any(p.match(x) for x in outside)


def test_variables_from_config_and_vars_file(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "sites": [{"name": "h", "networks": ["198.51.100.0/24"]}],
            "decode": {"modbus_ports": [502, 5020]},
        }
    )
    v = variables_for(config)
    assert parse_address("$MODBUS_SERVER", v).match("198.51.100.7")
    assert not parse_address("$HOME_NET", v).match("10.0.0.1")
    assert parse_ports("$MODBUS_PORTS", v).match(5020)
    f = tmp_path / "vars.yaml"
    f.write_text(
        "vars:\n  address-groups:\n    MODBUS_CLIENT: '[192.0.2.10]'\n"
        "  port-groups:\n    MODBUS_PORTS: [502, 503]\n"
    )
    v2 = load_vars_file(str(f), v)
    assert parse_address("$MODBUS_CLIENT", v2).match("192.0.2.10")
    assert parse_ports("$MODBUS_PORTS", v2).match(503)
    f.write_text("address-groups:\n  HOME_NET: '$HOME_NET'\n")
    with pytest.raises(RuleError, match="refers to itself"):
        load_vars_file(str(f), v)
    assert default_variables().addresses["MODBUS_CLIENT"] == "$HOME_NET"
