"""The flow table and TCP reassembly.

Flows are keyed by 5-tuple, oriented like Zeek's connections (orig = the TCP client), bounded
in number (least recently active flow evicted first, counted) and expired on idle timeouts of
packet time. Each TCP direction is reassembled into a byte stream for the flow's application
analyzer: in-order data is handed over at once; out-of-order segments wait in a bounded buffer;
retransmissions are dropped and overlaps trimmed (first copy wins); a hole that the peer has
acknowledged, that overflows the buffer, or that remains when the flow ends is a *gap*: the
analyzer is told so it can drop its partial state, and the missed bytes are counted.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

from librt.strings import BytesWriter
from librt.vecs import append, vec
from mypy_extensions import i64

from sentinel.decode.packet import (
    PROTO_TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Decoded,
)
from sentinel.events import ConnId

SEQ_MASK: Final = 0xFFFFFFFF
SEQ_HALF: Final = 0x80000000
BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Zeek's history letters; upper case is the originator, lower case the responder.
H_SYN: Final = 1
H_SYNACK: Final = 2
H_ACK: Final = 4
H_DATA: Final = 8
H_FIN: Final = 16
H_RST: Final = 32
_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R")  # Zeek: SYN, then RST before any answer
HISTORY_LETTERS = {H_SYN: "S", H_SYNACK: "H", H_ACK: "A", H_DATA: "D", H_FIN: "F", H_RST: "R"}


class AppAnalyzer(Protocol):
    """What the flow table needs from an application-layer analyzer."""

    service: str | None

    def feed(self, is_orig: bool, data: bytes, ts: float, frame: int) -> None: ...

    def gap(self, is_orig: bool, ts: float, frame: int) -> None: ...

    def finish(self, ts: float) -> None: ...


class Segments:
    """In-order chunks of one flow direction, batched for the batch hook. They are kept as
    parallel data rather than an object per chunk: their bytes joined (``data``), and each
    chunk's stream offset, packet time and frame in three native vectors (``librt.vecs``:
    C arrays of i64 and double in the compiled flow table, docs/native.md). Iterating gives
    the chunks as ``(data, ts, frame)``.

    While a batch fills, its chunks' bytes are copied into ``buf`` (a ``librt.strings``
    ``BytesWriter``) and their offset, time and frame into ``pending``, one vector of
    three doubles per chunk; ``seal()`` moves them into ``data`` and the three vectors at
    hand-over. So a batch holds no Python object per chunk: a chunk's bytes object is freed
    with its packet. Keeping one (the bytes, and a boxed offset, time and frame, in lists)
    until hand-over cost more than everything else batching does: a detector that takes
    batches and does nothing with them added about 10 % to the benchmark's decoding, the
    decoder's own short-lived allocations getting slower among the kept ones
    (docs/detectors.md, round 7). One vector rather than three while filling: a direction's
    batch is touched once per chunk, long after its previous chunk, so each vector's head
    and tail are memory locations to reach again (round 10). Offsets and frames are exact
    as doubles (below 2**53)."""

    __slots__ = ("buf", "data", "frames", "offs", "pending", "times")

    def __init__(self, data: bytes = b"") -> None:
        self.data = data  # the chunks' bytes (after ``seal()``)
        self.buf = BytesWriter()  # chunks' bytes not yet in data
        self.pending = vec[float]()  # offset, ts, frame of chunks not yet in the vectors
        self.offs = vec[i64]()  # stream offset of each chunk's first byte
        self.times = vec[float]()
        self.frames = vec[i64]()

    @classmethod
    def one(cls, data: bytes, offset: int, ts: float, frame: int) -> Segments:
        """A batch of a single chunk (its bytes are not copied)."""
        seg = cls(data)
        seg.offs = append(seg.offs, offset)
        seg.times = append(seg.times, ts)
        seg.frames = append(seg.frames, frame)
        return seg

    @classmethod
    def of(cls, offset: int, chunks: Iterable[tuple[bytes, float, int]]) -> Segments:
        """From ``(data, ts, frame)`` chunks from stream offset ``offset`` on (empty ones, which
        add nothing to the stream, are left out)."""
        seg = cls()
        for data, ts, frame in chunks:
            if data:
                seg.add(data, offset, ts, frame)
                offset += len(data)
        seg.seal()
        return seg

    def add(self, data: bytes, offset: int, ts: float, frame: int) -> None:
        """Append a chunk (it reaches ``data`` and the vectors at ``seal()``)."""
        self.buf.write(data)
        pending = append(self.pending, float(offset))
        pending = append(pending, ts)
        self.pending = append(pending, float(frame))

    def seal(self) -> None:
        """Move the added chunks into ``data`` and the vectors."""
        buf = self.buf
        if len(buf):
            self.data = self.data + buf.getvalue() if self.data else buf.getvalue()
            buf.truncate(0)
        pending = self.pending
        n = len(pending)
        if n:
            offs, times, frames = self.offs, self.times, self.frames
            i: i64 = 0
            while i < n:
                offs = append(offs, i64(pending[i]))
                times = append(times, pending[i + 1])
                frames = append(frames, i64(pending[i + 2]))
                i += 3
            self.offs, self.times, self.frames = offs, times, frames
            self.pending = vec[float]()

    @property
    def first_ts(self) -> float:
        """The packet time of the first chunk."""
        return self.times[0] if len(self.times) else self.pending[1]

    def __len__(self) -> int:
        return len(self.times) + len(self.pending) // 3

    def chunk(self, i: int) -> tuple[bytes, float, int]:
        offs = self.offs
        start = offs[i] - offs[0]
        data = self.data
        end = offs[i + 1] - offs[0] if i + 1 < len(offs) else len(data)
        if start or end < len(data):
            data = data[start:end]
        return data, self.times[i], self.frames[i]

    def __iter__(self) -> Iterator[tuple[bytes, float, int]]:
        return map(self.chunk, range(len(self.times)))

    def tail(self, i: int) -> Segments:
        """The chunks from the i-th on."""
        seg = Segments(self.data[self.offs[i] - self.offs[0] :])
        seg.offs, seg.times, seg.frames = self.offs[i:], self.times[i:], self.frames[i:]
        return seg


class TCPStream:
    """Reassembly state of one direction of a TCP connection."""

    __slots__ = ("isn", "next_seq", "pending", "pending_bytes")

    def __init__(self) -> None:
        self.isn: int | None = None
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] = {}
        self.pending_bytes = 0


class Flow:
    """One connection (TCP) or one address/port pair (UDP)."""

    __slots__ = (
        "analyzer",
        "batch",
        "batching",
        "conn",
        "first_ts",
        "flags",
        "frame",
        "hist_bits",
        "history",
        "inspect",
        "key",
        "last_frame",
        "last_ts",
        "missed_bytes",
        "orig_bytes",
        "orig_ip_bytes",
        "orig_pkts",
        "proto",
        "resp_bytes",
        "resp_ip_bytes",
        "resp_pkts",
        "stream_hooks",
        "stream_offsets",
        "streams",
        "uid",
    )

    def __init__(self, uid: str, conn: ConnId, proto: int, ts: float, frame: int) -> None:
        self.uid = uid
        self.conn = conn
        self.proto = proto
        self.first_ts = ts
        self.last_ts = ts
        self.frame = self.last_frame = frame
        self.orig_pkts = self.resp_pkts = 0
        self.orig_bytes = self.resp_bytes = 0
        self.orig_ip_bytes = self.resp_ip_bytes = 0
        self.missed_bytes = 0
        self.hist_bits = [0, 0]  # [responder, originator]
        self.history = ""
        self.flags = [0, 0]  # TCP flags seen, per direction
        self.streams = (TCPStream(), TCPStream())  # [responder, originator]
        self.stream_offsets = [0, 0]  # bytes handed to the analyzer, per direction
        self.stream_hooks: list[StreamHook | FilteredHook | None] = [None, None]  # per direction
        # Whether a direction's chunks still go to the stream consumers (the stream and batch
        # hooks): False when there is none, or beyond the stream depth.
        self.inspect = [False, False]
        self.analyzer: AppAnalyzer | None = None
        # In-order payload waiting for the batch hook, per direction.
        self.batch: list[Segments | None] = [None, None]
        self.batching = False  # whether the batch hook accepted to get this flow late
        self.key: tuple = ()  # the flow table's key, oriented orig -> resp

    def mark(self, is_orig: bool, bit: int) -> None:
        if not self.hist_bits[is_orig] & bit:
            self.hist_bits[is_orig] |= bit
            letter = HISTORY_LETTERS[bit]
            self.history += letter if is_orig else letter.lower()

    @property
    def established(self) -> bool:
        """TCP: the handshake was seen (or, mid-stream, both sides sent); UDP: both sides."""
        if self.proto == PROTO_TCP and (self.hist_bits[1] & H_SYN or self.hist_bits[0] & H_SYN):
            return bool(self.hist_bits[1] & H_SYN and self.hist_bits[0] & H_SYNACK)
        return bool(self.orig_pkts and self.resp_pkts)

    @property
    def closed(self) -> bool:
        """Both sides sent FIN, or either sent RST."""
        o, r = self.flags[1], self.flags[0]
        return bool((o & TCP_RST) or (r & TCP_RST) or ((o & TCP_FIN) and (r & TCP_FIN)))

    def endpoint_state(self, is_orig: bool) -> str:
        """Zeek's TCP endpoint state at the end, derived from what the endpoint sent."""
        own, peer = self.hist_bits[is_orig], self.hist_bits[not is_orig]
        flags = self.flags[is_orig]
        if flags & TCP_RST:
            return "RESET"
        if flags & TCP_FIN:
            return "CLOSED"
        if own & (H_SYN | H_SYNACK):
            if own & (H_ACK | H_DATA) and peer & (H_SYN | H_SYNACK):
                return "ESTABLISHED"
            if own & H_SYNACK and peer & (H_ACK | H_DATA | H_FIN):
                return "ESTABLISHED"  # its SYN-ACK was acknowledged
            return "SYN_ACK_SENT" if own & H_SYNACK else "SYN_SENT"
        return "PARTIAL" if own else "INACTIVE"

    def conn_state(self) -> str:
        """Zeek's ``conn_state`` (the function of Zeek's base/protocols/conn/main.zeek)."""
        if self.proto != PROTO_TCP:
            if self.orig_pkts:
                return "SF" if self.resp_pkts else "S0"
            return "SHR" if self.resp_pkts else "OTH"
        os, rs = self.endpoint_state(True), self.endpoint_state(False)
        o_inactive = os in ("INACTIVE", "PARTIAL")
        r_inactive = rs in ("INACTIVE", "PARTIAL")
        if rs == "RESET":
            if os in ("SYN_SENT", "SYN_ACK_SENT") or (
                os == "RESET" and not self.orig_bytes and not self.resp_bytes
            ):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if os == "RESET":
            if r_inactive:
                return "RSTOS0" if _RSTOS0.match(self.history) else "OTH"
            return "RSTO"
        if rs == "CLOSED" and os == "CLOSED":
            return "SF"
        if os == "CLOSED":
            return "SH" if r_inactive else "S2"
        if rs == "CLOSED":
            return "SHR" if o_inactive else "S3"
        if os == "SYN_SENT" and rs == "INACTIVE":
            return "S0"
        if os == "ESTABLISHED" and rs == "ESTABLISHED":
            return "S1"
        return "OTH"

    def record(self) -> dict:
        """The flows.jsonl record (fields named like Zeek's conn.log)."""
        c = self.conn
        return {
            "ts": self.first_ts,
            "uid": self.uid,
            "orig_h": c.orig_h,
            "orig_p": c.orig_p,
            "resp_h": c.resp_h,
            "resp_p": c.resp_p,
            "proto": "tcp" if self.proto == PROTO_TCP else "udp",
            "service": self.analyzer.service if self.analyzer else None,
            "last_ts": self.last_ts,
            "duration": round(self.last_ts - self.first_ts, 6),
            "orig_pkts": self.orig_pkts,
            "orig_bytes": self.orig_bytes,
            "orig_ip_bytes": self.orig_ip_bytes,
            "resp_pkts": self.resp_pkts,
            "resp_bytes": self.resp_bytes,
            "resp_ip_bytes": self.resp_ip_bytes,
            "conn_state": self.conn_state(),
            "history": self.history,
            "missed_bytes": self.missed_bytes,
        }


