"""Loading rule files: lines, header, options, and the rule set with every problem found.

``load_rules(paths)`` reads ``*.rules`` files (directories are searched for them, sorted),
parses every rule and returns a ``RuleSet``: the rules that loaded and a ``Problem`` for each
rule that did not (file, line and reason) or that loaded with a warning. One bad rule never
stops the others from loading; ``sentinel rules check`` prints every problem at once.

File grammar (spec section 1): a line that is empty or starts with ``#``, a space or a tab is
skipped; a trailing ``\\`` joins the next line. Options end at the first ``;`` not escaped by
a backslash; a keyword's name is case-insensitive.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sentinel.errors import Location, RuleError
from sentinel.rules import keywords as kw
from sentinel.rules.addresses import SpecError, Variables, parse_address, parse_ports
from sentinel.rules.attack import technique_for
from sentinel.rules.model import (
    ACTIONS,
    KIND_APP,
    KIND_PACKET,
    KIND_STREAM,
    FlowOptions,
    Header,
    Problem,
    Rule,
)
from sentinel.rules.payload import KeywordError

# proto -> (transport, app_proto, forced stream mode)
PROTOCOLS: dict[str, tuple[int | None, str | None, str | None]] = {
    "ip": (None, None, None),
    "pkthdr": (None, None, "packet"),
    "tcp": (6, None, None),
    "tcp-pkt": (6, None, "packet"),
    "tcp-stream": (6, None, "stream"),
    "udp": (17, None, None),
    "modbus": (6, "modbus", None),
    "dnp3": (6, "dnp3", None),
}
NOT_YET: dict[str, str] = {}


# --------------------------------------------------------------------------- classification
@dataclass(frozen=True)
class Classification:
    name: str
    description: str
    priority: int


def parse_classification(text: str, path: str) -> tuple[dict[str, Classification], list[Problem]]:
    """``config classification: name,description,priority`` lines."""
    classes: dict[str, Classification] = {}
    problems: list[Problem] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = Location(path, lineno)
        prefix = "config classification:"
        if not stripped.lower().startswith(prefix):
            problems.append(Problem("error", where, "expected 'config classification: ...'"))
            continue
        parts = [p.strip() for p in stripped[len(prefix) :].split(",")]
        if len(parts) != 3 or not parts[0]:
            problems.append(Problem("error", where, "expected name,description,priority"))
            continue
        name, description, prio = parts
        if not prio.isdigit() or not 1 <= int(prio) <= 255:
            problems.append(Problem("error", where, f"priority {prio!r} is not 1-255"))
            continue
        classes[name.lower()] = Classification(name.lower(), description, int(prio))
    return classes, problems


def load_classification(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Classification], list[Problem]]:
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read classification file: {exc}", Location(name)) from None
    return parse_classification(text, name)


# --------------------------------------------------------------------------- lines
def rule_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, rule text) for each rule of a file."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + lines[i]
        i += 1
        if not line or line[0] in "# \t" or not line.strip():
            continue
        yield start + 1, line


def split_options(text: str) -> list[str]:
    """Options separated by ``;`` not escaped by a backslash (odd number of backslashes)."""
    out: list[str] = []
    current: list[str] = []
    backslashes = 0
    for ch in text:
        if ch == ";" and backslashes % 2 == 0:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
        backslashes = backslashes + 1 if ch == "\\" else 0
    tail = "".join(current).strip()
    if tail:
        raise KeywordError(f"option {tail!r} is not terminated by ';'")
    return [o for o in (s.strip() for s in out) if o]


def split_header(text: str) -> list[str]:
    """Header fields split on spaces, except inside ``[...]``."""
    fields: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch.isspace() and depth <= 0:
            if current:
                fields.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        fields.append("".join(current))
    return fields


# --------------------------------------------------------------------------- one rule
@dataclass
class ParseContext:
    variables: Variables = field(default_factory=Variables)
    classification: dict[str, Classification] = field(default_factory=dict)


def parse_rule(text: str, location: Location, ctx: ParseContext) -> tuple[list[Rule], list[str]]:
    """One rule's text into Rule objects (two for ``<>``) and warnings; raises RuleError."""
    try:
        return _parse_rule(text, location, ctx)
    except (KeywordError, SpecError) as exc:
        raise RuleError(str(exc), location) from None


