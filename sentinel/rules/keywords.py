"""The keyword registry: every rule option Sentinel understands, with its parser.

A keyword is registered next to its parser with ``@keyword(name, description, ...)``; the
rule parser looks options up here (names and aliases are case-insensitive) and an unknown
keyword rejects the rule. A parser receives the ``RuleBuilder`` of the rule being loaded and
the option's value (quotes and a leading ``!`` already handled as the keyword declares), and
turns it into the typed objects of ``sentinel.rules.model``. Protocol keyword sets register
themselves the same way (the DNP3 keywords' parsing lives in ``sentinel.rules.dnp3``).

Sticky buffers: ``dnp3_data`` selects the DNP3 application buffer; every payload keyword
after it (content and its modifiers, pcre, byte_test, byte_jump, isdataat) inspects that
buffer instead of the stream (``RuleBuilder.buffer``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sentinel.rules import dnp3 as dnp3_kw
from sentinel.rules import modbus as modbus_kw
from sentinel.rules.model import (
    ByteJump,
    ByteTest,
    Content,
    Dnp3Option,
    EventMatch,
    Flowbit,
    FlowOptions,
    IntCompare,
    IsDataAt,
    ModbusMatch,
    PayloadStep,
    Pcre,
    Reference,
    Threshold,
)
from sentinel.rules.payload import (
    KeywordError,
    compile_pcre,
    parse_byte_jump,
    parse_byte_test,
    parse_content_string,
    parse_int,
    parse_isdataat,
)


@dataclass
class RuleBuilder:
    """What the options of one rule have said so far (mutable while the rule loads)."""

    msg: str | None = None
    sid: int | None = None
    gid: int = 1
    rev: int = 0
    classtype: str | None = None
    priority: int | None = None
    references: list[Reference] = field(default_factory=list)
    metadata: dict[str, list[str]] = field(default_factory=dict)
    payload: list[PayloadStep] = field(default_factory=list)
    dsize: IntCompare | None = None
    flow: FlowOptions | None = None
    flowbits: list[Flowbit] = field(default_factory=list)
    noalert: bool = False
    threshold: Threshold | None = None
    detection_filter: Threshold | None = None
    modbus: list[ModbusMatch] = field(default_factory=list)
    events: list[EventMatch] = field(default_factory=list)
    dnp3: list[Dnp3Option] = field(default_factory=list)
    buffer: str | None = None  # the sticky buffer selected (dnp3_data), None: the stream
    warnings: list[str] = field(default_factory=list)
    # the content that modifiers apply to, and the modifiers it already has
    last_content_index: int | None = None
    last_content_mods: set[str] = field(default_factory=set)

    def add_step(self, step: PayloadStep) -> None:
        self.payload.append(step)
        if isinstance(step, Content):
            self.last_content_index = len(self.payload) - 1
            self.last_content_mods = set()
        else:
            self.last_content_index = None

    def last_content(self, modifier: str) -> tuple[int, Content]:
        i = self.last_content_index
        if i is None:
            raise KeywordError(f"{modifier} must directly follow a content (or its modifiers)")
        step = self.payload[i]
        assert isinstance(step, Content)
        return i, step

    def modify(self, modifier: str, **changes: Any) -> Content:
        i, step = self.last_content(modifier)
        if modifier in self.last_content_mods and modifier not in ("fast_pattern", "rawbytes"):
            raise KeywordError(f"{modifier} given twice for the same content")
        self.last_content_mods.add(modifier)
        new = replace(step, **changes)
        self.payload[i] = new
        return new


KeywordParser = Callable[[RuleBuilder, str | None], None]


@dataclass(frozen=True)
class Keyword:
    """A rule option: ``value`` is required | optional | none; ``quotes`` is required |
    optional | forbidden; ``negatable`` allows a leading ``!``."""

    name: str
    description: str
    parse: Callable[..., None]
    aliases: tuple[str, ...] = ()
    value: str = "required"
    quotes: str = "forbidden"
    negatable: bool = False


KEYWORDS: dict[str, Keyword] = {}


def keyword(
    name: str,
    description: str,
    *,
    aliases: tuple[str, ...] = (),
    value: str = "required",
    quotes: str = "forbidden",
    negatable: bool = False,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a keyword parser; a duplicate name or alias is an error."""

    def register(func: Callable[..., None]) -> Callable[..., None]:
        kw = Keyword(name, description, func, aliases, value, quotes, negatable)
        for n in (name, *aliases):
            if n.lower() in KEYWORDS:
                raise ValueError(f"duplicate rule keyword {n!r}")
            KEYWORDS[n.lower()] = kw
        return func

    return register