AnalyzerFactory = Callable[[Flow, bytes | None], "AppAnalyzer | None"]
StreamHook = Callable[[Flow, bool, bytes, float, int], None]
# (min_size, ((offset, values), ...)): one alternative of a ``FilteredHook``
GateAlternative = tuple[int, tuple[tuple[int, frozenset[int]], ...]]


def _byte_table(values: frozenset[int]) -> bytes:
    """``values`` as 256 bytes, 1 where the byte value is one of them."""
    return bytes(v in values for v in range(256))


class FilteredHook:
    """A stream hook behind a byte filter that the flow table checks before calling it, so a
    chunk that does not pass costs no call: ``hook`` gets the chunks that pass one of
    ``alternatives``, as a detector's ``StreamGate`` defines them (``sentinel.pipeline.
    detector``, whose gates the pipeline makes one of)."""

    def __init__(self, hook: StreamHook, alternatives: Iterable[GateAlternative]) -> None:
        self.hook = hook
        # Each condition's values as a 256-byte table (1: allowed), checked per chunk with
        # two byte reads instead of an int object hashed into a set. Built once per distinct
        # gate: the pipeline shares a hook between the flow directions that have its gate.
        self.checks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...] = tuple(
            (size, tuple((at, _byte_table(values)) for at, values in conds))
            for size, conds in alternatives
        )

    def passes(self, data: bytes) -> bool:
        n = len(data)
        for size, conditions in self.checks:
            if n >= size:  # first: every condition's offset is below the size
                for at, allowed in conditions:
                    if not allowed[data[at]]:
                        break
                else:
                    return True
        return False


