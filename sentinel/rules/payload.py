"""Payload keywords: parsing helpers and the matcher (spec section 2).

``PayloadMatcher`` evaluates a rule's chain of content / pcre / byte_test / byte_jump /
isdataat steps against one buffer. Relative steps work from the end of the previous match
(``prev``; 0 before any match). When a later relative step fails, the engine retries the
earlier content or pcre at its next occurrence (backtracking), as Suricata does; the number
of retries per buffer is capped (``MAX_BACKTRACK``), like Suricata's inspection recursion
limit, so hostile payloads cannot make matching quadratic without bound.

Matching is a pure function of (rule steps, buffer): no state, no I/O.
"""

from __future__ import annotations

import logging

import regex

from sentinel.rules.model import ByteJump, ByteTest, Content, IsDataAt, PayloadStep, Pcre

log = logging.getLogger(__name__)

MAX_BACKTRACK = 3000  # match attempts per buffer and rule
PCRE_TIMEOUT = 0.25  # seconds per regex search; a timeout counts as no match

_HEX = set(b"0123456789abcdefABCDEF")


class KeywordError(ValueError):
    """A keyword value that cannot be parsed (the message says why)."""


# --------------------------------------------------------------------------- content text
def parse_content_string(text: str) -> bytes:
    """The bytes of a content string (quotes already stripped): ``|hex|`` sections and the
    escapes ``\\;`` ``\\"`` ``\\\\`` ``\\:``; anything else escaped, an unescaped ``"`` or a bad
    hex section is an error."""
    out = bytearray()
    raw = text.encode("utf-8")
    i, n = 0, len(raw)
    in_hex = False
    hex_digits = bytearray()
    while i < n:
        c = raw[i]
        if in_hex:
            if c == 0x7C:  # |
                if len(hex_digits) % 2:
                    raise KeywordError("odd number of hex digits in |...|")
                out += bytes.fromhex(hex_digits.decode())
                hex_digits.clear()
                in_hex = False
            elif c in _HEX:
                hex_digits.append(c)
            elif c in b" \t":
                if len(hex_digits) % 2:
                    raise KeywordError("hex byte split by a space in |...|")
            else:
                raise KeywordError(f"invalid character {chr(c)!r} in |hex| section")
            i += 1
            continue
        if c == 0x7C:
            in_hex = True
        elif c == 0x5C:  # backslash
            if i + 1 >= n or raw[i + 1] not in b';"\\:':
                nxt = chr(raw[i + 1]) if i + 1 < n else "end of string"
                raise KeywordError(f'invalid escape \\{nxt} (only \\; \\" \\\\ \\: are allowed)')
            out.append(raw[i + 1])
            i += 1
        elif c == 0x22:
            raise KeywordError('unescaped " inside content')
        else:
            out.append(c)
        i += 1
    if in_hex:
        raise KeywordError("unterminated |hex| section (odd number of '|')")
    return bytes(out)


# --------------------------------------------------------------------------- numbers
def parse_int(text: str, what: str, low: int | None = None, high: int | None = None) -> int:
    """A decimal, 0x-hex or (C-style) leading-0 octal integer."""
    t = text.strip()
    neg = t.startswith("-")
    body = t[1:] if neg or t.startswith("+") else t
    try:
        if body.lower().startswith("0x"):
            value = int(body[2:], 16)
        elif len(body) > 1 and body.startswith("0") and body.isdigit():
            value = int(body, 8)
        elif body.isdigit():
            value = int(body)
        else:
            raise ValueError
    except ValueError:
        raise KeywordError(f"{what}: not a number: {text.strip()!r}") from None
    value = -value if neg else value
    if low is not None and value < low:
        raise KeywordError(f"{what}: {value} is below {low}")
    if high is not None and value > high:
        raise KeywordError(f"{what}: {value} is above {high}")
    return value


# --------------------------------------------------------------------------- pcre
_PCRE_FLAGS = {"i": regex.IGNORECASE, "s": regex.DOTALL, "m": regex.MULTILINE, "x": regex.VERBOSE}
_HTTP_FLAGS = set("UIPQHDMCSYVWZ")