def lookup(name: str) -> Keyword | None:
    return KEYWORDS.get(name.lower())


def _uint(text: str | None, what: str, low: int = 0, high: int = 0xFFFFFFFF) -> int:
    return parse_int(text or "", what, low, high)


# =========================================================================== meta
@keyword("msg", "The alert's message (every backslash is removed).", quotes="required")
def _msg(b: RuleBuilder, value: str) -> None:
    b.msg = value.replace("\\", "")


@keyword("sid", "Signature id (required, > 0).")
def _sid(b: RuleBuilder, value: str) -> None:
    b.sid = _uint(value, "sid", 1)


@keyword("rev", "Revision of the signature (default 0).")
def _rev(b: RuleBuilder, value: str) -> None:
    b.rev = _uint(value, "rev")


@keyword("gid", "Group id (default 1).")
def _gid(b: RuleBuilder, value: str) -> None:
    b.gid = _uint(value, "gid")


@keyword("classtype", "Classification (classification.config): category and priority.")
def _classtype(b: RuleBuilder, value: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", value):
        raise KeywordError(f"invalid classtype name {value!r}")
    if b.classtype is not None:
        raise KeywordError("classtype given twice")
    b.classtype = value.lower()


@keyword("priority", "Priority 1 (highest) to 255; overrides the classtype's.")
def _priority(b: RuleBuilder, value: str) -> None:
    b.priority = _uint(value, "priority", 1, 255)


@keyword("reference", "A reference: type,value (may repeat).")
def _reference(b: RuleBuilder, value: str) -> None:
    if "," not in value:
        raise KeywordError("reference must be type,value")
    kind, ref = (p.strip() for p in value.split(",", 1))
    if not kind or not ref:
        raise KeywordError("reference must be type,value")
    b.references.append(Reference(kind, ref))


@keyword("metadata", "Key value pairs, comma separated; logged as alert.metadata.")
def _metadata(b: RuleBuilder, value: str) -> None:
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(None, 1)
        key = parts[0]
        val = parts[1].strip() if len(parts) > 1 else ""
        b.metadata.setdefault(key, []).append(val)


# =========================================================================== payload
@keyword(
    "content",
    "Literal bytes with |hex| sections; ! negates.",
    quotes="required",
    negatable=True,
)
def _content(b: RuleBuilder, value: str, negated: bool = False) -> None:
    pattern = parse_content_string(value)
    if not pattern:
        raise KeywordError("empty content")
    b.add_step(Content(pattern, negated=negated))


@keyword("nocase", "ASCII case-insensitive match for the preceding content.", value="none")
def _nocase(b: RuleBuilder, value: None) -> None:
    _i, c = b.last_content("nocase")
    b.modify("nocase", nocase=True, pattern=c.pattern.lower())


def _check_absolute(b: RuleBuilder, name: str) -> None:
    if b.last_content_mods & {"distance", "within"}:
        raise KeywordError(f"{name} (absolute) cannot be combined with distance/within")
    if "startswith" in b.last_content_mods:
        raise KeywordError(f"{name} cannot be combined with startswith")


def _check_relative(b: RuleBuilder, name: str) -> None:
    if b.last_content_mods & {"offset", "depth", "startswith"}:
        raise KeywordError(f"{name} (relative) cannot be combined with offset/depth/startswith")


@keyword("offset", "Start the preceding content's search at byte N.")
def _offset(b: RuleBuilder, value: str) -> None:
    _check_absolute(b, "offset")
    b.modify("offset", offset=_uint(value, "offset", 0, 65535))


@keyword("depth", "Search the preceding content within N bytes from its offset.")
def _depth(b: RuleBuilder, value: str) -> None:
    _check_absolute(b, "depth")
    _i, c = b.last_content("depth")
    depth = _uint(value, "depth", 1, 65535)
    if depth < len(c.pattern):
        raise KeywordError(f"depth {depth} is smaller than the content ({len(c.pattern)} bytes)")
    b.modify("depth", depth=depth)


@keyword("distance", "Relative: start N bytes (may be negative) after the previous match.")
def _distance(b: RuleBuilder, value: str) -> None:
    _check_relative(b, "distance")
    b.modify("distance", distance=parse_int(value, "distance", -65535, 65535))


@keyword("within", "Relative: the content must end within N bytes of the previous match.")
def _within(b: RuleBuilder, value: str) -> None:
    _check_relative(b, "within")
    _i, c = b.last_content("within")
    within = _uint(value, "within", 1, 65535)
    if within < len(c.pattern):
        raise KeywordError(f"within {within} is smaller than the content ({len(c.pattern)} bytes)")
    b.modify("within", within=within)


@keyword("startswith", "The preceding content starts the buffer.", value="none")
def _startswith(b: RuleBuilder, value: None) -> None:
    if b.last_content_mods & {"offset", "depth", "distance", "within"}:
        raise KeywordError("startswith cannot be combined with offset/depth/distance/within")
    _i, c = b.last_content("startswith")
    b.modify("startswith", offset=0, depth=len(c.pattern))


@keyword("endswith", "The preceding content ends the buffer.", value="none")
def _endswith(b: RuleBuilder, value: None) -> None:
    i, c = b.last_content("endswith")
    if c.negated:
        raise KeywordError("endswith cannot modify a negated content")
    b.last_content_mods.add("endswith")
    b.payload.insert(i + 1, IsDataAt(1, negated=True, relative=True))


@keyword(
    "fast_pattern",
    "Prefilter hint for the preceding content (no effect on matching).",
    value="optional",
)
def _fast_pattern(b: RuleBuilder, value: str | None) -> None:
    if (
        value is not None
        and value.strip() != "only"
        and not re.fullmatch(r"\s*\d+\s*,\s*\d+\s*", value)
    ):
        raise KeywordError(f"fast_pattern takes 'only' or 'offset,length', not {value!r}")
    _i, c = b.last_content("fast_pattern")
    if c.negated:
        raise KeywordError("fast_pattern cannot be set on a negated content")
    b.modify("fast_pattern", fast_pattern=True)


@keyword("rawbytes", "No effect (Sentinel inspects raw bytes).", value="none")
def _rawbytes(b: RuleBuilder, value: None) -> None:
    b.last_content("rawbytes")


@keyword("isdataat", "[!]N[,relative]: is there data at byte N (after the previous match)?")
def _isdataat(b: RuleBuilder, value: str) -> None:
    b.add_step(parse_isdataat(value))


@keyword(
    "pcre",
    "PCRE2 regular expression /re/flags (flags i s m x A E G R O B).",
    quotes="optional",
    negatable=True,
)
def _pcre(b: RuleBuilder, value: str, negated: bool = False) -> None:
    b.add_step(compile_pcre(value, negated))


@keyword("byte_test", "Extract N bytes and compare them with a value.")
def _byte_test(b: RuleBuilder, value: str) -> None:
    b.add_step(parse_byte_test(value))


@keyword("byte_jump", "Extract N bytes and move the relative pointer by them.")
def _byte_jump(b: RuleBuilder, value: str) -> None:
    b.add_step(parse_byte_jump(value))


_DSIZE_RE = re.compile(r"^\s*(?:(\d+)\s*<>\s*(\d+)|(!|<=|>=|<|>)?\s*(\d+))\s*$")


@keyword("dsize", "Payload size: N, !N, <N, >N, <=N, >=N or A<>B (exclusive).")
def _dsize(b: RuleBuilder, value: str) -> None:
    if b.dsize is not None:
        raise KeywordError("dsize given twice")
    if b.buffer is not None:
        raise KeywordError(f"dsize cannot be combined with the {b.buffer} buffer")
    m = _DSIZE_RE.match(value)
    if not m:
        raise KeywordError(f"bad dsize {value!r}")
    if m.group(1) is not None:
        low, high = int(m.group(1)), int(m.group(2))
        if low >= high:
            raise KeywordError(f"empty dsize range {low}<>{high}")
        b.dsize = IntCompare("<>", low, high)
    else:
        op = {None: "=", "!": "!="}.get(m.group(3), m.group(3))
        b.dsize = IntCompare(op, int(m.group(4)))
    if b.dsize.value > 65535 or b.dsize.high > 65535:
        raise KeywordError("dsize is at most 65535")


# =========================================================================== flow
_FLOW_WORDS = {
    "to_server": ("to_server", True),
    "from_client": ("to_server", True),
    "to_client": ("to_server", False),
    "from_server": ("to_server", False),
    "established": ("established", True),
    "not_established": ("established", False),
    "stateless": ("stateless", True),
    "only_stream": ("only_stream", True),
    "no_stream": ("no_stream", True),
}


@keyword("flow", "Direction and state: to_server/to_client, established, only_stream, ...")
def _flow(b: RuleBuilder, value: str) -> None:
    if b.flow is not None:
        raise KeywordError("flow given twice")
    opts: dict[str, Any] = {}
    for word in (w.strip().lower() for w in value.split(",")):
        if word not in _FLOW_WORDS:
            raise KeywordError(f"unknown flow option {word!r}")
        attr, val = _FLOW_WORDS[word]
        if attr in opts and opts[attr] != val:
            raise KeywordError(f"contradictory flow options in {value!r}")
        opts[attr] = val
    if opts.get("only_stream") and opts.get("no_stream"):
        raise KeywordError("only_stream and no_stream exclude each other")
    b.flow = FlowOptions(**opts)


_BIT_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@keyword("flowbits", "set|unset|toggle|isset|isnotset,name (a|b: either) or noalert.")
def _flowbits(b: RuleBuilder, value: str) -> None:
    parts = [p.strip() for p in value.split(",", 1)]
    command = parts[0].lower()
    if command == "noalert":
        if len(parts) > 1:
            raise KeywordError("flowbits:noalert takes no name")
        b.noalert = True
        return
    if command not in ("set", "unset", "toggle", "isset", "isnotset"):
        raise KeywordError(f"unknown flowbits command {parts[0]!r}")
    if len(parts) < 2 or not parts[1]:
        raise KeywordError(f"flowbits:{command} needs a name")
    names = tuple(n.strip() for n in parts[1].split("|"))
    if len(names) > 1 and command not in ("isset", "isnotset"):
        raise KeywordError(f"'|' (either) only works with isset/isnotset, not {command}")
    for n in names:
        if not _BIT_NAME.match(n):
            raise KeywordError(f"invalid flowbit name {n!r}")
    b.flowbits.append(Flowbit(command, names))


_TRACKS = ("by_src", "by_dst", "by_both", "by_rule", "by_flow")


def _threshold_fields(value: str, allowed: set[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in value.split(","):
        parts = item.split()
        if len(parts) != 2:
            raise KeywordError(f"expected 'name value', got {item.strip()!r}")
        name, val = parts[0].lower(), parts[1]
        if name not in allowed:
            raise KeywordError(f"unknown field {name!r}")
        if name in fields:
            raise KeywordError(f"{name} given twice")
        fields[name] = val
    return fields


@keyword("threshold", "type limit|threshold|both|backoff, track K, count C, seconds S.")
def _threshold(b: RuleBuilder, value: str) -> None:
    if b.threshold is not None or b.detection_filter is not None:
        raise KeywordError("only one threshold or detection_filter per rule")
    f = _threshold_fields(value, {"type", "track", "count", "seconds", "multiplier"})
    kind = f.get("type", "").lower()
    if kind not in ("limit", "threshold", "both", "backoff"):
        raise KeywordError(
            f"threshold type must be limit, threshold, both or backoff, not {f.get('type')!r}"
        )
    track = f.get("track", "").lower()
    if track not in _TRACKS:
        raise KeywordError(f"track must be one of {', '.join(_TRACKS)}")
    if "count" not in f:
        raise KeywordError("threshold needs a count")
    count = _uint(f["count"], "count", 1)
    if kind == "backoff":
        if track != "by_flow":
            raise KeywordError("backoff thresholds track by_flow only")
        if "multiplier" not in f:
            raise KeywordError("backoff needs a multiplier")
        mult = _uint(f["multiplier"], "multiplier", 2)
        b.threshold = Threshold(kind, track, count, 0.0, mult)
        return
    if "multiplier" in f:
        raise KeywordError("multiplier only goes with type backoff")
    if "seconds" not in f:
        raise KeywordError("threshold needs seconds")
    b.threshold = Threshold(kind, track, count, float(_uint(f["seconds"], "seconds", 1)))


@keyword("detection_filter", "track K, count C, seconds S[, unique_on src_port|dst_port].")
def _detection_filter(b: RuleBuilder, value: str) -> None:
    if b.threshold is not None or b.detection_filter is not None:
        raise KeywordError("only one threshold or detection_filter per rule")
    f = _threshold_fields(value, {"track", "count", "seconds", "unique_on"})
    track = f.get("track", "").lower()
    if track not in _TRACKS:
        raise KeywordError(f"track must be one of {', '.join(_TRACKS)}")
    for need in ("count", "seconds"):
        if need not in f:
            raise KeywordError(f"detection_filter needs {need}")
    unique = f.get("unique_on")
    if unique is not None and unique.lower() not in ("src_port", "dst_port"):
        raise KeywordError("unique_on must be src_port or dst_port")
    b.detection_filter = Threshold(
        "detection_filter",
        track,
        _uint(f["count"], "count", 0),
        float(_uint(f["seconds"], "seconds", 1)),
        unique_on=unique.lower() if unique else None,
    )


# =========================================================================== app layer
@keyword(
    "modbus",
    "Modbus function / category / subfunction, access with table, address and "
    "value ranges, and unit (see the spec).",
)
def _modbus(b: RuleBuilder, value: str) -> None:
    match, warnings = modbus_kw.parse_modbus(value)
    b.modbus.append(match)
    b.warnings.extend(warnings)


@keyword(
    "dnp3_func",
    "DNP3 application function code (number, name, or 9.x integer form) of the request "
    "(to server) or response (to client).",
    aliases=("dnp3.func",),
)
def _dnp3_func(b: RuleBuilder, value: str) -> None:
    opt, warnings = dnp3_kw.parse_func(value)
    b.dnp3.append(opt)
    b.warnings.extend(warnings)


@keyword(
    "dnp3_ind",
    "DNP3 internal indications of a response (to client): number or names (any set; IIN2 "
    "masked with 0x0F as in Suricata 7/8), or 9.x bit flags (+ * - =, !flag) and integers.",
    aliases=("dnp3.ind",),
)
def _dnp3_ind(b: RuleBuilder, value: str) -> None:
    opt, warnings = dnp3_kw.parse_ind(value)
    b.dnp3.append(opt)
    b.warnings.extend(warnings)


@keyword(
    "dnp3_obj",
    "DNP3 object group,variation in the transaction (0x hex; a leading 0 is octal).",
    aliases=("dnp3.obj",),
)
def _dnp3_obj(b: RuleBuilder, value: str) -> None:
    opt, warnings = dnp3_kw.parse_obj(value)
    b.dnp3.append(opt)
    b.warnings.extend(warnings)


@keyword(
    "dnp3_data",
    "Sticky buffer: the following payload keywords inspect the DNP3 application buffer "
    "(no link or transport bytes, no CRCs).",
    aliases=("dnp3.data",),
    value="none",
)
def _dnp3_data(b: RuleBuilder, value: None) -> None:
    if b.buffer not in (None, "dnp3_data"):
        raise KeywordError(f"dnp3_data after the {b.buffer} buffer")
    if b.buffer is None and (b.payload or b.dsize is not None):
        raise KeywordError(
            "payload keywords before dnp3_data would inspect the stream, which Sentinel does "
            "not combine with DNP3 transactions: put them after dnp3_data"
        )
    b.buffer = "dnp3_data"
    b.last_content_index = None


# Protocol -> {event name: description}; protocol modules add their tables here.
APP_LAYER_EVENTS: dict[str, dict[str, str]] = {
    "modbus": modbus_kw.MODBUS_EVENTS,
    "dnp3": dnp3_kw.DNP3_EVENTS,
}
RETIRED_APP_LAYER_EVENTS: dict[str, dict[str, str]] = {"modbus": modbus_kw.RETIRED_EVENTS}


@keyword("app-layer-event", "proto.name: a protocol event on the current transaction.")
def _app_layer_event(b: RuleBuilder, value: str) -> None:
    text = value.strip()
    if "." not in text:
        raise KeywordError(f"app-layer-event must be proto.name, not {text!r}")
    proto, name = (p.lower() for p in text.split(".", 1))
    if proto not in APP_LAYER_EVENTS:
        raise KeywordError(f"no app-layer events for protocol {proto!r}")
    retired = RETIRED_APP_LAYER_EVENTS.get(proto, {}).get(name)
    if retired:
        raise KeywordError(f"event {proto}.{name} was {retired}")
    if name not in APP_LAYER_EVENTS[proto]:
        raise KeywordError(f"unknown event {proto}.{name}")
    if proto == "dnp3" and name in dnp3_kw.NOT_PRODUCED:
        b.warnings.append(
            f"Sentinel never raises dnp3.{name} ({dnp3_kw.NOT_PRODUCED[name]}): this rule "
            "cannot match"
        )
    b.events.append(EventMatch(proto, name))


def keyword_table() -> list[tuple[str, str, str]]:
    """(name, aliases, description) of every keyword, for documentation and ``--help``."""
    seen: dict[str, Keyword] = {}
    for kw in KEYWORDS.values():
        seen.setdefault(kw.name, kw)
    return [
        (k.name, ", ".join(k.aliases), k.description)
        for k in sorted(seen.values(), key=lambda k: k.name)
    ]


__all__ = [
    "APP_LAYER_EVENTS",
    "KEYWORDS",
    "ByteJump",
    "ByteTest",
    "Keyword",
    "KeywordError",
    "Pcre",
    "RuleBuilder",
    "keyword",
    "lookup",
]