def _parse_rule(text: str, location: Location, ctx: ParseContext) -> tuple[list[Rule], list[str]]:
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise KeywordError("a rule needs its options in parentheses")
    if text[close_paren + 1 :].strip():
        raise KeywordError("text after the closing parenthesis")
    fields = split_header(text[:open_paren])
    if len(fields) != 7:
        raise KeywordError(
            f"the header needs 7 fields (action proto src sport dir dst dport), got {len(fields)}"
        )
    action, proto, src, sport, direction, dst, dport = fields
    action, proto = action.lower(), proto.lower()
    if action not in ACTIONS:
        raise KeywordError(f"unknown action {action!r}")
    if proto in NOT_YET:
        raise KeywordError(NOT_YET[proto])
    if proto not in PROTOCOLS:
        raise KeywordError(
            f"protocol {proto!r} is not supported (Sentinel inspects ip, tcp, udp, modbus and dnp3)"
        )
    if direction not in ("->", "<>"):
        raise KeywordError(f"direction must be -> or <>, not {direction!r}")
    v = ctx.variables
    header = Header(
        action,
        proto,
        parse_address(src, v),
        parse_ports(sport, v),
        parse_address(dst, v),
        parse_ports(dport, v),
        direction == "<>",
        text[:open_paren].strip(),
    )
    b = kw.RuleBuilder()
    for option in split_options(text[open_paren + 1 : close_paren]):
        _apply_option(b, option)
    if b.sid is None:
        raise KeywordError("the rule has no sid")
    if b.msg is None:
        b.warnings.append("the rule has no msg")
    transport, app_proto, mode = PROTOCOLS[proto]
    dnp3_data = None
    if b.buffer == "dnp3_data":
        if not b.payload:
            raise KeywordError("dnp3_data selects a buffer but no payload keyword follows it")
        dnp3_data, b.payload = tuple(b.payload), []
    has_payload = bool(b.payload) or b.dsize is not None
    uses_dnp3 = bool(b.dnp3) or dnp3_data is not None
    event_protos = {e.protocol for e in b.events}
    is_app = bool(b.modbus or b.events or uses_dnp3)
    if b.modbus or "modbus" in event_protos:
        if transport == 17:
            raise KeywordError("Modbus is TCP-only: modbus keywords cannot match a udp rule")
        if app_proto == "dnp3" or uses_dnp3 or "dnp3" in event_protos:
            raise KeywordError("a rule cannot match both Modbus and DNP3")
        transport, app_proto = 6, "modbus"
    if uses_dnp3 or "dnp3" in event_protos:
        if transport == 17:
            raise KeywordError("DNP3 rules are TCP-only, as in Suricata: not a udp rule")
        if app_proto == "modbus":
            raise KeywordError("a modbus rule cannot use DNP3 keywords or events")
        transport, app_proto = 6, "dnp3"
    flow = b.flow or FlowOptions()
    if app_proto == "dnp3" and has_payload:
        raise KeywordError(
            "payload keywords of a dnp3 rule must follow dnp3_data: Sentinel sees DNP3 as "
            "tshark-decoded transactions, not on the stream"
        )
    if is_app or (app_proto and not has_payload):
        if has_payload:
            raise KeywordError(
                "payload keywords (content, pcre, byte_*, isdataat, dsize) cannot be combined "
                "with modbus/app-layer-event: Sentinel matches those on decoded transactions"
            )
        kind = KIND_APP
    elif mode == "packet" or flow.no_stream or transport != 6:
        kind = KIND_PACKET  # UDP and IP rules see packets (they carry the protocol)
    elif not b.payload and b.dsize is not None and b.dsize(0) and mode != "stream":
        kind = KIND_PACKET  # dsize that accepts empty payloads: stream chunks never are
    elif mode == "stream" or flow.only_stream or has_payload:
        kind = KIND_STREAM
    else:
        kind = KIND_PACKET
    category = ""
    priority = 3
    if b.classtype is not None:
        cls = ctx.classification.get(b.classtype)
        if cls is None:
            b.warnings.append(f"unknown classtype {b.classtype!r}: priority 3, no category")
        else:
            category, priority = cls.description, cls.priority
    if b.priority is not None:
        priority = b.priority
    technique, source, twarn = technique_for(b.metadata, b.classtype)
    b.warnings.extend(twarn)
    rule = Rule(
        header=header,
        kind=kind,
        transport=transport,
        app_proto=app_proto,
        sid=b.sid,
        gid=b.gid,
        rev=b.rev,
        msg=b.msg or "",
        classtype=b.classtype,
        category=category,
        priority=priority,
        technique=technique,
        technique_source=source,
        references=tuple(b.references),
        metadata=tuple((k, tuple(vals)) for k, vals in b.metadata.items()),
        flow=flow,
        payload=tuple(b.payload),
        dsize=b.dsize,
        modbus=tuple(b.modbus),
        events=tuple(b.events),
        dnp3=tuple(b.dnp3),
        dnp3_data=dnp3_data,
        flowbits=tuple(b.flowbits),
        noalert=b.noalert,
        threshold=b.threshold,
        detection_filter=b.detection_filter,
        location=location,
        ruleset=os.path.basename(location.path),
        text=text,
    )
    rules = [rule]
    if header.bidirectional:
        swapped = Header(
            action,
            proto,
            header.dst,
            header.dst_ports,
            header.src,
            header.src_ports,
            True,
            header.text,
        )
        rules.append(_replace_header(rule, swapped))
    return rules, b.warnings


