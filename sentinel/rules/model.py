"""The rule model: what a loaded Suricata-style rule is, as frozen, typed objects.

Every option is parsed once, at load time, into one of the small objects below (see
``sentinel.rules.keywords`` for the registry that builds them); matching never re-reads rule
text. A ``Rule`` carries its origin (file and line) so every alert can say where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sentinel.errors import Location
from sentinel.findings import Technique

# Rule kinds: what the engine inspects for a rule (see docs/rules.md, "What a rule inspects").
KIND_PACKET = "packet"  # every packet of the flow (no payload keyword, or flow:no_stream)
KIND_STREAM = "stream"  # each in-order TCP segment payload / UDP payload (payload keywords)
KIND_APP = "app"  # Modbus / DNP3 transactions and protocol events (modbus:, dnp3_*, events)

ACTIONS = ("alert", "pass", "drop", "reject", "rejectsrc", "rejectdst", "rejectboth")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rule file; ``severity`` is ``error`` (rule not loaded) or
    ``warning`` (loaded, but probably not what the author meant)."""

    severity: str
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


# --------------------------------------------------------------------------- integers
@dataclass(frozen=True)
class IntCompare:
    """``N``, ``!N``, ``<N``, ``>N``, ``<=N``, ``>=N`` or ``A<>B`` (strictly between)."""

    op: str  # "=", "!=", "<", ">", "<=", ">=", "<>"
    value: int
    high: int = 0

    def __call__(self, v: int) -> bool:
        op = self.op
        if op == "=":
            return v == self.value
        if op == "<":
            return v < self.value
        if op == ">":
            return v > self.value
        if op == "<>":
            return self.value < v < self.high
        if op == "!=":
            return v != self.value
        if op == "<=":
            return v <= self.value
        return v >= self.value


# --------------------------------------------------------------------------- payload
@dataclass(frozen=True)
class Content:
    """``content`` and its modifiers. ``relative`` when distance or within is given."""

    pattern: bytes
    negated: bool = False
    nocase: bool = False
    offset: int | None = None
    depth: int | None = None
    distance: int | None = None
    within: int | None = None
    fast_pattern: bool = False

    @property
    def relative(self) -> bool:
        return self.distance is not None or self.within is not None


@dataclass(frozen=True)
class Pcre:
    """``pcre:"/re/flags"``; ``regex`` is the compiled ``regex``-module pattern (bytes)."""

    source: str
    regex: Any
    negated: bool = False
    relative: bool = False  # R
    anchored: bool = False  # A


@dataclass(frozen=True)
class ByteTest:
    nbytes: int
    op: str  # < > = <= >= & ^
    negated: bool
    value: int
    offset: int
    relative: bool = False
    little: bool = False
    base: int | None = None  # string extraction base (10, 16, 8), None = binary
    bitmask: int | None = None


@dataclass(frozen=True)
class ByteJump:
    nbytes: int
    offset: int
    relative: bool = False
    little: bool = False
    base: int | None = None
    multiplier: int = 1
    align: bool = False
    from_beginning: bool = False
    from_end: bool = False
    post_offset: int = 0
    bitmask: int | None = None


@dataclass(frozen=True)
class IsDataAt:
    size: int
    negated: bool = False
    relative: bool = False


PayloadStep = Content | Pcre | ByteTest | ByteJump | IsDataAt


# --------------------------------------------------------------------------- flow state
@dataclass(frozen=True)
class FlowOptions:
    """``flow:``; ``to_server`` is True/False for a direction, None for either."""

    to_server: bool | None = None
    established: bool | None = None  # True established, False not_established
    stateless: bool = False
    only_stream: bool = False
    no_stream: bool = False


@dataclass(frozen=True)
class Flowbit:
    command: str  # set unset toggle isset isnotset
    names: tuple[str, ...]


@dataclass(frozen=True)
class Threshold:
    """``threshold`` (type limit/threshold/both/backoff) or ``detection_filter`` (type
    ``detection_filter``)."""

    type: str
    track: str  # by_src by_dst by_both by_rule by_flow
    count: int
    seconds: float = 0.0
    multiplier: int = 0
    unique_on: str | None = None  # detection_filter: src_port | dst_port


# --------------------------------------------------------------------------- app layer
@dataclass(frozen=True)
class ModbusMatch:
    """One ``modbus:`` option (several in a rule are ANDed); see spec section 3."""

    unit: IntCompare | None = None
    function: int | None = None
    subfunction: int | None = None
    category: int | None = None  # a CATEGORY_* bit set; None when not a category form
    access: int | None = None  # ACCESS_* bits to require (READ or WRITE, plus a table)
    address: IntCompare | None = None
    value: IntCompare | None = None
    text: str = ""


