"""Payload keywords: content forms, modifiers, relative matching with backtracking, pcre,
byte_test, byte_jump, isdataat and dsize (spec section 2)."""

from __future__ import annotations

import pytest

from sentinel.errors import RuleError
from sentinel.rules.model import ByteJump, ByteTest
from sentinel.rules.payload import byte_jump, byte_test, parse_content_string
from tests.rules.helpers import matches, rule


# --------------------------------------------------------------------------- content text
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", b"abc"),
        ("|00 01 ff|", b"\x00\x01\xff"),
        ("|0001ff|", b"\x00\x01\xff"),
        ("a|20|b", b"a b"),
        (r"a\;b\:c\\d\"e", b'a;b:c\\d"e'),
        ("|41| |42|", b"A B"),
    ],
)
def test_content_string(text: str, expected: bytes) -> None:
    assert parse_content_string(text) == expected


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ('content:"|0|";', "odd number of hex digits"),
        ('content:"|00";', "unterminated"),
        ('content:"|0g|";', "invalid character"),
        (r'content:"a\x";', "invalid escape"),
        ('content:"a"b";', 'unescaped "'),
        ("content:abc;", "needs a quoted value"),
        ('content:"";', "empty content"),
    ],
)
def test_content_errors(options: str, reason: str) -> None:
    with pytest.raises(RuleError, match=reason):
        rule(options)


# --------------------------------------------------------------------------- modifiers
def test_nocase() -> None:
    assert matches('content:"ABC"; nocase;', b"xxabcxx")
    assert not matches('content:"ABC";', b"xxabcxx")


def test_offset_depth() -> None:
    assert matches('content:"ab"; offset:2; depth:2;', b"xxab")
    assert not matches('content:"ab"; offset:2; depth:2;', b"xxxab")
    assert not matches('content:"ab"; offset:3;', b"xxab")
    assert matches('content:"ab"; depth:3;', b"xab")
    assert not matches('content:"ab"; depth:3;', b"xxab")


def test_startswith_endswith() -> None:
    assert matches('content:"ab"; startswith;', b"abc")
    assert not matches('content:"ab"; startswith;', b"cab")
    assert matches('content:"ab"; endswith;', b"cab")
    assert not matches('content:"ab"; endswith;', b"abc")
    # endswith retries later occurrences: the first "ab" is not at the end, the second is
    assert matches('content:"ab"; endswith;', b"abxab")


def test_distance_within() -> None:
    assert matches('content:"a"; content:"b"; distance:2; within:1;', b"axxb")
    assert not matches('content:"a"; content:"b"; distance:2; within:1;', b"axb")
    assert not matches('content:"a"; content:"b"; distance:2; within:1;', b"axxxb")
    assert matches('content:"a"; content:"b"; within:2;', b"axb")
    assert not matches('content:"a"; content:"b"; within:2;', b"axxb")
    # negative distance looks back before the end of the previous match
    assert matches('content:"bc"; content:"ab"; distance:-3; within:2;', b"abc")


def test_relative_on_first_content_counts_from_start() -> None:
    assert matches('content:"b"; distance:1; within:1;', b"ab")
    assert not matches('content:"b"; distance:1; within:1;', b"b")


def test_relative_matching_backtracks() -> None:
    # The first "a" is followed by "x", only the second by "b": the engine must retry.
    assert matches('content:"a"; content:"b"; distance:0; within:1;', b"axab")
    # Chains of three relative contents backtrack across levels.
    assert matches(
        'content:"a"; content:"b"; distance:0; within:1; content:"c"; distance:0; within:1;',
        b"ab_abx_abc",
    )
    assert not matches(
        'content:"a"; content:"b"; distance:0; within:1; content:"c"; distance:0; within:1;',
        b"ab_abx_ab",
    )


def test_negated_content() -> None:
    assert matches('content:!"evil";', b"good")
    assert not matches('content:!"evil";', b"so evil")
    # absent in its window (bytes 2-3), present elsewhere
    assert matches('content:!"|00 00|"; offset:2; depth:2;', b"\x00\x00\x01\x02")
    assert not matches('content:!"|00 00|"; offset:2; depth:2;', b"\x01\x02\x00\x00")
    # relative negation: "b" must not follow "a" immediately
    assert matches('content:"a"; content:!"b"; distance:0; within:1;', b"ac")
    assert not matches('content:"a"; content:!"b"; distance:0; within:1;', b"ab")


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ("nocase;", "must directly follow a content"),
        ('content:"abc"; depth:2;', "smaller than the content"),
        ('content:"abc"; within:2;', "smaller than the content"),
        ('content:"a"; offset:1; distance:1;', "cannot be combined"),
        ('content:"a"; within:1; depth:1;', "cannot be combined"),
        ('content:"a"; offset:1; offset:2;', "given twice"),
        ('content:"a"; byte_test:1,=,1,0; nocase;', "must directly follow a content"),
    ],
)
def test_modifier_errors(options: str, reason: str) -> None:
    with pytest.raises(RuleError, match=reason):
        rule(options)