def compile_pcre(text: str, negated: bool) -> Pcre:
    """``/re/flags`` into a Pcre step; the regex is validated (compiled) now."""
    if not text.startswith("/"):
        raise KeywordError("pcre must look like /regex/flags")
    end = text.rfind("/")
    if end <= 0:
        raise KeywordError("pcre has no closing '/'")
    body, flags = text[1:end], text[end + 1 :]
    re_flags = 0
    relative = anchored = dollar_end = ungreedy = False
    for f in flags:
        if f in _PCRE_FLAGS:
            re_flags |= _PCRE_FLAGS[f]
        elif f == "R":
            relative = True
        elif f == "A":
            anchored = True
        elif f == "E":
            dollar_end = True
        elif f == "G":
            ungreedy = True
        elif f in "OB":
            pass
        elif f in _HTTP_FLAGS:
            raise KeywordError(f"pcre flag {f!r} selects an HTTP buffer, which Sentinel lacks")
        else:
            raise KeywordError(f"unknown pcre flag {f!r}")
    pattern = body
    if ungreedy:
        pattern = _invert_greediness(pattern)
    if dollar_end and not re_flags & regex.MULTILINE:
        pattern = _dollar_end_only(pattern)
    try:
        compiled = regex.compile(pattern.encode("utf-8"), re_flags | regex.VERSION0)
    except (regex.error, ValueError) as exc:
        raise KeywordError(f"pcre does not compile: {exc}") from None
    return Pcre(text, compiled, negated, relative, anchored)


def _tokens(pattern: str) -> list[tuple[str, str]]:
    """Split a regex into (kind, text) tokens: esc, class, group, quant, other."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(("esc", pattern[i : i + 2]))
            i += 2
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            out.append(("class", pattern[i : j + 1]))
            i = j + 1
        elif c == "(" and pattern.startswith("(?", i):
            out.append(("group", "(?"))
            i += 2
        elif c in "*+?":
            out.append(("quant", c))
            i += 1
        elif c == "{":
            j = pattern.find("}", i)
            inner = pattern[i + 1 : j] if j > 0 else ""
            if j > 0 and inner and all(ch.isdigit() or ch == "," for ch in inner):
                out.append(("quant", pattern[i : j + 1]))
                i = j + 1
            else:
                out.append(("other", c))
                i += 1
        else:
            out.append(("other", c))
            i += 1
    return out


def _invert_greediness(pattern: str) -> str:
    """PCRE's ungreedy flag (G): greedy quantifiers become lazy and lazy ones greedy."""
    toks = _tokens(pattern)
    out: list[str] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        out.append(text)
        if kind == "quant":
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if nxt is not None and nxt == ("quant", "?"):
                i += 1  # lazy -> greedy: drop the '?'
            elif nxt is not None and nxt == ("quant", "+"):
                out.append("+")  # possessive stays possessive
                i += 1
            else:
                out.append("?")
        i += 1
    return "".join(out)


def _dollar_end_only(pattern: str) -> str:
    """PCRE's DOLLAR_ENDONLY (E): ``$`` matches only at the very end of the buffer."""
    return "".join(r"\Z" if t == ("other", "$") else t[1] for t in _tokens(pattern))


# --------------------------------------------------------------------------- byte_* parsing
_BYTE_OPS = ("<=", ">=", "<", ">", "=", "&", "^")


def _byte_options(parts: list[str], allowed: set[str]) -> dict:
    """Options common to byte_test / byte_jump after the positional ones."""
    opts: dict = {"relative": False, "little": False, "base": None, "bitmask": None}
    string = False
    it = iter(parts)
    for raw in it:
        p = raw.strip()
        low = p.lower()
        words = low.split()
        if low == "relative":
            opts["relative"] = True
        elif low in ("big", "little"):
            opts["little"] = low == "little"
        elif low == "string":
            string = True
        elif low in ("hex", "dec", "oct"):
            opts["base"] = {"hex": 16, "dec": 10, "oct": 8}[low]
        elif low == "dce":
            raise KeywordError("'dce' needs the DCERPC protocol, which Sentinel does not decode")
        elif words and words[0] == "bitmask" and len(words) == 2:
            opts["bitmask"] = parse_int(words[1], "bitmask", 1, 0xFFFFFFFFFFFFFFFF)
        elif words and words[0] in allowed and words[0] in ("multiplier", "post_offset"):
            if len(words) != 2:
                raise KeywordError(f"{words[0]} needs one value")
            opts[words[0]] = parse_int(words[1], words[0], 1 if words[0] == "multiplier" else None)
        elif low in allowed and low in ("align", "from_beginning", "from_end"):
            opts[low] = True
        else:
            raise KeywordError(f"unknown option {p!r}")
    if string and opts["base"] is None:
        raise KeywordError("'string' needs a base: hex, dec or oct")
    if opts["base"] is not None and not string:
        raise KeywordError(f"a base ({'hex dec oct'}) needs 'string'")
    return opts


def _check_nbytes(nbytes: int, base: int | None) -> None:
    if base is None and not 1 <= nbytes <= 8:
        raise KeywordError(f"{nbytes} bytes: binary extraction takes 1 to 8 bytes")
    if base is not None and not 1 <= nbytes <= 23:
        raise KeywordError(f"{nbytes} bytes: string extraction takes 1 to 23 bytes")


