"""YARA over reassembled payload streams and over files rebuilt from clear-text protocols.

Rules: the starter set shipped in ``sentinel/signatures/*.yar`` (``detectors.yara.builtin``),
plus the files or directories in ``detectors.yara.rules`` and ``sentinel analyze --yara PATH``.
They are compiled once, when the detector is built; a rule file that does not compile, or whose
metadata is wrong, is refused with a ``RuleError`` located at ``file:line``.

Streams: each direction of each TCP connection (and of each UDP flow, datagrams in order) is
scanned in windows of ``window_bytes`` that overlap by ``overlap_bytes``, so a match that
straddles two windows is found once (a match is reported only if one of its strings ends in
bytes the previous window had not scanned). In a live run, bytes that wait longer than
``flush_seconds`` of packet time for their window to fill are scanned then; reading a capture
file (``Detector.live`` False), where only the findings matter, a tail waits for its window
or the end of its flow (many fewer small scans, and no match split where a tail was
scanned); either way a flow's last bytes are scanned when it ends. At most
``max_streams`` flow directions are buffered; when the table is full, its least recently
active eighth is scanned and dropped. The window's first byte is not the start of a file, so
stream rules should rely on strings, not on ``uint16(0)`` or ``filesize``.

The pipeline hands the chunks over in batches (``on_stream_batch``): up to 128 chunks of one
flow direction, in a live run at most ``flush_seconds`` of packet time (and a tick) late,
always before the flow ends. That costs a fraction of a call per chunk, and no event object
per chunk: a batch comes as parallel data (``sentinel.decode.flow.Segments``: the chunks'
bytes joined, their offsets, times and frames in native vectors), appended to the window and
the chunk index with a few copies. Windows, offsets, packets and findings are those of
chunk-by-chunk delivery (``on_stream``), only reported up to ``flush_seconds`` later for a
window that fills quickly (a partial window waited that long before too). Flows the file
extractor follows get their chunks one by one, in step with the other flows (FTP and TFTP tie
flows together).

Depth: like Suricata's ``stream.reassembly.depth``, only the first ``decode.stream_depth``
bytes (default 0: all) of each direction of a TCP connection are scanned as stream; the
flow table stops handing a direction's chunks over there. Files are not bound by it (their own
cap is ``max_file_bytes``): a flow the extractor follows keeps getting its chunks.

Files: HTTP/1.x bodies, FTP data connections and TFTP transfers (``detectors/files.py``) are
scanned whole (up to ``max_file_bytes``) when complete; a file-scoped rule can use ``pe``,
``filesize`` and ``uint16(0)``. A file match is not reported again when the stream scan already
reported the same rule inside the file's bytes.

Two external variables are defined for rules: ``sentinel_scope`` (``"stream"`` or ``"file"``)
and ``file_name`` (the file's name from the protocol, ``""`` for streams).

Findings carry the rule, its namespace, tags and metadata, the identifiers of the strings that
matched and how many times, the flow, the direction and the stream offset; never the matched
bytes. Metadata the scanner reads:

- ``sid`` (integer): the rule id (``yara:<namespace>.<rule>`` without it);
- ``severity``: low | medium | high | critical (default high);
- ``mitre_attack``: an ATT&CK for ICS technique id (default T0867 Lateral Tool Transfer);
- ``description`` and ``reference``: the finding's message and rule reference.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import yara
from librt.vecs import append, extend, vec
from mypy_extensions import i64

from sentinel.config import Config
from sentinel.decode.flow import Segments
from sentinel.decode.packet import PROTO_UDP
from sentinel.detector_settings import YaraSettings, detector_settings
from sentinel.errors import Location, RuleError
from sentinel.events import ConnId, StreamData
from sentinel.findings import SEVERITY, Finding, Technique
from sentinel.pipeline.detector import Detector, StreamBatch, register
from sentinel.rules.attack import TECHNIQUES, technique

from .common import direction
from .files import ExtractedFile, FileExtractor

log = logging.getLogger(__name__)

RULESET: Final = "sentinel-yara"
DEFAULT_TECHNIQUE = technique("T0867")  # Lateral Tool Transfer: tooling crossing the network
EXTERNALS = {"sentinel_scope": "", "file_name": ""}
RULE_SUFFIXES = (".yar", ".yara")
MAX_CHUNKS: Final = 256  # (offset, ts, frame) entries kept per stream; merged pairwise beyond
MAX_MATCHED: Final = 64  # stream matches remembered per stream, to avoid re-reporting them in files
# Well-known ports, to name ``network.protocol`` of a stream finding.
PORT_PROTOCOLS = {
    20: "ftp-data",
    21: "ftp",
    69: "tftp",
    80: "http",
    102: "s7comm",
    445: "smb",
    502: "modbus",
    1502: "tristation",
    2404: "iec104",
    20000: "dnp3",
    44818: "enip",
    47808: "bacnet",
    4840: "opcua",
    8080: "http",
}
_LINE = re.compile(r"^(?P<path>.*)\((?P<line>\d+)\): (?P<msg>.*)$", re.DOTALL)
_TECHNIQUE_ID = re.compile(r"^T0\d{3}$")
_new_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__ (hot path)


# ---------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class RuleInfo:
    """What a finding needs to know about a compiled rule (read once, at load)."""

    key: str  # namespace.identifier
    identifier: str
    namespace: str
    rule_id: str
    severity: str
    technique: Technique
    description: str
    reference: str | None
    tags: tuple[str, ...]
    meta: dict[str, Any]


def builtin_rule_files() -> list[Path]:
    """The starter set shipped inside the package (``sentinel.signatures``)."""
    root = resources.files("sentinel.signatures")
    return sorted(
        Path(str(p)) for p in root.iterdir() if p.name.endswith(RULE_SUFFIXES) and p.is_file()
    )


def rule_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Rule files named by ``paths`` (files, or directories of *.yar / *.yara files)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in RULE_SUFFIXES and q.is_file())
            if not found:
                raise RuleError("no *.yar or *.yara files in this directory", Location(str(p)))
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise RuleError("no such YARA rule file or directory", Location(str(p)))
    return out


def _syntax_error(exc: yara.Error, path: Path) -> RuleError:
    text = str(exc)
    m = _LINE.match(text)
    if m is None:
        return RuleError(f"YARA: {text}", Location(str(path)))
    line = int(m.group("line"))
    where = m.group("path")
    if line == 0:  # yara reports an unexpected end of file at line 0
        try:
            line = max(1, len(Path(where).read_text(errors="replace").splitlines()))
        except OSError:
            line = 1
    return RuleError(f"YARA: {m.group('msg')}", Location(where, line))


def _rule_line(path: Path, identifier: str) -> int | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    pattern = rf"^[ \t]*(?:(?:private|global)\s+)*rule\s+{re.escape(identifier)}\b"
    m = re.search(pattern, text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _rule_info(rule: Any, namespace: str, path: Path) -> RuleInfo:
    meta = dict(rule.meta)
    key = f"{namespace}.{rule.identifier}"

    def bad(message: str) -> RuleError:
        where = Location(str(path), _rule_line(path, rule.identifier))
        return RuleError(f"rule {rule.identifier}: {message}", where)

    sid = meta.get("sid")
    if sid is not None and (not isinstance(sid, int) or isinstance(sid, bool) or sid <= 0):
        raise bad(f"meta sid must be a positive integer, not {sid!r}")
    severity = meta.get("severity", "high")
    if severity not in SEVERITY:
        raise bad(f"meta severity must be one of {', '.join(SEVERITY)}, not {severity!r}")
    tid = meta.get("mitre_attack")
    if tid is None:
        tech = DEFAULT_TECHNIQUE
    elif not isinstance(tid, str) or not _TECHNIQUE_ID.match(tid):
        raise bad(f"meta mitre_attack must be an ATT&CK for ICS id like T0843, not {tid!r}")
    else:
        tech = (
            technique(tid)
            if tid in TECHNIQUES
            else Technique(
                tid, str(meta.get("mitre_name", tid)), str(meta.get("mitre_tactic", "unknown"))
            )
        )
    reference = meta.get("reference")
    return RuleInfo(
        key=key,
        identifier=rule.identifier,
        namespace=namespace,
        rule_id=str(sid) if sid is not None else f"yara:{key}",
        severity=severity,
        technique=tech,
        description=str(meta.get("description", rule.identifier)),
        reference=reference if isinstance(reference, str) else None,
        tags=tuple(rule.tags),
        meta=meta,
    )


def compile_rules(files: Sequence[Path]) -> tuple[yara.Rules, dict[str, RuleInfo]]:
    """Compile rule files into one rule set (namespace: the file's stem); the first problem
    (syntax, or metadata the scanner reads) is raised as a ``RuleError`` at file:line."""
    namespaces: dict[str, str] = {}
    infos: dict[str, RuleInfo] = {}
    ids: dict[str, str] = {}
    for path in files:
        try:
            single = yara.compile(filepath=str(path), externals=EXTERNALS)
        except yara.SyntaxError as exc:
            raise _syntax_error(exc, path) from None
        except yara.Error as exc:
            raise RuleError(f"YARA: {exc}", Location(str(path))) from None
        ns = path.stem
        n = 2
        while ns in namespaces:
            ns = f"{path.stem}_{n}"
            n += 1
        namespaces[ns] = str(path)
        for rule in single:
            info = _rule_info(rule, ns, path)
            if info.rule_id in ids:
                raise RuleError(
                    f"rule {rule.identifier}: sid {info.rule_id} is already used by "
                    f"{ids[info.rule_id]}",
                    Location(str(path), _rule_line(path, rule.identifier)),
                )
            ids[info.rule_id] = info.key
            infos[info.key] = info
    try:
        compiled = yara.compile(filepaths=namespaces, externals=EXTERNALS)
    except yara.Error as exc:
        raise _syntax_error(exc, files[0]) from None
    return compiled, infos


# ---------------------------------------------------------------------------- streams
class _Stream:
    """The scan window of one direction of one flow."""

    __slots__ = (
        "base",
        "buf",
        "conn",
        "files",
        "frames",
        "is_orig",
        "last",
        "matched",
        "offs",
        "once",
        "scanned",
        "since",
        "times",
        "udp",
        "uid",
    )

    def __init__(self, uid: str, conn: ConnId, is_orig: bool, udp: bool) -> None:
        self.uid = uid
        self.conn = conn
        self.is_orig = is_orig
        self.udp = udp
        self.buf = bytearray()
        self.base = 0  # stream offset of buf[0]
        self.scanned = 0  # stream offset up to which bytes were scanned
        # The chunk index, three parallel native vectors (``librt.vecs``, as the flow table's
        # batches: no Python object per chunk; at most MAX_CHUNKS entries): stream offset
        # (ascending), ts and frame.
        self.offs = vec[i64]()
        self.times = vec[float]()
        self.frames = vec[i64]()
        self.since: float | None = None  # packet time of the oldest unscanned byte
        self.matched: list[tuple[str, int]] = []  # (rule key, stream offset)
        self.once: set[str] = set()  # string-less rules already reported
        self.last = 0.0  # packet time of the latest chunk (least recently active goes first)
        self.files = False  # the flow may carry files (the extractor follows it)

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def compact(self) -> None:
        """Halve the chunk index: merged neighbours keep the later packet (by then the bytes
        of both had been seen), so a finding's packet is never earlier than its match."""
        n = len(self.offs)
        self.offs = self.offs[0::2]
        times, frames = self.times[1::2], self.frames[1::2]
        if n % 2:
            times = append(times, self.times[n - 1])
            frames = append(frames, self.frames[n - 1])
        self.times, self.frames = times, frames

    def index(self, offset: int, ts: float, frame: int) -> None:
        """Append one chunk to the index (compacting it past MAX_CHUNKS)."""
        self.offs = append(self.offs, offset)
        self.times = append(self.times, ts)
        self.frames = append(self.frames, frame)
        if len(self.offs) > MAX_CHUNKS:
            self.compact()

    def add(self, offsets: vec[i64], times: vec[float], frames: vec[i64]) -> None:
        """Append chunks to the index, compacting exactly as one append at a time would:
        whenever it grows past MAX_CHUNKS."""
        i, n = 0, len(offsets)
        while i < n:
            room = MAX_CHUNKS + 1 - len(self.offs)
            if i == 0 and room >= n:
                self.offs = extend(self.offs, offsets)
                self.times = extend(self.times, times)
                self.frames = extend(self.frames, frames)
            else:
                self.offs = extend(self.offs, offsets[i : i + room])
                self.times = extend(self.times, times[i : i + room])
                self.frames = extend(self.frames, frames[i : i + room])
            i += room
            if len(self.offs) > MAX_CHUNKS:
                self.compact()

    def drop_before(self, offset: int) -> None:
        cut = offset - self.base
        if cut > 0:
            del self.buf[:cut]
            self.base = offset
        i = _bisect_right(self.offs, offset) - 1
        if i > 0:
            self.offs, self.times, self.frames = self.offs[i:], self.times[i:], self.frames[i:]

    def when(self, offset: int) -> tuple[float, int]:
        i = max(0, _bisect_right(self.offs, offset) - 1)
        return self.times[i], self.frames[i]


def _last_active(item: tuple[tuple[str, bool], _Stream]) -> float:
    return item[1].last


def _bisect_right(a: vec[i64], x: i64) -> i64:
    """``bisect.bisect_right`` for a native vector (``bisect`` takes sequences only)."""
    lo: i64 = 0
    hi = len(a)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


class YaraScanner(Detector):
    id = "yara"
    description = "YARA rules over reassembled TCP/UDP payload streams and rebuilt files"

    def __init__(
        self,
        config: Config,
        settings: YaraSettings | None = None,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        builtin: bool | None = None,
    ) -> None:
        super().__init__(config)
        s = settings or detector_settings(config).yara
        self.settings = s
        files: list[Path] = []
        if s.enabled:
            if s.builtin if builtin is None else builtin:
                files += builtin_rule_files()
            files += rule_files(s.rules if paths is None else paths)
        self.files = files
        self.rules: yara.Rules | None = None
        self.infos: dict[str, RuleInfo] = {}
        if files:
            self.rules, self.infos = compile_rules(files)
        self.extractor = FileExtractor(s) if s.extract_files else None
        self._streams: dict[tuple[str, bool], _Stream] = {}
        self._window = s.window_bytes
        # TCP streams are scanned up to this offset per direction (decode.stream_depth; the
        # flow table stops handing chunks over there, except to the file extractor)
        self._depth = config.decode.stream_depth
        # Chunks may reach the scanner as late as bytes wait for their window anyway: a tail
        # is scanned flush_seconds after it arrived either way.
        self.batch_seconds = s.flush_seconds
        # stream matches of a flow that is ending, for its files scanned right after
        self._done: dict[tuple[str, bool], list[tuple[str, int]]] = {}
        self._modbus_ports = frozenset(config.decode.modbus_ports)
        self.errors = 0  # scans that failed (timeouts); logged, never raised

    def subscriptions(self) -> list[str]:
        """Nothing when there is no rule (disabled, or none configured): then the pipeline
        builds no stream events and keeps its fast path."""
        return super().subscriptions() if self.rules is not None else []

    # ------------------------------------------------------------------ events
    def on_stream(self, chunk: StreamData) -> list[Finding] | None:
        # The hot path: every payload chunk of every flow comes through here.
        if self.rules is None:
            return None
        data = chunk.data
        if not data:
            return None
        st = self._streams.get((chunk.uid, chunk.is_orig))
        out: list[Finding] = []
        if st is None:
            st = self._new_stream(chunk, out)
        depth = self._depth
        if depth and chunk.offset + len(data) > depth and not st.udp:
            # Past the stream depth (only a flow the file extractor follows comes this far):
            # the window stops at the depth, the extractor gets every byte.
            if chunk.offset < depth:
                self._window_add(st, data[: depth - chunk.offset], chunk.ts, chunk.frame, out)
            offset = chunk.offset
        else:
            offset = st.end
            self._window_add(st, data, chunk.ts, chunk.frame, out)
        if st.files:
            extractor = self.extractor
            for f in extractor.feed(chunk, offset, st.udp):  # type: ignore[union-attr]
                self._file(f, out)
            st.files = extractor.tracks(chunk.uid)  # type: ignore[union-attr]
        return out

    def _window_add(
        self, st: _Stream, data: bytes, ts: float, frame: int, out: list[Finding]
    ) -> None:
        """``on_stream``'s window steps for one chunk (the file extractor aside)."""
        st.index(st.end, ts, frame)
        st.buf += data
        st.last = ts
        if st.since is None:
            st.since = ts
        window, overlap = self._window, self.settings.overlap_bytes
        if len(st.buf) >= window:
            while len(st.buf) >= window:
                self._scan(st, st.base + window, out)
                st.drop_before(st.base + window - overlap)
            st.since = ts if st.end > st.scanned else None

    def on_stream_batch(self, batch: StreamBatch) -> list[Finding] | None:
        """What the pipeline calls: the chunks of ``on_stream``, several at a time. Each goes
        through exactly the steps of ``on_stream`` (same windows, chunk index and findings),
        without an event object or a call per chunk unless the file extractor follows the
        flow. The pipeline's batches are ``Segments`` (parallel data, appended with C-level
        copies); a list of ``(data, ts, frame)`` is taken too."""
        if self.rules is None:
            return None
        uid, is_orig = batch.uid, batch.is_orig
        key = (uid, is_orig)
        st = self._streams.get(key)
        out: list[Finding] = []
        segments = batch.segments
        if not isinstance(segments, Segments):
            segments = Segments.of(batch.offset, segments)
        for i in range(len(segments.times)):
            if st is not None and not st.files:
                self._extend(st, segments.tail(i) if i else segments, out)
                break
            # a new stream, or one that may carry files: chunk by chunk
            data, ts, frame = segments.chunk(i)
            offset = segments.offs[i]
            chunk = _new_tuple(
                StreamData, (ts, frame, uid, batch.conn, is_orig, data, offset, batch.proto)
            )
            found = self.on_stream(chunk)
            if found:
                out += found
            st = self._streams.get(key)
        return out

    def _extend(self, st: _Stream, segments: Segments, out: list) -> None:
        """``on_stream``'s steps for many chunks at once: their bytes, offsets, times and
        frames are appended as they come (C-level copies); a batch that fills a window is cut
        at each chunk that fills one, which is scanned then."""
        data = segments.data
        if len(st.buf) + len(data) < self._window:  # the common case: no window fills
            st.add(segments.offs, segments.times, segments.frames)
            st.buf += data
            if st.since is None:
                st.since = segments.times[0]
        else:
            self._extend_filling(st, segments, out)
        st.last = segments.times[-1]

    def _extend_filling(self, st: _Stream, segments: Segments, out: list) -> None:
        data, offs, times, frames = segments.data, segments.offs, segments.times, segments.frames
        ends = [o - offs[0] for o in offs[1:]] + [len(data)]  # ends[i]: chunks 0..i together
        window, overlap = self._window, self.settings.overlap_bytes
        i, n = 0, len(ends)
        while i < n:
            done = ends[i - 1] if i else 0
            # the first chunk whose end reaches a full window, or past the last one
            j = bisect.bisect_left(ends, done + window - len(st.buf), i)
            last = min(j, n - 1)
            st.add(offs[i : last + 1], times[i : last + 1], frames[i : last + 1])
            st.buf += data[done : ends[last]]
            if st.since is None:
                st.since = times[i]
            if j < n:  # chunk j filled a window: scan it now, as on_stream does
                while len(st.buf) >= window:
                    self._scan(st, st.base + window, out)
                    st.drop_before(st.base + window - overlap)
                st.since = times[j] if st.end > st.scanned else None
            i = last + 1

    def takes_batches(self, uid: str) -> bool:
        """Batches, except for flows the file extractor follows: FTP and TFTP tie several flows
        together, so their chunks must come in step with the other flows'."""
        return self.extractor is None or not self.extractor.tracks(uid)

    def _new_stream(self, chunk: StreamData, out: list[Finding]) -> _Stream:
        streams = self._streams
        if len(streams) >= self.settings.max_streams:
            self._evict(out)
        st = streams[(chunk.uid, chunk.is_orig)] = _Stream(
            chunk.uid, chunk.conn, chunk.is_orig, chunk.proto == PROTO_UDP
        )
        st.base = st.scanned = chunk.offset  # TCP: bytes before were handed earlier
        st.files = self.extractor is not None
        return st

    def _evict(self, out: list[Finding]) -> None:
        """The table is full: scan out and drop the least recently active eighth of it (at
        least one), so that many new flows cost one sort per eighth of the table instead of
        a search of the whole table each (with 20,000 short connections, that search was
        most of YARA's time)."""
        streams = self._streams
        by_activity = sorted(streams.items(), key=_last_active)
        for key, old in by_activity[: max(1, len(by_activity) // 8)]:
            del streams[key]
            self._flush(old, out)

    def on_tick(self, now: float) -> list[Finding] | None:
        if self.rules is None:
            return None
        out: list[Finding] = []
        if self.live:  # reading a file, tails wait for their window or their flow's end
            limit = self.settings.flush_seconds
            for st in list(self._streams.values()):
                if st.since is not None and now - st.since >= limit:
                    self._flush(st, out)
        if self.extractor is not None:
            self.extractor.expire(now)
        return out

    def on_flow_end(self, flow: dict) -> list[Finding] | None:
        if self.rules is None:
            return None
        uid = flow["uid"]
        out: list[Finding] = []
        for is_orig in (True, False):
            st = self._streams.pop((uid, is_orig), None)
            if st is not None:
                self._flush(st, out)
                self._done[(uid, is_orig)] = st.matched
        if self.extractor is not None:
            for f in self.extractor.flow_end(uid):
                self._file(f, out)
        self._done.clear()
        return out

    # ------------------------------------------------------------------ scanning
    def _flush(self, st: _Stream, out: list[Finding]) -> None:
        if st.end > st.scanned:
            self._scan(st, st.end, out)
        st.drop_before(max(st.base, st.end - self.settings.overlap_bytes))
        st.since = None

    def _match(self, data: bytes, scope: str, name: str) -> list[Any]:
        try:
            return self.rules.match(  # type: ignore[union-attr]
                data=data,
                externals={"sentinel_scope": scope, "file_name": name},
                timeout=self.settings.scan_timeout,
            )
        except yara.Error as exc:  # timeout or internal limit: hostile input never raises
            self.errors += 1
            log.warning("YARA scan of %d bytes failed: %s", len(data), exc)
            return []

    def _scan(self, st: _Stream, end: int, out: list[Finding]) -> None:
        base = st.base
        new_from = st.scanned
        data = bytes(st.buf[: end - base])
        st.scanned = end
        for m in self._match(data, "stream", ""):
            info = self.infos.get(f"{m.namespace}.{m.rule}")
            if info is None:
                continue
            hits = [
                (base + i.offset, i.matched_length, s.identifier)
                for s in m.strings
                for i in s.instances
            ]
            if hits:
                fresh = [h for h in hits if h[0] + h[1] > new_from]
                if not fresh:
                    continue  # reported when the previous window saw it
                first = min(fresh)
                offset, last_byte = first[0], first[0] + max(first[1], 1) - 1
            else:
                if info.key in st.once:
                    continue
                st.once.add(info.key)
                offset = last_byte = max(new_from, base)
            if len(st.matched) < MAX_MATCHED:
                st.matched.append((info.key, offset))
            ts, frame = st.when(last_byte)
            evidence = {
                "yara": self._yara_evidence(info, m, hits),
                "scope": "stream",
                "direction": direction(st.is_orig),
                "stream_offset": offset,
                "window": [base, end],
            }
            out.append(
                self._finding(
                    info,
                    st.uid,
                    st.conn,
                    ts,
                    frame,
                    st.udp,
                    evidence,
                    f"in the {direction(st.is_orig)} stream at offset {offset}",
                )
            )

    def _file(self, f: ExtractedFile, out: list[Finding]) -> None:
        st = self._streams.get((f.uid, f.is_orig))
        if st is not None:
            self._flush(st, out)  # scan the file's bytes as stream first, then skip repeats
            seen = st.matched
        else:
            seen = self._done.get((f.uid, f.is_orig), [])
        already = {k for k, off in seen if f.start_offset <= off < f.end_offset}
        for m in self._match(f.data, "file", f.name or ""):
            info = self.infos.get(f"{m.namespace}.{m.rule}")
            if info is None or info.key in already:
                continue
            hits = [
                (i.offset, i.matched_length, s.identifier) for s in m.strings for i in s.instances
            ]
            evidence = {
                "yara": self._yara_evidence(info, m, hits),
                "scope": "file",
                "direction": direction(f.is_orig),
                "stream_offset": f.start_offset,
                "file": {
                    "name": f.name,
                    "protocol": f.protocol,
                    "size": f.size,
                    "scanned_bytes": len(f.data),
                    "truncated": f.truncated,
                    "sha256": f.sha256,
                    "match_offset": min(hits)[0] if hits else None,
                    **f.detail,
                },
            }
            label = f"file {f.name!r}" if f.name else "a file"
            out.append(
                self._finding(
                    info,
                    f.uid,
                    f.conn,
                    f.ts,
                    f.frame,
                    f.transport == "udp",
                    evidence,
                    f"in {label} carried by {f.protocol.upper()}",
                )
            )

    # ------------------------------------------------------------------ findings
    @staticmethod
    def _yara_evidence(info: RuleInfo, m: Any, hits: list[tuple[int, int, str]]) -> dict:
        return {
            "rule": info.identifier,
            "namespace": info.namespace,
            "tags": list(info.tags),
            "meta": info.meta,
            "strings": sorted({h[2] for h in hits}),
            "matches": len(hits),
        }

    def _finding(
        self,
        info: RuleInfo,
        uid: str,
        conn: ConnId,
        ts: float,
        frame: int,
        udp: bool,
        evidence: dict,
        where: str,
    ) -> Finding:
        port = conn.resp_p
        protocol = "modbus" if port in self._modbus_ports else PORT_PROTOCOLS.get(port, "unknown")
        if evidence.get("file"):
            protocol = evidence["file"]["protocol"]
        return Finding(
            ts=ts,
            rule_id=info.rule_id,
            rule_name=info.identifier,
            ruleset=RULESET,
            severity=info.severity,
            technique=info.technique,
            message=f"YARA {info.identifier}: {info.description} ({where})",
            detector=self.id,
            conn=conn,
            uid=uid,
            transport="udp" if udp else "tcp",
            protocol=protocol,
            dataset="sentinel.yara",
            frame=frame,
            evidence=evidence,
            reference=info.reference,
        )


# Registered by a call, not with the decorator: a decorated class is not compiled as a
# native class (docs/native.md).
register(YaraScanner)