# --------------------------------------------------------------------------- isdataat
def test_isdataat_absolute_and_relative_differ_by_one() -> None:
    # absolute: true iff N < length
    assert matches("isdataat:3;", b"abcd")
    assert not matches("isdataat:4;", b"abcd")
    assert matches("isdataat:!4;", b"abcd")
    # relative: true iff end of previous match + N <= length
    assert matches('content:"ab"; isdataat:2,relative;', b"abcd")
    assert not matches('content:"ab"; isdataat:3,relative;', b"abcd")
    assert matches('content:"ab"; isdataat:!3,relative;', b"abcd")


# --------------------------------------------------------------------------- pcre
def test_pcre_flags() -> None:
    assert matches('pcre:"/ABC/i";', b"xabc")
    assert not matches('pcre:"/ABC/";', b"xabc")
    assert matches('pcre:"/a.b/s";', b"a\nb")
    assert not matches('pcre:"/a.b/";', b"a\nb")
    assert matches('pcre:"/^b/m";', b"a\nb")
    assert matches('pcre:"/a b/x";', b"ab")
    assert matches("pcre:/abc/;", b"abc")  # quotes are optional for pcre
    assert matches('pcre:!"/evil/";', b"good")
    assert not matches('pcre:!"/evil/";', b"evil")


def test_pcre_anchor_and_relative() -> None:
    assert matches('pcre:"/ab/A";', b"abc")
    assert not matches('pcre:"/bc/A";', b"abc")
    # R starts at the end of the previous match; A then anchors there
    assert matches('content:"x"; pcre:"/yz/AR";', b"axyz")
    assert not matches('content:"x"; pcre:"/z/AR";', b"axyz")
    assert matches('content:"x"; pcre:"/z/R";', b"axyz")
    assert not matches('content:"x"; pcre:"/a/R";', b"axyz")


def test_pcre_sets_the_relative_pointer_and_backtracks() -> None:
    assert matches('pcre:"/a./"; content:"c"; distance:0; within:1;', b"ab_axc")
    assert not matches('pcre:"/a./"; content:"c"; distance:0; within:1;', b"ab_axd")


def test_pcre_dollar_end_only_and_ungreedy() -> None:
    assert matches('pcre:"/a$/";', b"a\n")
    assert not matches('pcre:"/a$/E";', b"a\n")
    assert matches('pcre:"/a$/E";', b"xa")
    # G: "a.+b" becomes lazy, so the match ends at the first b, leaving "b" for the content
    assert matches('pcre:"/a.+b/G"; content:"b"; distance:0;', b"a1b2b")
    assert not matches('pcre:"/a.+b/"; content:"b"; distance:0;', b"a1b2b")


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ('pcre:"/abc/U";', "HTTP buffer"),
        ('pcre:"/abc/q";', "unknown pcre flag"),
        ('pcre:"/a(/";', "does not compile"),
        ('pcre:"abc";', "must look like"),
    ],
)
def test_pcre_errors(options: str, reason: str) -> None:
    with pytest.raises(RuleError, match=reason):
        rule(options)


# --------------------------------------------------------------------------- byte_test
@pytest.mark.parametrize(
    ("options", "payload", "expected"),
    [
        ("byte_test:1,=,5,0;", b"\x05", True),
        ("byte_test:1,!=,5,0;", b"\x05", False),
        ("byte_test:1,!,5,0;", b"\x06", True),
        ("byte_test:2,>,255,0;", b"\x01\x00", True),
        ("byte_test:2,<,256,0;", b"\x01\x00", False),
        ("byte_test:2,<=,256,0;", b"\x01\x00", True),
        ("byte_test:2,>=,257,0;", b"\x01\x00", False),
        ("byte_test:2,>,255,0,little;", b"\x00\x01", True),
        ("byte_test:1,&,0x80,1;", b"\x00\x83", True),
        ("byte_test:1,&,0x80,1;", b"\x00\x03", False),
        ("byte_test:1,^,0x03,0;", b"\x03", False),
        ("byte_test:1,^,0x03,0;", b"\x02", True),
        ("byte_test:3,=,123,0,string,dec;", b"123", True),
        ("byte_test:2,=,255,0,string,hex;", b"ff", True),
        ("byte_test:2,=,8,0,string,oct;", b"10", True),
        ("byte_test:2,=,1,0,string,dec;", b"x1", False),
        # bitmask 0xF0: (0xAB & 0xF0) >> 4 = 0xA
        ("byte_test:1,=,10,0,bitmask 0xF0;", b"\xab", True),
        ("byte_test:4,=,1,0;", b"\x00\x00\x01", False),  # not enough bytes
    ],
)
def test_byte_test(options: str, payload: bytes, expected: bool) -> None:
    assert matches(options, payload) is expected