def parse_byte_test(value: str) -> ByteTest:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) < 4:
        raise KeywordError("byte_test needs: bytes, operator, value, offset")
    nbytes = parse_int(parts[0], "bytes")
    op_text = parts[1].replace(" ", "")
    negated = op_text.startswith("!")
    if negated:
        op_text = op_text[1:]
    if op_text == "":  # "!" alone means "!="
        op_text = "="
    if op_text not in _BYTE_OPS:
        raise KeywordError(f"unknown operator {parts[1]!r}")
    test_value = parse_int(parts[2], "value", 0, 0xFFFFFFFFFFFFFFFF)
    offset = parse_int(parts[3], "offset", -65535, 65535)
    opts = _byte_options(parts[4:], set())
    _check_nbytes(nbytes, opts["base"])
    return ByteTest(
        nbytes,
        op_text,
        negated,
        test_value,
        offset,
        opts["relative"],
        opts["little"],
        opts["base"],
        opts["bitmask"],
    )


def parse_byte_jump(value: str) -> ByteJump:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) < 2:
        raise KeywordError("byte_jump needs: bytes, offset")
    nbytes = parse_int(parts[0], "bytes")
    offset = parse_int(parts[1], "offset", -65535, 65535)
    allowed = {"multiplier", "post_offset", "align", "from_beginning", "from_end"}
    opts = _byte_options(parts[2:], allowed)
    _check_nbytes(nbytes, opts["base"])
    if opts.get("from_beginning") and opts.get("from_end"):
        raise KeywordError("from_beginning and from_end exclude each other")
    return ByteJump(
        nbytes,
        offset,
        opts["relative"],
        opts["little"],
        opts["base"],
        opts.get("multiplier", 1),
        opts.get("align", False),
        opts.get("from_beginning", False),
        opts.get("from_end", False),
        opts.get("post_offset", 0),
        opts["bitmask"],
    )


def parse_isdataat(value: str) -> IsDataAt:
    parts = [p.strip() for p in value.split(",")]
    first = parts[0]
    negated = first.startswith("!")
    size = parse_int(first.lstrip("!"), "isdataat", 0, 65535)
    relative = False
    for p in parts[1:]:
        if p.lower() == "relative":
            relative = True
        elif p.lower() == "rawbytes":
            pass
        else:
            raise KeywordError(f"unknown isdataat option {p!r}")
    return IsDataAt(size, negated, relative)


# --------------------------------------------------------------------------- extraction
def _extract(step: ByteTest | ByteJump, buf: bytes, pos: int) -> int | None:
    """The value read by a byte_test / byte_jump at ``pos``, or None (out of bounds or not
    a number)."""
    n = step.nbytes
    if pos < 0 or pos + n > len(buf):
        return None
    raw = buf[pos : pos + n]
    if step.base is None:
        value = int.from_bytes(raw, "little" if step.little else "big")
    else:
        digits = "0123456789abcdef"[: step.base]
        text = raw.decode("latin-1").strip().lower()
        if step.base == 16 and text.startswith("0x"):
            text = text[2:]
        end = 0
        while end < len(text) and text[end] in digits:
            end += 1
        if end == 0:
            return None
        value = int(text[:end], step.base)
    mask = step.bitmask
    if mask is not None:
        value &= mask
        value >>= (mask & -mask).bit_length() - 1
    return value


def byte_test(step: ByteTest, buf: bytes, prev: int) -> bool:
    value = _extract(step, buf, prev + step.offset if step.relative else step.offset)
    if value is None:
        return False
    v, op = step.value, step.op
    if op == "=":
        result = value == v
    elif op == "<":
        result = value < v
    elif op == ">":
        result = value > v
    elif op == "<=":
        result = value <= v
    elif op == ">=":
        result = value >= v
    elif op == "&":
        result = bool(value & v)
    else:  # ^
        result = bool(value ^ v)
    return result != step.negated


def byte_jump(step: ByteJump, buf: bytes, prev: int) -> int | None:
    """The new relative pointer after a byte_jump, or None when it fails."""
    start = prev + step.offset if step.relative else step.offset
    value = _extract(step, buf, start)
    if value is None:
        return None
    value *= step.multiplier
    if step.align and value % 4:
        value += 4 - value % 4
    if step.from_beginning:
        new = value
    elif step.from_end:
        new = len(buf) + value
    else:
        new = start + step.nbytes + value
    new += step.post_offset
    if new > len(buf):
        return None
    return max(new, 0)


# --------------------------------------------------------------------------- matcher
def _moves_pointer(step: PayloadStep) -> bool:
    if isinstance(step, Content | Pcre):
        return not step.negated
    return isinstance(step, ByteJump)


