"""Stream chunks to detectors: per chunk (``on_stream``, narrowed by ``stream_gate``) and in
batches (``on_stream_batch``), the same bytes, offsets and packets either way."""

from __future__ import annotations

from pathlib import Path

from sentinel.config import Config
from sentinel.events import ConnId, StreamData
from sentinel.pipeline.detector import NO_CHUNK, Detector, StreamBatch, StreamGate
from tests.conftest import run_analysis
from tests.detectors.pcaps import HMI, PLC, save, tcp_stream

SEGMENTS = [b"A" * 3, b"bbbbbb", b"ccc", b"Adddddddd", b"e", b"AA"]
REPLIES = [b"x" * 7, b"A"]


class Chunks(Detector):
    """Records what on_stream gets, behind the gate it is given."""

    id = "test_chunks"

    def __init__(self, gate: StreamGate | None) -> None:
        super().__init__(Config())
        self.gate = gate
        self.seen: list[tuple[bool, int, bytes, int]] = []

    def stream_gate(self, uid: str, conn: ConnId, is_orig: bool, proto: int) -> StreamGate | None:
        return self.gate if is_orig else None  # the server's direction: every chunk

    def on_stream(self, chunk: StreamData) -> None:
        self.seen.append((chunk.is_orig, chunk.offset, chunk.data, chunk.frame))


class Batches(Detector):
    id = "test_batches"

    def __init__(self) -> None:
        super().__init__(Config())
        self.seen: list[tuple[bool, int, bytes, int]] = []

    def on_stream_batch(self, batch: StreamBatch) -> None:
        offset = batch.offset
        for data, _ts, frame in batch.segments:
            self.seen.append((batch.is_orig, offset, data, frame))
            offset += len(data)


def run(tmp_path: Path, *detectors: Detector) -> None:
    tmp_path.mkdir(exist_ok=True)
    pcap = save(tmp_path / "c.pcap", tcp_stream(HMI, PLC, 4444, SEGMENTS, REPLIES))
    run_analysis(pcap, tmp_path / "out", Config(), list(detectors))


def test_gates_narrow_on_stream_and_batches_carry_every_chunk(tmp_path: Path) -> None:
    every = Chunks(None)
    sized = Chunks(StreamGate(((6, ()),)))
    first_a = Chunks(StreamGate(((1, ((0, frozenset(b"A")),)),)))
    either = Chunks(StreamGate(((9, ()), (2, ((1, frozenset(b"b")),)))))
    nothing = Chunks(NO_CHUNK)
    batches = Batches()
    run(tmp_path, every, batches)
    assert len(every.seen) == len(SEGMENTS) + len(REPLIES)
    assert sorted(batches.seen) == sorted(every.seen)  # same bytes, offsets and frames
    client = [c for c in every.seen if c[0]]
    assert [c[1] for c in client] == [0, 3, 9, 12, 21, 22]
    for i, det in enumerate((sized, first_a, either, nothing)):
        run(tmp_path / str(i), det)
    assert [c[2] for c in sized.seen if c[0]] == [b"bbbbbb", b"Adddddddd"]
    assert [c[2] for c in first_a.seen if c[0]] == [b"AAA", b"Adddddddd", b"AA"]
    assert [c[2] for c in either.seen if c[0]] == [b"bbbbbb", b"Adddddddd"]
    assert [c for c in nothing.seen if c[0]] == []
    # offsets and frames stay those of the whole stream
    assert [c for c in sized.seen if c[0]] == [c for c in client if len(c[2]) >= 6]
    assert len([c for c in nothing.seen if not c[0]]) == len(REPLIES)


GATES_BY_PORT = {
    4444: StreamGate(((1, ((0, frozenset(b"A")),)),)),
    5555: StreamGate(((6, ()),)),
}


class GateByPort(Chunks):
    """A gate per server port, as a rule set's plans differ by port."""

    def __init__(self) -> None:
        super().__init__(None)

    def stream_gate(self, uid: str, conn: ConnId, is_orig: bool, proto: int) -> StreamGate | None:
        return GATES_BY_PORT[conn.resp_p] if is_orig else None


def test_directions_with_the_same_gate_share_one_hook(tmp_path: Path) -> None:
    """A stream hook per distinct gate, not per flow direction (its tables stay in the CPU's
    caches); each flow still gets its own gate's chunks."""
    from sentinel.pipeline.engine import Pipeline

    det = GateByPort()
    packets = [
        *tcp_stream(HMI, PLC, 4444, SEGMENTS, REPLIES, sport=41000),
        *tcp_stream(HMI, PLC, 5555, SEGMENTS, REPLIES, sport=41001),
        *tcp_stream(HMI, PLC, 4444, SEGMENTS, REPLIES, sport=41002),
    ]
    pcap = save(tmp_path / "c.pcap", sorted(packets, key=lambda p: p.time))
    pipeline = Pipeline(Config(), tmp_path / "out", [det])
    route = pipeline._stream_route
    hooks: dict[int, list[object]] = {}

    def recording(flow, is_orig):  # type: ignore[no-untyped-def]
        hook = route(flow, is_orig)
        if is_orig:
            hooks.setdefault(flow.conn.resp_p, []).append(hook)
        return hook

    pipeline._stream_route = recording  # type: ignore[method-assign]
    pipeline.run(pcap)
    first, second = hooks[4444]
    assert first is second and first is not hooks[5555][0]
    seen = sorted(c[2] for c in det.seen if c[0])
    assert seen == sorted([b"AAA", b"Adddddddd", b"AA"] * 2 + [b"bbbbbb", b"Adddddddd"])


def test_stream_consumers_stop_at_the_stream_depth(tmp_path: Path) -> None:
    """Per chunk and in batches, a direction's bytes go up to decode.stream_depth (the chunk
    that crosses it cut there), none after; the other direction is not affected."""
    config = Config.model_validate({"decode": {"stream_depth": 10}})
    every, batches = Chunks(None), Batches()
    pcap = save(tmp_path / "c.pcap", tcp_stream(HMI, PLC, 4444, SEGMENTS, REPLIES))
    result = run_analysis(pcap, tmp_path / "out", config, [every, batches])
    client = [c for c in every.seen if c[0]]
    assert [(c[1], c[2]) for c in client] == [(0, b"AAA"), (3, b"bbbbbb"), (9, b"c")]
    assert sorted(batches.seen) == sorted(every.seen)
    assert [c[2] for c in every.seen if not c[0]] == REPLIES  # 8 bytes: under the depth
    assert result.stats["tcp"]["stream_depth_reached"] == 1