def test_byte_test_relative_does_not_move_the_pointer() -> None:
    opts = 'content:"A"; byte_test:1,=,7,0,relative; content:"|07|"; distance:0; within:1;'
    assert matches(opts, b"xA\x07")
    step = ByteTest(1, "=", False, 7, 1, relative=True)
    assert byte_test(step, b"A\x00\x07", 1)
    assert not byte_test(step, b"A\x07\x00", 1)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ("byte_test:9,=,1,0;", "1 to 8 bytes"),
        ("byte_test:1,~,1,0;", "unknown operator"),
        ("byte_test:1,=,1;", "needs"),
        ("byte_test:1,=,1,0,string;", "needs a base"),
        ("byte_test:1,=,1,0,hex;", "needs 'string'"),
        ("byte_test:1,=,1,0,dce;", "DCERPC"),
        ("byte_test:1,=,abc,0;", "not a number"),
    ],
)
def test_byte_test_errors(options: str, reason: str) -> None:
    with pytest.raises(RuleError, match=reason):
        rule(options)


# --------------------------------------------------------------------------- byte_jump
def test_byte_jump_forms() -> None:
    # length byte at 0 (=2), jump over 2 bytes after it: pointer at 3
    assert byte_jump(ByteJump(1, 0), b"\x02ab!", 0) == 3
    assert byte_jump(ByteJump(1, 0, multiplier=2), b"\x01ab!", 0) == 3
    assert byte_jump(ByteJump(1, 0, align=True), b"\x01abc!", 0) == 5  # 1 rounds up to 4
    assert byte_jump(ByteJump(1, 0, from_beginning=True), b"\x02ab!", 0) == 2
    assert byte_jump(ByteJump(1, 0, from_end=True, post_offset=-2), b"\x00ab!", 0) == 2
    assert byte_jump(ByteJump(1, 0, post_offset=1), b"\x01ab!", 0) == 3
    assert byte_jump(ByteJump(1, 0), b"\x09ab", 0) is None  # past the end fails
    assert byte_jump(ByteJump(1, 0, from_beginning=True, post_offset=-9), b"\x01ab", 0) == 0
    assert byte_jump(ByteJump(1, 1, relative=True), b"xx\x01ab", 1) == 4
    assert byte_jump(ByteJump(2, 0, base=10), b"02ab!", 0) == 4


def test_byte_jump_then_relative_content() -> None:
    opts = 'byte_jump:1,0; content:"!"; distance:0; within:1;'
    assert matches(opts, b"\x02ab!")
    assert not matches(opts, b"\x01ab!")


# --------------------------------------------------------------------------- dsize
@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        ("4", 4, True), ("4", 5, False), ("!4", 5, True), ("<4", 3, True), ("<4", 4, False),
        (">4", 5, True), ("<=4", 4, True), (">=4", 4, True), ("2<>5", 3, True),
        ("2<>5", 2, False), ("2<>5", 5, False),
    ],
)  # fmt: skip
def test_dsize(value: str, size: int, expected: bool) -> None:
    r = rule(f"dsize:{value};")
    assert r.dsize is not None and r.dsize(size) is expected


def test_dsize_errors() -> None:
    with pytest.raises(RuleError, match="empty dsize range"):
        rule("dsize:5<>5;")
    with pytest.raises(RuleError, match="bad dsize"):
        rule("dsize:abc;")


def test_fast_pattern_and_rawbytes_change_nothing_but_are_validated() -> None:
    for opts in (
        'content:"ab"; fast_pattern;',
        'content:"ab"; fast_pattern:only;',
        'content:"ab"; fast_pattern:0,2;',
        'content:"ab"; rawbytes;',
    ):
        assert matches(opts, b"xaby") and not matches(opts, b"xy")
    assert rule('content:"ab"; fast_pattern;').payload[0].fast_pattern  # type: ignore[union-attr]
    with pytest.raises(RuleError, match="fast_pattern takes"):
        rule('content:"ab"; fast_pattern:sometimes;')
    with pytest.raises(RuleError, match="negated content"):
        rule('content:!"ab"; fast_pattern;')


def test_flow_stream_options_choose_what_is_inspected() -> None:
    from sentinel.rules.model import KIND_PACKET, KIND_STREAM

    assert rule('flow:only_stream; content:"a";').kind == KIND_STREAM
    assert rule("flow:only_stream;").kind == KIND_STREAM
    assert rule('flow:stateless; content:"a";').flow.stateless
    assert rule('content:"a";', header="alert tcp-stream any any -> any any").kind == KIND_STREAM
    assert rule("dsize:>10;").kind == KIND_STREAM
    assert rule("dsize:<10;").kind == KIND_PACKET  # accepts empty payloads: per packet
    with pytest.raises(RuleError, match="exclude each other"):
        rule("flow:only_stream,no_stream;")


def test_keywords_without_quotes_refuse_them() -> None:
    with pytest.raises(RuleError, match="does not take a quoted value"):
        rule('modbus:"function 8";')
    with pytest.raises(RuleError, match="does not take a quoted value"):
        rule('byte_test:"1,=,1,0";')