def _uses_pointer(step: PayloadStep) -> bool:
    if isinstance(step, Content):
        return step.relative
    return bool(getattr(step, "relative", False))


class PayloadMatcher:
    """A compiled payload chain; ``match(buf)`` is True when every step holds."""

    __slots__ = ("_backtrack", "_nocase", "_quick_bytes", "_quick_contents", "min_length", "steps")

    def __init__(self, steps: tuple[PayloadStep, ...]) -> None:
        self.steps = steps
        self._nocase = any(isinstance(s, Content) and s.nocase for s in steps)
        # Whether the step at i must try further occurrences when a later step fails:
        # only if a later step depends (through unmoved pointers) on where it matched.
        flags = []
        for i, step in enumerate(steps):
            needs = False
            if _moves_pointer(step):
                for later in steps[i + 1 :]:
                    if _uses_pointer(later):
                        needs = True
                        break
                    if _moves_pointer(later) and not _uses_pointer(later):
                        break
            flags.append(needs)
        self._backtrack = tuple(flags)
        # A buffer shorter than the longest absolute (offset + pattern) cannot match.
        need = 0
        for s in steps:
            if isinstance(s, Content) and not s.negated and not s.relative:
                need = max(need, (s.offset or 0) + len(s.pattern))
        self.min_length = need
        # Necessary conditions that do not depend on other steps, checked before the chain:
        # absolute byte_tests, and contents that must sit at a fixed position.
        self._quick_bytes = tuple(s for s in steps if isinstance(s, ByteTest) and not s.relative)
        self._quick_contents = tuple(
            (s.offset or 0, s.pattern)
            for s in steps
            if isinstance(s, Content)
            and not s.negated
            and not s.nocase
            and not s.relative
            and s.depth == len(s.pattern)
        )

    def match(self, buf: bytes) -> bool:
        if len(buf) < self.min_length:
            return False
        for bt in self._quick_bytes:
            if not byte_test(bt, buf, 0):
                return False
        for offset, pattern in self._quick_contents:
            if not buf.startswith(pattern, offset):
                return False
        lower = buf.lower() if self._nocase else buf
        budget = [MAX_BACKTRACK]
        return self._run(0, buf, lower, 0, budget)

    def _run(self, i: int, buf: bytes, lower: bytes, prev: int, budget: list[int]) -> bool:
        steps = self.steps
        while i < len(steps):
            step = steps[i]
            if isinstance(step, Content):
                hay = lower if step.nocase else buf
                pat = step.pattern
                if step.relative:
                    start = prev + (step.distance or 0)
                    end = start + step.within if step.within is not None else len(buf)
                    if start < 0:
                        start = 0
                else:
                    start = step.offset or 0
                    end = start + step.depth if step.depth is not None else len(buf)
                if end > len(buf):
                    end = len(buf)
                found = hay.find(pat, start, end) if start <= end else -1
                if step.negated:
                    if found >= 0:
                        return False
                    i += 1
                    continue
                if found < 0:
                    return False
                if not self._backtrack[i]:
                    prev = found + len(pat)
                    i += 1
                    continue
                while found >= 0:
                    budget[0] -= 1
                    if budget[0] < 0:
                        return False
                    if self._run(i + 1, buf, lower, found + len(pat), budget):
                        return True
                    found = hay.find(pat, found + 1, end)
                return False
            if isinstance(step, Pcre):
                pos = prev if step.relative else 0
                try:
                    if step.anchored:
                        m = step.regex.match(buf, pos, timeout=PCRE_TIMEOUT)
                    else:
                        m = step.regex.search(buf, pos, timeout=PCRE_TIMEOUT)
                except TimeoutError:
                    log.warning("pcre %s timed out on a %d-byte buffer", step.source, len(buf))
                    m = None
                if step.negated:
                    if m is not None:
                        return False
                    i += 1
                    continue
                if m is None:
                    return False
                if not self._backtrack[i] or step.anchored:
                    prev = m.end()
                    i += 1
                    continue
                while m is not None:
                    budget[0] -= 1
                    if budget[0] < 0:
                        return False
                    if self._run(i + 1, buf, lower, m.end(), budget):
                        return True
                    try:
                        m = step.regex.search(buf, m.start() + 1, timeout=PCRE_TIMEOUT)
                    except TimeoutError:
                        return False
                return False
            if isinstance(step, ByteTest):
                if not byte_test(step, buf, prev):
                    return False
            elif isinstance(step, ByteJump):
                new = byte_jump(step, buf, prev)
                if new is None:
                    return False
                prev = new
            else:  # IsDataAt
                ok = prev + step.size <= len(buf) if step.relative else step.size < len(buf)
                if ok == step.negated:
                    return False
            i += 1
        return True