def _replace_header(rule: Rule, header: Header) -> Rule:
    from dataclasses import replace

    return replace(rule, header=header, swapped=True)


def _apply_option(b: kw.RuleBuilder, option: str) -> None:
    if ":" in option:
        name, value = option.split(":", 1)
        name, value_text = name.strip(), value.strip()
    else:
        name, value_text = option.strip(), None
    keyword = kw.lookup(name)
    if keyword is None:
        raise KeywordError(f"unknown keyword {name!r}")
    label = keyword.name
    if value_text is None or value_text == "":
        if keyword.value == "required":
            raise KeywordError(f"{label} needs a value")
        keyword.parse(b, None)
        return
    if keyword.value == "none":
        raise KeywordError(f"{label} takes no value")
    negated = False
    if keyword.negatable and value_text.startswith("!"):
        negated = True
        value_text = value_text[1:].lstrip()
    quoted = value_text.startswith('"')
    if quoted:
        if len(value_text) < 2 or not value_text.endswith('"') or _escaped_end(value_text):
            raise KeywordError(f"{label}: unterminated quoted value")
        value_text = value_text[1:-1]
        if keyword.quotes == "forbidden":
            raise KeywordError(f"{label} does not take a quoted value")
    elif keyword.quotes == "required":
        raise KeywordError(f"{label} needs a quoted value")
    if keyword.negatable:
        keyword.parse(b, value_text, negated=negated)
    else:
        keyword.parse(b, value_text)


def _escaped_end(text: str) -> bool:
    """Whether the final character is escaped (preceded by an odd number of backslashes)."""
    n = 0
    i = len(text) - 2
    while i >= 0 and text[i] == "\\":
        n += 1
        i -= 1
    return n % 2 == 1


# --------------------------------------------------------------------------- rule sets
@dataclass
class RuleSet:
    """Rules loaded from files, the problems met, and the files read."""

    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def signatures(self) -> int:
        """Distinct gid:sid loaded (a ``<>`` rule counts once)."""
        return len({r.key for r in self.rules})


def rule_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files to load: each file as given, each directory's ``*.rules`` (sorted)."""
    out: list[str] = []
    for p in paths:
        name = os.fspath(p)
        if os.path.isdir(name):
            out.extend(str(f) for f in sorted(Path(name).glob("*.rules")))
        elif os.path.exists(name):
            out.append(name)
        else:
            raise RuleError("no such rule file or directory", Location(name))
    return out


def load_rules(
    paths: Iterable[str | os.PathLike[str]],
    ctx: ParseContext | None = None,
    into: RuleSet | None = None,
) -> RuleSet:
    """Load every rule of ``paths``; duplicates of gid:sid keep the higher rev (else the
    first), with a warning."""
    ctx = ctx or ParseContext()
    rs = into or RuleSet()
    for name in rule_files(paths):
        try:
            text = Path(name).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            rs.problems.append(Problem("error", Location(name), f"not UTF-8 text: {exc.reason}"))
            continue
        except OSError as exc:
            rs.problems.append(Problem("error", Location(name), f"cannot read: {exc.strerror}"))
            continue
        rs.files.append(name)
        load_text(text, name, ctx, rs)
    return rs


def load_text(text: str, path: str, ctx: ParseContext, rs: RuleSet) -> RuleSet:
    index = {r.key: r for r in rs.rules if not r.swapped}
    for lineno, line in rule_lines(text):
        where = Location(path, lineno)
        try:
            rules, warnings = parse_rule(line, where, ctx)
        except RuleError as exc:
            rs.problems.append(Problem("error", where, exc.message))
            continue
        for w in warnings:
            rs.problems.append(Problem("warning", where, w))
        first = rules[0]
        if first.key in index:
            old = index[first.key]
            gid_sid = f"{first.gid}:{first.sid}"
            if first.rev > old.rev:
                rs.rules = [r for r in rs.rules if r.key != first.key]
                rs.problems.append(
                    Problem(
                        "warning",
                        where,
                        f"duplicate signature {gid_sid} (also at {old.location}): "
                        f"keeping this one, rev {first.rev} > {old.rev}",
                    )
                )
            else:
                rs.problems.append(
                    Problem(
                        "warning",
                        where,
                        f"duplicate signature {gid_sid} (first at {old.location}): ignored",
                    )
                )
                continue
        rs.rules.extend(rules)
        index[first.key] = first
    return rs