@dataclass(frozen=True)
class UintMatch:
    """Suricata's generic integer match (``detect/uint.rs``): ``mode`` is one of ``=``,
    ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``range`` (``arg1 < v < arg2``), ``!range``
    (``v <= arg1 or v >= arg2``), ``&=`` (``v & arg1 == arg2``) and ``&!=``."""

    mode: str
    arg1: int
    arg2: int = 0

    def __call__(self, v: int) -> bool:
        mode, a = self.mode, self.arg1
        if mode == "=":
            return v == a
        if mode == "!=":
            return v != a
        if mode == "<":
            return v < a
        if mode == "<=":
            return v <= a
        if mode == ">":
            return v > a
        if mode == ">=":
            return v >= a
        if mode == "range":
            return a < v < self.arg2
        if mode == "!range":
            return v <= a or v >= self.arg2
        if mode == "&=":
            return v & a == self.arg2
        return v & a != self.arg2  # "&!="


@dataclass(frozen=True)
class Dnp3Func:
    """``dnp3_func``: the application function code of the transaction (spec section 4)."""

    match: UintMatch
    text: str = ""


@dataclass(frozen=True)
class Dnp3Ind:
    """``dnp3_ind``: the response's internal indications (IIN1 high byte, IIN2 low).

    ``legacy`` is the Suricata 7/8 form (a number or a list of names): true when any listed
    IIN1 bit or any listed IIN2 bit of the low nibble is set (``flags & 0xFF0F``: the *quirk*
    that IIN2 is masked with 0x0F). Otherwise ``match`` (Suricata 9.x integer forms) or
    ``bits`` (9.x bit flags: ``modifier`` ``+`` all, ``*`` any, ``-`` not all, ``=`` exactly;
    ``mask`` the named flags, ``want`` those not written with ``!``) decide on all 16 bits.
    """

    legacy: int | None = None
    match: UintMatch | None = None
    modifier: str = ""
    mask: int = 0
    want: int = 0
    text: str = ""


@dataclass(frozen=True)
class Dnp3Obj:
    """``dnp3_obj:G,V``: some object header of the transaction has group G, variation V."""

    group: int
    variation: int
    text: str = ""


Dnp3Option = Dnp3Func | Dnp3Ind | Dnp3Obj


@dataclass(frozen=True)
class EventMatch:
    """``app-layer-event:proto.name``."""

    protocol: str
    name: str


# --------------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class Reference:
    type: str
    value: str

    @property
    def url(self) -> str | None:
        """A URL for the reference where its type says how to build one."""
        t, v = self.type.lower(), self.value
        if t == "url":
            return v if "://" in v else f"https://{v}"
        if t == "cve":
            return f"https://www.cve.org/CVERecord?id=CVE-{v.removeprefix('CVE-')}"
        if t == "mitre":
            return f"https://attack.mitre.org/techniques/{v}/"
        return None


@dataclass(frozen=True)
class Header:
    """The rule header, with address and port specs compiled to predicates."""

    action: str
    proto: str  # as written (lower case)
    src: Any  # sentinel.rules.addresses.AddressSpec
    src_ports: Any  # PortSpec
    dst: Any
    dst_ports: Any
    bidirectional: bool = False
    text: str = ""


@dataclass(frozen=True)
class Rule:
    """A loaded rule. ``<>`` rules load as two Rule objects sharing gid/sid (the second
    with ``swapped`` set)."""

    header: Header
    kind: str
    transport: int | None  # 6 TCP, 17 UDP, None any
    app_proto: str | None  # "modbus" / "dnp3" when the header or a keyword says so
    sid: int
    gid: int
    rev: int
    msg: str
    classtype: str | None
    category: str
    priority: int
    technique: Technique
    technique_source: str  # metadata | classtype | default
    references: tuple[Reference, ...] = ()
    metadata: tuple[tuple[str, tuple[str, ...]], ...] = ()
    flow: FlowOptions = FlowOptions()
    payload: tuple[PayloadStep, ...] = ()
    dsize: IntCompare | None = None
    modbus: tuple[ModbusMatch, ...] = ()
    events: tuple[EventMatch, ...] = ()
    dnp3: tuple[Dnp3Option, ...] = ()
    dnp3_data: tuple[PayloadStep, ...] | None = None  # steps after the dnp3_data sticky buffer
    flowbits: tuple[Flowbit, ...] = ()
    noalert: bool = False
    threshold: Threshold | None = None
    detection_filter: Threshold | None = None
    location: Location = field(default_factory=lambda: Location("<string>"))
    ruleset: str = ""
    text: str = ""
    swapped: bool = False

    @property
    def key(self) -> tuple[int, int]:
        return (self.gid, self.sid)

    @property
    def metadata_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.metadata}

    @property
    def severity(self) -> str:
        """Finding severity from the priority: 1 high, 2 medium, 3 and above low."""
        if self.priority <= 1:
            return "high"
        if self.priority == 2:
            return "medium"
        return "low"

    @property
    def reference_url(self) -> str | None:
        for ref in self.references:
            url = ref.url
            if url:
                return url
        return None

    def to_dict(self) -> dict[str, Any]:
        """A summary for listings and evidence (no compiled objects)."""
        return {
            "sid": self.sid,
            "gid": self.gid,
            "rev": self.rev,
            "msg": self.msg,
            "action": self.header.action,
            "classtype": self.classtype,
            "category": self.category,
            "priority": self.priority,
            "file": self.location.path,
            "line": self.location.line,
        }
