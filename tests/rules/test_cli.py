"""`sentinel rules check|test|keywords` and `sentinel analyze --rules/--rule-vars/--format eve`
as a user runs them (the installed command, in a subprocess)."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

from sentinel.rules.loader import shipped_dir
from tests.conftest import ZEEK_MODBUS
from tests.craft import Conversation, adu, write

P502 = ZEEK_MODBUS / "pcaps" / "modbus-and-non-modbus-p502.pcap"
EIT = ZEEK_MODBUS / "pcaps" / "modbus-eit.pcap"


def sentinel(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["sentinel", *args], capture_output=True, text=True, cwd=cwd)


def test_check_shipped_signatures_is_clean() -> None:
    """What CI runs: every shipped rule loads without error or warning."""
    proc = sentinel("rules", "check", "--strict", str(shipped_dir()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "3 file(s), 33 signature(s) loaded, 0 error(s), 0 warning(s)" in proc.stderr


def test_check_lists_every_problem_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text(
        'alert tcp any any -> any 502 (msg:"hex"; content:"|0|"; sid:1;)\n'
        'alert modbus any any -> any any (msg:"fc"; modbus:function 0; sid:2;)\n'
        'alert tcp any any -> any any (msg:"ok"; classtype:nope; sid:3;)\n'
        'alert tcp any any -> any any (msg:"kw"; flowbit:set,x; sid:4;)\n'
    )
    other = tmp_path / "other.rules"
    other.write_text('alert tcp any any -> any any (msg:"dup"; sid:3;)\n')
    proc = sentinel("rules", "check", str(bad), str(other))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{bad}:1: error: odd number of hex digits in |...|",
        f"{bad}:2: error: function 0: must be 1-255",
        f"{bad}:3: warning: unknown classtype 'nope': priority 3, no category",
        f"{bad}:4: error: unknown keyword 'flowbit'",
        f"{other}:1: warning: duplicate signature 1:3 (first at {bad}:3): ignored",
    ]
    assert "2 file(s), 1 signature(s) loaded, 3 error(s), 2 warning(s)" in proc.stderr
    warn_only = tmp_path / "warn.rules"
    warn_only.write_text('alert tcp any any -> any any (msg:"ok"; classtype:nope; sid:3;)\n')
    assert sentinel("rules", "check", str(warn_only)).returncode == 0
    assert sentinel("rules", "check", "--strict", str(warn_only)).returncode == 1
    missing = sentinel("rules", "check", str(tmp_path / "nope.rules"))
    assert missing.returncode == 2 and "no such rule file" in missing.stderr


def test_rules_test_shows_which_rules_fire_where(tmp_path: Path) -> None:
    rules = tmp_path / "t.rules"
    rules.write_text(
        'alert modbus any any -> any any (msg:"device id"; modbus:function 43; sid:1000001;)\n'
        'alert tcp any 502 -> any any (msg:"exception"; byte_test:1,&,0x80,7; sid:1000002;)\n'
    )
    proc = sentinel("rules", "test", str(rules), str(EIT), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["frame"], r["sid"], r["direction"]) for r in rows] == [
        (1, 1000001, "to_server"), (3, 1000001, "to_server"), (4, 1000002, "to_client"),
    ]  # fmt: skip
    assert rows[2]["src"] == "192.168.88.100:502"
    assert "3 alert(s) from 2 signature(s): 1000001: 2, 1000002: 1" in proc.stderr
    text = sentinel("rules", "test", str(rules), str(EIT))
    assert "sid 1000001" in text.stdout and "device id" in text.stdout


def test_keywords_lists_the_registry() -> None:
    proc = sentinel("rules", "keywords")
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    for kw in (
        "content",
        "pcre",
        "byte_test",
        "byte_jump",
        "modbus",
        "app-layer-event",
        "flowbits",
        "threshold",
        "detection_filter",
        "dsize",
        "isdataat",
        "flow",
    ):
        assert kw in names


def test_analyze_with_extra_rules_vars_and_eve(tmp_path: Path) -> None:
    c = Conversation(client="192.0.2.10", server="192.0.2.20")
    c.exchange(adu(1, 1, struct.pack(">BHH", 6, 9, 100)), adu(1, 1, struct.pack(">BHH", 6, 9, 100)))
    c.close()
    pcap = write(tmp_path / "w.pcap", c.packets)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "site.rules").write_text(
        'alert modbus any any -> $PLC any (msg:"write to the PLC"; '
        "modbus:access write holding, address 10, value 100; priority:2; sid:1000010;)\n"
        'alert tcp any any -> any any (msg:"broken"; content:"|zz|"; sid:1000011;)\n'
    )
    variables = tmp_path / "vars.yaml"
    variables.write_text(
        "vars:\n  address-groups:\n    PLC: 192.0.2.20\n"
        "    MODBUS_SERVER: '[192.0.2.0/24]'\n    MODBUS_CLIENT: 10.9.9.9\n"
    )
    out = tmp_path / "out"
    proc = sentinel(
        "analyze",
        "-q",
        str(pcap),
        "--out",
        str(out),
        "--rules",
        str(rules_dir),
        "--rule-vars",
        str(variables),
        "--format",
        "eve",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{rules_dir / 'site.rules'}:2: error: invalid character 'z'" in proc.stderr
    findings = [json.loads(line) for line in (out / "findings.jsonl").open()]
    by_rule = sorted(
        (f["rule"]["id"], f["rule"]["ruleset"], f["event"]["severity"])
        for f in findings
        if f["sentinel"]["detector"] == "rules"
    )
    assert by_rule == [("1000010", "site.rules", 47), ("9100013", "modbus-catalogue.rules", 73)]
    eve = [json.loads(line) for line in (out / "eve.json").open()]
    assert sorted(r["alert"]["signature_id"] for r in eve if r["event_type"] == "alert") == [
        1000010,
        9100013,
    ]
    assert [r["event_type"] for r in eve].count("modbus") == 1


def test_analyze_eve_for_several_captures(tmp_path: Path) -> None:
    proc = sentinel(
        "analyze", "-q", str(P502), str(EIT), "--out", str(tmp_path / "o"), "--format", "eve"
    )
    assert proc.returncode == 0, proc.stderr
    p502 = [
        json.loads(x) for x in (tmp_path / "o" / "modbus-and-non-modbus-p502" / "eve.json").open()
    ]
    eit = [json.loads(x) for x in (tmp_path / "o" / "modbus-eit" / "eve.json").open()]
    assert {r["alert"]["signature_id"] for r in p502 if r["event_type"] == "alert"} == {9100008}
    assert {r["alert"]["signature_id"] for r in eit if r["event_type"] == "alert"} == {9100004}


def test_bad_rules_path_is_one_clear_line(tmp_path: Path) -> None:
    proc = sentinel(
        "analyze",
        "-q",
        str(EIT),
        "--out",
        str(tmp_path / "o"),
        "--rules",
        str(tmp_path / "missing"),
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"sentinel: {tmp_path / 'missing'}: no such rule file or directory"
    )