class FlowTable:
    """5-tuple -> Flow, with TCP reassembly, idle timeouts and bounded size.

    ``choose_analyzer(flow, first_payload)`` is asked once per flow when it is created (with
    ``None``) and, while it has no analyzer, with the flow's first payload (content detection).
    ``on_flow_end(flow)`` is called exactly once per flow. The optional hooks see every
    packet (``packet_hook(flow, is_orig, ts, frame, decoded)``) and every in-order stream chunk
    (``stream_hook(flow, is_orig, data, ts, frame)``); they are for detectors that need bytes.
    Neither leaves the in-order fast path: a hook is one more call per packet or chunk.
    ``stream_router(flow, is_orig)``, when set, is asked at the first chunk of each direction
    which stream hook that direction gets (None: none at all; a ``FilteredHook``: the chunks
    that pass its byte filter), so a consumer that needs only
    some chunks of some flows can say so once per direction instead of being called per chunk.

    ``batch_hook(flow, is_orig, offset, segments) -> bool`` receives the same in-order chunks
    in batches, ``segments`` a ``Segments`` (it iterates as ``(data, ts, frame)`` and holds
    the chunks as parallel data) and ``offset`` the stream offset of the first byte: for
    consumers that buffer bytes anyway (YARA), one call per batch instead of one per chunk,
    and no object per chunk. A flow's chunks are handed over one by one, at once, until
    the hook returns True (it may take this flow's chunks late; YARA says so once a flow is
    known to carry no file, whose extraction needs chunks in step with other flows); then a
    direction's batch is handed over when it holds ``batch_segments`` chunks, when its first
    chunk is ``batch_seconds`` old at ``flush_batches(now)`` (the pipeline's once-a-second
    tick, so live latency stays bounded), every batch when ``batch_bytes`` bytes were batched
    since they were last all handed over, and before the flow ends (before its analyzer's
    ``finish`` and ``on_flow_end``).
    """

    packet_hook: Callable[[Flow, bool, float, int, Decoded], None] | None = None
    # Maps each address as text before any event carries it (privacy: pseudonymization).
    address_mapper: Callable[[str], str] | None = None
    stream_hook: StreamHook | None = None
    stream_router: Callable[[Flow, bool], StreamHook | FilteredHook | None] | None = None
    batch_hook: Callable[[Flow, bool, int, Segments], bool] | None = None
    batch_segments = 128  # chunks per direction before its batch is handed over
    batch_seconds = 1.0  # packet time a batch may wait (``flush_batches(now)``)
    # Bytes batched since all batches were last handed over at once, before they all are:
    # a bound on what the batches hold.
    batch_bytes = 16_777_216  # 16 MiB (a literal: mypyc takes no expression as a default)
    # Content inspection depth per TCP direction (Suricata's ``stream.reassembly.depth``): the
    # stream and batch hooks get a direction's first ``stream_depth`` bytes only; 0: all.
    # The analyzer (the Modbus decoder) always gets every byte.
    stream_depth = 0

    def __init__(
        self,
        choose_analyzer: AnalyzerFactory,
        on_flow_end: Callable[[Flow], None],
        server_ports: frozenset[int] = frozenset({502}),
        max_flows: int = 65536,
        tcp_timeout: float = 300.0,
        udp_timeout: float = 60.0,
        closed_timeout: float = 5.0,
        max_stream_buffer: int = 65536,
    ) -> None:
        self.choose_analyzer = choose_analyzer
        self.on_flow_end = on_flow_end
        self.server_ports = server_ports
        self.max_flows = max_flows
        self.tcp_timeout = tcp_timeout
        self.udp_timeout = udp_timeout
        self.closed_timeout = closed_timeout
        self.max_stream_buffer = max_stream_buffer
        self.index: dict[tuple, tuple[Flow, bool]] = {}
        self.lru: OrderedDict[str, Flow] = OrderedDict()
        self.stats: Counter[str] = Counter()
        self._next_expiry = 0.0
        self._created = 0
        self._batched: dict[str, Flow] = {}  # flows that may hold a batch (uid -> flow)
        self._batched_bytes = 0

    # ------------------------------------------------------------------ per packet
    def process(self, ts: float, frame: int, d: Decoded) -> None:
        proto, src, sport, dst, dport, flags, seq, ack, payload, ip_bytes = d
        entry = self.index.get((src, sport, dst, dport, proto))
        if entry is None:
            flow, is_orig = self._create(ts, frame, d)
        else:
            flow, is_orig = entry
            if proto == PROTO_TCP and self._starts_new_connection(
                flow, is_orig, flags, seq, payload
            ):
                self._end(flow)
                flow, is_orig = self._create(ts, frame, d)
            self.lru.move_to_end(flow.uid)
        if ts > flow.last_ts:
            flow.last_ts = ts
        flow.last_frame = frame
        if self.packet_hook is not None:
            self.packet_hook(flow, is_orig, ts, frame, d)
        if is_orig:
            flow.orig_pkts += 1
            flow.orig_ip_bytes += ip_bytes
            flow.orig_bytes += len(payload)
        else:
            flow.resp_pkts += 1
            flow.resp_ip_bytes += ip_bytes
            flow.resp_bytes += len(payload)

        if proto == PROTO_TCP:
            if flags & (TCP_SYN | TCP_FIN | TCP_RST):
                self._control(flow, is_orig, flags, seq)
            if payload:
                if not flow.hist_bits[is_orig] & H_DATA:
                    flow.mark(is_orig, H_DATA)
                stream = flow.streams[is_orig]
                nxt = stream.next_seq
                analyzer = flow.analyzer
                if seq == nxt and not stream.pending and analyzer is not None:
                    # The hot path: in-order data on a flow with an analyzer.
                    stream.next_seq = (nxt + len(payload)) & SEQ_MASK
                    if flow.inspect[is_orig]:
                        depth = self.stream_depth
                        if depth and flow.stream_offsets[is_orig] + len(payload) > depth:
                            self._at_depth(flow, is_orig, payload, ts, frame)
                        else:
                            hook = flow.stream_hooks[is_orig]
                            if hook is not None:
                                self._call(hook, flow, is_orig, payload, ts, frame)
                            if self.batch_hook is not None:
                                batch = flow.batch[is_orig]
                                if batch is None or len(batch.pending) >= 3 * self.batch_segments:
                                    self._batch(flow, is_orig, payload, ts, frame)
                                else:  # Segments.add, inline
                                    batch.buf.write(payload)
                                    pending = append(
                                        batch.pending, float(flow.stream_offsets[is_orig])
                                    )
                                    pending = append(pending, ts)
                                    batch.pending = append(pending, float(frame))
                                    self._batched_bytes += len(payload)
                                    if self._batched_bytes >= self.batch_bytes:
                                        self.flush_batches()
                    flow.stream_offsets[is_orig] += len(payload)
                    analyzer.feed(is_orig, payload, ts, frame)
                else:
                    self._tcp_data(flow, is_orig, seq, payload, ts, frame)
            elif flags == TCP_ACK and not flow.hist_bits[is_orig] & H_ACK:
                flow.mark(is_orig, H_ACK)
            if flags & TCP_ACK:
                peer = flow.streams[not is_orig]
                if peer.pending and peer.next_seq is not None:
                    ahead = (ack - peer.next_seq) & SEQ_MASK
                    if 0 < ahead < SEQ_HALF:
                        # The peer acknowledged bytes the capture never showed: a gap.
                        self._skip_gap(flow, not is_orig, ts, frame, ack)
        elif payload:
            hook = flow.stream_hooks[is_orig]
            if hook is not None:
                self._call(hook, flow, is_orig, payload, ts, frame)
            if self.batch_hook is not None:
                self._batch(flow, is_orig, payload, ts, frame)
            flow.stream_offsets[is_orig] += len(payload)
            analyzer = flow.analyzer
            if analyzer is None:
                analyzer = flow.analyzer = self.choose_analyzer(flow, payload)
            if analyzer is not None:
                analyzer.feed(is_orig, payload, ts, frame)

        if ts >= self._next_expiry:
            self.expire(ts)

    # ------------------------------------------------------------------ TCP
    @staticmethod
    def _starts_new_connection(
        flow: Flow, is_orig: bool, flags: int, seq: int, payload: bytes
    ) -> bool:
        """The 5-tuple is reused: a SYN with a new ISN on a used connection, or data or a SYN
        after a reset (as Zeek splits them)."""
        if (flow.flags[0] | flow.flags[1]) & TCP_RST:
            return bool(payload or flags & TCP_SYN) and not flags & TCP_RST
        if flags & TCP_SYN and not flags & TCP_ACK and is_orig:
            stream = flow.streams[1]
            return (
                stream.isn is not None
                and seq != stream.isn
                and bool(flow.closed or flow.hist_bits[1] & H_DATA)
            )
        return False

    def _control(self, flow: Flow, is_orig: bool, flags: int, seq: int) -> None:
        flow.flags[is_orig] |= flags
        if flags & TCP_SYN:
            flow.mark(is_orig, H_SYNACK if flags & TCP_ACK else H_SYN)
            stream = flow.streams[is_orig]
            if stream.isn is None:
                stream.isn = seq
                stream.next_seq = (seq + 1) & SEQ_MASK
        if flags & TCP_FIN:
            flow.mark(is_orig, H_FIN)
        if flags & TCP_RST:
            flow.mark(is_orig, H_RST)

    def _tcp_data(
        self, flow: Flow, is_orig: bool, seq: int, payload: bytes, ts: float, frame: int
    ) -> None:
        stream = flow.streams[is_orig]
        nxt = stream.next_seq
        if nxt is None:  # no SYN seen: the capture started mid-connection
            nxt = stream.next_seq = seq
            self.stats["tcp.midstream"] += 1
        rel = (seq - nxt) & SEQ_MASK
        if rel == 0:
            stream.next_seq = (nxt + len(payload)) & SEQ_MASK
            self._deliver(flow, is_orig, payload, ts, frame)
            if stream.pending:
                self._drain(flow, is_orig, stream, ts, frame)
        elif rel >= SEQ_HALF:  # starts before what we have: retransmission or overlap
            behind = 0x100000000 - rel
            if behind > self.max_stream_buffer:
                self._jump(flow, is_orig, seq, payload, ts, frame)
                return
            if behind >= len(payload):
                self.stats["tcp.retransmissions"] += 1
                return
            self.stats["tcp.overlaps"] += 1
            stream.next_seq = (nxt + len(payload) - behind) & SEQ_MASK
            self._deliver(flow, is_orig, payload[behind:], ts, frame)
            if stream.pending:
                self._drain(flow, is_orig, stream, ts, frame)
        elif rel > self.max_stream_buffer:
            self._jump(flow, is_orig, seq, payload, ts, frame)
        else:  # a hole before this segment: keep it until the hole fills or is a gap
            self.stats["tcp.out_of_order"] += 1
            if seq in stream.pending:
                if len(payload) <= len(stream.pending[seq]):
                    return
                stream.pending_bytes -= len(stream.pending[seq])
            stream.pending[seq] = payload
            stream.pending_bytes += len(payload)
            if stream.pending_bytes > self.max_stream_buffer or len(stream.pending) > 256:
                self.stats["tcp.buffer_overflows"] += 1
                self._skip_gap(flow, is_orig, ts, frame)

    def _drain(self, flow: Flow, is_orig: bool, stream: TCPStream, ts: float, frame: int) -> None:
        pending = stream.pending
        while pending:
            nxt = stream.next_seq
            data = pending.pop(nxt, None)  # type: ignore[arg-type]
            if data is None:
                # A segment that starts before next_seq but reaches past it (overlap)?
                for seq in list(pending):
                    rel = (seq - nxt) & SEQ_MASK  # type: ignore[operator]
                    if rel >= SEQ_HALF:
                        seg = pending.pop(seq)
                        stream.pending_bytes -= len(seg)
                        behind = 0x100000000 - rel
                        if behind < len(seg):
                            data = seg[behind:]
                            break
                if data is None:
                    return
            else:
                stream.pending_bytes -= len(data)
            stream.next_seq = (nxt + len(data)) & SEQ_MASK  # type: ignore[operator]
            self._deliver(flow, is_orig, data, ts, frame)

    def _jump(
        self, flow: Flow, is_orig: bool, seq: int, payload: bytes, ts: float, frame: int
    ) -> None:
        """A sequence number further from the stream than any window we buffer: neither a
        retransmission nor reordering but a discontinuity (fuzzed or spliced traffic, or a
        capture that lost much). Flush what is buffered, then restart the stream at this
        segment, as a gap."""
        stream = flow.streams[is_orig]
        self.stats["tcp.seq_jumps"] += 1
        while stream.pending:  # what was buffered in the old sequence space goes first
            self._skip_gap(flow, is_orig, ts, frame)
        if flow.analyzer is not None:
            flow.analyzer.gap(is_orig, ts, frame)
        stream.next_seq = (seq + len(payload)) & SEQ_MASK
        self._deliver(flow, is_orig, payload, ts, frame)

    def _skip_gap(
        self, flow: Flow, is_orig: bool, ts: float, frame: int, acked: int | None = None
    ) -> None:
        """Jump over a hole: to the earliest buffered segment, or to the peer's ACK if sooner.

        Unlike Zeek, which resumes at the acknowledged sequence number and so drops segments
        captured between the hole and the ACK, buffered segments are kept: they were sent,
        and Modbus framing restarts cleanly at a segment boundary. Stopping at the ACK keeps a
        bogus far-ahead sequence number (fuzzed traffic) from swallowing the stream.
        """
        stream = flow.streams[is_orig]
        if not stream.pending or stream.next_seq is None:
            return
        nxt = stream.next_seq
        target = min(stream.pending, key=lambda s: (s - nxt) & SEQ_MASK)
        if acked is not None and (acked - nxt) & SEQ_MASK < (target - nxt) & SEQ_MASK:
            target = acked
        missed = (target - nxt) & SEQ_MASK
        if missed >= SEQ_HALF:
            missed = 0
        flow.missed_bytes += missed
        self.stats["tcp.gaps"] += 1
        stream.next_seq = target
        if flow.analyzer is not None:
            flow.analyzer.gap(is_orig, ts, frame)
        self._drain(flow, is_orig, stream, ts, frame)

    def _deliver(self, flow: Flow, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
        if flow.inspect[is_orig]:
            depth = self.stream_depth
            if depth and flow.stream_offsets[is_orig] + len(data) > depth:
                self._at_depth(flow, is_orig, data, ts, frame)
            else:
                hook = flow.stream_hooks[is_orig]
                if hook is not None:
                    self._call(hook, flow, is_orig, data, ts, frame)
                if self.batch_hook is not None:
                    self._batch(flow, is_orig, data, ts, frame)
        flow.stream_offsets[is_orig] += len(data)
        analyzer = flow.analyzer
        if analyzer is None:
            if flow.hist_bits[0] & H_DATA and flow.hist_bits[1] & H_DATA:
                return  # content detection looks at the first payload only
            analyzer = flow.analyzer = self.choose_analyzer(flow, data)
            if analyzer is None:
                return
        analyzer.feed(is_orig, data, ts, frame)

    def _at_depth(self, flow: Flow, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
        """A TCP chunk that reaches past the stream depth: the stream consumers get its bytes
        up to the depth, then the direction's stream hook is dropped and it leaves the batch
        hook, counted once (``tcp.stream_depth_reached``). A flow whose batch consumer takes
        its chunks one by one (file extraction follows it) keeps getting them whole, beyond
        the depth, until the consumer accepts batches: the depth bounds content inspection,
        not file extraction, and that consumer applies the depth to its own scanning."""
        offset = flow.stream_offsets[is_orig]
        room = self.stream_depth - offset
        if room >= 0:  # this chunk crosses the depth (an earlier one ended at most on it)
            self.stats["tcp.stream_depth_reached"] += 1
            hook = flow.stream_hooks[is_orig]
            if room and hook is not None:
                self._call(hook, flow, is_orig, data[:room], ts, frame)
            flow.stream_hooks[is_orig] = None  # after: the router sets it at a first chunk
        if self.batch_hook is None:
            flow.inspect[is_orig] = False
            return
        if not flow.batching:
            self._batch(flow, is_orig, data, ts, frame)  # whole: see above
            if not flow.batching:
                return
        elif room > 0:
            self._batch(flow, is_orig, data[:room], ts, frame)
        flow.inspect[is_orig] = False

    def _route(self, flow: Flow, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
        """The stream hook of a direction before its first chunk: ask the router, once."""
        hook = flow.stream_hooks[is_orig] = self.stream_router(flow, is_orig)  # type: ignore[misc]
        if hook is not None:
            self._call(hook, flow, is_orig, data, ts, frame)

    @staticmethod
    def _call(
        hook: StreamHook | FilteredHook,
        flow: Flow,
        is_orig: bool,
        data: bytes,
        ts: float,
        frame: int,
    ) -> None:
        """A chunk to a direction's stream hook (if it passes the hook's filter)."""
        if isinstance(hook, FilteredHook):
            if hook.passes(data):
                hook.hook(flow, is_orig, data, ts, frame)
        else:
            hook(flow, is_orig, data, ts, frame)

    # ------------------------------------------------------------------ batches
    def _batch(self, flow: Flow, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
        """Add an in-order chunk (not yet counted in ``stream_offsets``) to its batch."""
        offset = flow.stream_offsets[is_orig]
        if not flow.batching:  # at once, until the hook accepts batches for this flow
            flow.batching = self.batch_hook(  # type: ignore[misc]
                flow, is_orig, offset, Segments.one(data, offset, ts, frame)
            )
            return
        batch = flow.batch[is_orig]
        if batch is not None and len(batch) >= self.batch_segments:
            self._hand_over(flow, is_orig)
            batch = None
        if batch is None:
            batch = flow.batch[is_orig] = Segments()
            self._batched[flow.uid] = flow
        batch.add(data, offset, ts, frame)
        self._batched_bytes += len(data)
        if self._batched_bytes >= self.batch_bytes:
            self.flush_batches()

    def _hand_over(self, flow: Flow, is_orig: bool) -> None:
        batch = flow.batch[is_orig]
        if batch is None:
            return
        flow.batch[is_orig] = None
        if self.batch_hook is not None:
            batch.seal()
            flow.batching = self.batch_hook(flow, is_orig, batch.offs[0], batch)

    def flush_batches(self, now: float | None = None) -> None:
        """Hand over the pending batches (oldest flow first): all of them, or with ``now``
        those whose first chunk is at least ``batch_seconds`` old."""
        batched, self._batched = self._batched, {}
        if now is None:
            for flow in batched.values():
                self._hand_over(flow, True)
                self._hand_over(flow, False)
            self._batched_bytes = 0
            return
        limit = now - self.batch_seconds
        keep = self._batched
        for uid, flow in batched.items():
            for is_orig in (True, False):
                batch = flow.batch[is_orig]
                if batch is not None:
                    if batch.first_ts <= limit:
                        self._hand_over(flow, is_orig)
                    else:
                        keep[uid] = flow

    # ------------------------------------------------------------------ lifecycle
    def _create(self, ts: float, frame: int, d: Decoded) -> tuple[Flow, bool]:
        proto, src, sport, dst, dport, flags, _seq, _ack, _payload, _ = d
        sender_is_orig = self._sender_is_orig(proto, sport, dport, flags)
        if sender_is_orig:
            o, op, r, rp = src, sport, dst, dport
        else:
            o, op, r, rp = dst, dport, src, sport
        if len(self.lru) >= self.max_flows:
            _, oldest = self.lru.popitem(last=False)
            self.stats["flows.evicted"] += 1
            self._finish(oldest)
        family = socket.AF_INET if len(src) == 4 else socket.AF_INET6
        orig_h, resp_h = socket.inet_ntop(family, o), socket.inet_ntop(family, r)
        if self.address_mapper is not None:  # pseudonymization: before anything sees them
            orig_h, resp_h = self.address_mapper(orig_h), self.address_mapper(resp_h)
        conn = ConnId(orig_h, op, resp_h, rp)
        self._created += 1
        flow = Flow(_uid(ts, conn, proto, self._created), conn, proto, ts, frame)
        flow.key = (o, op, r, rp, proto)
        self.index[(o, op, r, rp, proto)] = (flow, True)
        self.index[(r, rp, o, op, proto)] = (flow, False)
        self.lru[flow.uid] = flow
        self.stats["flows"] += 1
        if self.stream_router is not None:
            flow.stream_hooks = [self._route, self._route]
        elif self.stream_hook is not None:
            flow.stream_hooks = [self.stream_hook, self.stream_hook]
        if self.stream_router or self.stream_hook or self.batch_hook:
            flow.inspect = [True, True]
        flow.analyzer = self.choose_analyzer(flow, None)
        return flow, sender_is_orig

    def _sender_is_orig(self, proto: int, sport: int, dport: int, flags: int) -> bool:
        if proto == PROTO_TCP and flags & TCP_SYN:
            return not flags & TCP_ACK
        ports = self.server_ports
        if dport in ports and sport not in ports:
            return True
        if sport in ports and dport not in ports:
            return False
        if dport < 1024 <= sport:
            return True
        return not sport < 1024 <= dport

    def _end(self, flow: Flow) -> None:
        if self.lru.pop(flow.uid, None) is not None:
            self._finish(flow)

    def _finish(self, flow: Flow) -> None:
        o, op, r, rp, proto = flow.key
        for key in (flow.key, (r, rp, o, op, proto)):
            entry = self.index.get(key)
            if entry is not None and entry[0] is flow:
                del self.index[key]
        for is_orig in (True, False):
            while flow.streams[is_orig].pending:
                self._skip_gap(flow, is_orig, flow.last_ts, flow.last_frame)
        if self._batched.pop(flow.uid, None) is not None:
            self._hand_over(flow, True)
            self._hand_over(flow, False)
        if flow.analyzer is not None:
            flow.analyzer.finish(flow.last_ts)
        self.on_flow_end(flow)

    def expire(self, now: float) -> None:
        """End flows idle for longer than their timeout (checked once a second of packet time)."""
        self._next_expiry = now + 1.0
        lru = self.lru
        while lru:
            flow = next(iter(lru.values()))
            if flow.closed:
                timeout = self.closed_timeout
            elif flow.proto == PROTO_TCP:
                timeout = self.tcp_timeout
            else:
                timeout = self.udp_timeout
            if now - flow.last_ts <= timeout:
                break
            lru.popitem(last=False)
            self._finish(flow)

    def flush(self) -> None:
        """End every flow (end of capture)."""
        while self.lru:
            _, flow = self.lru.popitem(last=False)
            self._finish(flow)


def _uid(ts: float, conn: ConnId, proto: int, n: int) -> str:
    """A Zeek-style connection uid, deterministic for a given capture."""
    digest = hashlib.blake2b(f"{ts!r}|{conn}|{proto}|{n}".encode(), digest_size=12).digest()
    value = int.from_bytes(digest, "big")
    chars = []
    while value:
        value, rem = divmod(value, 62)
        chars.append(BASE62[rem])
    return "C" + "".join(chars)[:17]
