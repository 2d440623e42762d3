"""The flow table: orientation, Zeek's conn_state/history, timeouts, eviction, port reuse."""

from __future__ import annotations

import sys

from sentinel.decode.flow import FilteredHook, FlowTable, Segments
from sentinel.decode.packet import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN

A, B = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])


def table(**kw) -> tuple[FlowTable, list[dict]]:
    ended: list[dict] = []
    return FlowTable(lambda flow, first: None, lambda f: ended.append(f.record()), **kw), ended


def tcp(
    t: FlowTable,
    ts: float,
    src: bytes,
    sport: int,
    dst: bytes,
    dport: int,
    flags: int,
    seq: int = 0,
    ack: int = 0,
    payload: bytes = b"",
) -> None:
    t.process(
        ts, 1, (PROTO_TCP, src, sport, dst, dport, flags, seq, ack, payload, 40 + len(payload))
    )


def test_full_connection_is_sf_with_zeek_history():
    t, ended = table()
    tcp(t, 1.0, A, 40000, B, 502, TCP_SYN, seq=100)
    tcp(t, 1.1, B, 502, A, 40000, TCP_SYN | TCP_ACK, seq=900, ack=101)
    tcp(t, 1.2, A, 40000, B, 502, TCP_ACK, seq=101, ack=901)
    tcp(t, 1.3, A, 40000, B, 502, TCP_PSH | TCP_ACK, seq=101, ack=901, payload=b"x" * 12)
    tcp(t, 1.4, B, 502, A, 40000, TCP_PSH | TCP_ACK, seq=901, ack=113, payload=b"y" * 9)
    tcp(t, 1.5, A, 40000, B, 502, TCP_FIN | TCP_ACK, seq=113, ack=910)
    tcp(t, 1.6, B, 502, A, 40000, TCP_FIN | TCP_ACK, seq=910, ack=114)
    t.flush()
    (rec,) = ended
    assert (rec["orig_h"], rec["orig_p"], rec["resp_p"]) == ("192.0.2.1", 40000, 502)
    assert rec["conn_state"] == "SF" and rec["history"] == "ShADdFf"
    assert (rec["orig_pkts"], rec["orig_bytes"], rec["resp_pkts"], rec["resp_bytes"]) == (
        4,
        12,
        3,
        9,
    )
    assert rec["duration"] == 0.6


def test_states_of_unanswered_rejected_and_midstream_connections():
    t, ended = table()
    tcp(t, 1.0, A, 1, B, 502, TCP_SYN, seq=1)  # S0
    tcp(t, 1.0, A, 2, B, 502, TCP_SYN, seq=1)  # REJ
    tcp(t, 1.1, B, 502, A, 2, TCP_RST | TCP_ACK, ack=2)
    tcp(t, 1.0, B, 502, A, 3, TCP_PSH | TCP_ACK, seq=5, payload=b"z")  # OTH, mid-stream
    t.flush()
    states = {r["orig_p"]: r["conn_state"] for r in ended}
    assert states == {1: "S0", 2: "REJ", 3: "OTH"}
    assert next(r for r in ended if r["orig_p"] == 3)["orig_h"] == "192.0.2.1"  # port 502 = server


def test_idle_timeout_ends_flows_in_packet_time():
    t, ended = table(tcp_timeout=10.0, udp_timeout=5.0)
    t.process(0.0, 1, (PROTO_UDP, A, 5000, B, 53, 0, 0, 0, b"q", 29))
    tcp(t, 0.0, A, 40000, B, 502, TCP_SYN, seq=1)
    tcp(t, 7.0, A, 40001, B, 502, TCP_SYN, seq=1)
    assert [r["proto"] for r in ended] == ["udp"]
    tcp(t, 12.0, A, 40002, B, 502, TCP_SYN, seq=1)
    assert [r["orig_p"] for r in ended] == [5000, 40000]


def test_table_is_bounded_and_evicts_least_recently_active():
    t, ended = table(max_flows=16)
    tcp(t, 0.0, A, 1, B, 502, TCP_SYN, seq=1)
    for port in range(2, 100):
        tcp(t, port / 1000, A, port, B, 502, TCP_SYN, seq=1)
        tcp(t, port / 1000, A, 1, B, 502, TCP_ACK, seq=2)  # flow 1 stays active
    assert t.stats["flows.evicted"] == 99 - 16 and len(t.lru) == 16
    assert 1 not in {r["orig_p"] for r in ended}
    t.flush()
    assert len(ended) == 99 and len({r["uid"] for r in ended}) == 99


def test_port_reuse_starts_a_new_connection():
    t, ended = table()
    tcp(t, 1.0, A, 40000, B, 502, TCP_SYN, seq=100)
    tcp(t, 1.1, B, 502, A, 40000, TCP_SYN | TCP_ACK, seq=900, ack=101)
    tcp(t, 1.2, A, 40000, B, 502, TCP_PSH | TCP_ACK, seq=101, ack=901, payload=b"x")
    tcp(t, 1.3, A, 40000, B, 502, TCP_RST, seq=102)
    tcp(t, 2.0, A, 40000, B, 502, TCP_SYN, seq=5000)
    t.flush()
    assert [r["conn_state"] for r in ended] == ["RSTO", "S0"]
    assert ended[0]["uid"] != ended[1]["uid"]


def test_uids_are_deterministic():
    def run() -> list[str]:
        t, ended = table()
        for port in range(5):
            tcp(t, float(port), A, port + 1000, B, 502, TCP_SYN, seq=1)
        t.flush()
        return [r["uid"] for r in ended]

    assert run() == run()


def test_batch_hook_gets_the_chunks_of_the_stream_hook_and_all_before_the_flow_ends():
    chunks: list[tuple] = []  # what the per-chunk hook saw: (dir, offset, data, ts, frame)
    batched: list[tuple] = []  # the same, rebuilt from the batches
    calls: list[int] = []  # batch sizes, in order
    events: list[str] = []

    def on_end(flow) -> None:
        events.append("end")

    t = FlowTable(lambda flow, first: None, on_end)
    t.batch_segments = 3

    def stream(flow, is_orig, data, ts, frame) -> None:
        chunks.append((is_orig, flow.stream_offsets[is_orig], data, ts, frame))

    def batch(flow, is_orig, offset, segments) -> bool:
        calls.append(len(segments))
        events.append("batch")
        for data, ts, frame in segments:
            batched.append((is_orig, offset, data, ts, frame))
            offset += len(data)
        return True  # later chunks may come in batches

    t.stream_hook, t.batch_hook = stream, batch
    tcp(t, 1.0, A, 40000, B, 502, TCP_SYN, seq=100)
    tcp(t, 1.0, B, 502, A, 40000, TCP_SYN | TCP_ACK, seq=900, ack=101)
    seq, rseq = 101, 901
    for i in range(8):
        data = bytes([65 + i]) * (i + 1)
        if i == 4:  # out of order: 5 waits for 4, then both go
            nxt = seq + len(data)
            tcp(t, 1.1 + i, A, 40000, B, 502, TCP_ACK, seq=nxt, ack=901, payload=b"late")
            tcp(t, 1.1 + i, A, 40000, B, 502, TCP_ACK, seq=seq, ack=901, payload=data)
            seq = nxt + 4
            continue
        tcp(t, 1.1 + i, A, 40000, B, 502, TCP_ACK, seq=seq, ack=901, payload=data)
        tcp(t, 1.1 + i, B, 502, A, 40000, TCP_ACK, seq=rseq, ack=seq, payload=b"r")
        seq += len(data)
        rseq += 1
    assert calls[0] == 1  # the flow's first chunk goes at once (the hook had not accepted)
    t.flush_batches()  # the pipeline's tick: nothing waits longer
    n = len(batched)
    assert n == len(chunks)
    tcp(t, 10.0, A, 40000, B, 502, TCP_ACK, seq=seq, ack=rseq, payload=b"tail")
    t.flush()
    assert events[-2:] == ["batch", "end"]  # the tail was handed over before the flow ended
    assert len(batched) == n + 1
    key = lambda c: (c[0], c[1])  # noqa: E731 - per direction, in stream order
    assert sorted(batched, key=key) == sorted(chunks, key=key)
    assert max(calls) == 3


def test_interleaved_flows_batch_their_own_chunks_and_an_ending_flow_gets_them_first():
    """Each direction's batches carry exactly its chunks, in stream order, however the flows
    interleave; a flow that ends (here: evicted) gets its batches at once, before its end,
    while the others' keep waiting."""
    events: list[tuple[str, str]] = []
    chunks: dict[tuple[str, bool], list[tuple]] = {}  # per direction, as the stream hook saw
    batched: dict[tuple[str, bool], list[tuple]] = {}  # the same, rebuilt from the batches

    def stream(flow, is_orig, data, ts, frame) -> None:
        chunks.setdefault((flow.uid, is_orig), []).append((flow.stream_offsets[is_orig], data, ts))

    def batch(flow, is_orig, offset, segments) -> bool:
        events.append(("batch", flow.uid))
        for data, ts, _frame in segments:
            batched.setdefault((flow.uid, is_orig), []).append((offset, data, ts))
            offset += len(data)
        return True

    t = FlowTable(lambda flow, first: None, lambda f: events.append(("end", f.uid)), max_flows=3)
    t.stream_hook, t.batch_hook = stream, batch
    ports = (40000, 40001, 40002)
    for port in ports:
        tcp(t, 1.0, A, port, B, 502, TCP_SYN, seq=100)
        tcp(t, 1.0, B, 502, A, port, TCP_SYN | TCP_ACK, seq=900, ack=101)
    for i in range(5):
        for n, port in enumerate(ports):
            req, resp = bytes([65 + n]) * (i + 1), bytes([97 + n]) * (2 * i + 1)
            ts = 1.1 + i + n / 10
            tcp(t, ts, A, port, B, 502, TCP_ACK, seq=101 + i * (i + 1) // 2, payload=req)
            tcp(t, ts, B, 502, A, port, TCP_ACK, seq=901 + i * i, payload=resp)
    first = [uid for what, uid in events if what == "batch"][:6]  # each direction's first
    assert len(set(first)) == 3 and all(what == "batch" for what, _ in events)
    del events[:]
    tcp(t, 9.0, A, 40003, B, 502, TCP_SYN, seq=100)  # a fourth flow: the oldest is evicted
    oldest = first[0]
    assert events == [("batch", oldest), ("batch", oldest), ("end", oldest)]
    t.flush()
    assert len(chunks) == 6 and all(len(c) == 5 for c in chunks.values())
    assert batched == chunks


def test_batches_are_chunk_by_chunk_until_the_hook_accepts_them():
    sizes: list[int] = []
    t, _ = table()

    def hook(flow, is_orig, offset, segments) -> bool:
        sizes.append(len(segments))
        return len(sizes) >= 3

    t.batch_hook = hook
    tcp(t, 1.0, A, 40000, B, 502, TCP_SYN, seq=100)
    for i in range(6):
        tcp(t, 1.1, A, 40000, B, 502, TCP_ACK, seq=101 + i, ack=1, payload=b"x")
    t.flush()
    assert sizes == [1, 1, 1, 3]  # at once while refused, then batched


def test_a_filtered_hook_gets_only_the_chunks_that_pass_its_filter():
    seen: list[bytes] = []
    routed: list[bool] = []
    t, _ = table()
    # a response with the exception bit in byte 7 and code 2 in byte 8, or any chunk of 300+
    exception = (9, ((7, frozenset({0x83, 0x84})), (8, frozenset({2}))))
    oversized = (300, ())
    hook = FilteredHook(
        lambda flow, is_orig, data, ts, frame: seen.append(data), [exception, oversized]
    )

    def router(flow, is_orig):
        routed.append(is_orig)
        return hook if not is_orig else None  # the server's direction only

    t.stream_router = router
    tcp(t, 1.0, A, 40000, B, 502, TCP_SYN, seq=100)
    tcp(t, 1.0, B, 502, A, 40000, TCP_SYN | TCP_ACK, seq=900, ack=101)
    rseq = 901
    responses = [
        bytes.fromhex("000100000003010302"),  # too short (8 bytes): no
        bytes.fromhex("00010000000301830202"),  # exception 0x83, code 2: yes
        bytes.fromhex("00010000000301830402"),  # code 4: no
        bytes.fromhex("000100000003010400"),  # 9 bytes, no exception bit: no
        bytes(300),  # size alone: yes
    ]
    for i, r in enumerate(responses):
        tcp(t, 1.1 + i, A, 40000, B, 502, TCP_ACK, seq=101 + i, ack=rseq, payload=b"q")
        tcp(t, 1.1 + i, B, 502, A, 40000, TCP_ACK, seq=rseq, ack=102 + i, payload=r)
        rseq += len(r)
    assert routed == [True, False]  # asked once per direction, at its first chunk
    assert seen == [responses[1], responses[4]]
    assert [hook.passes(r) for r in responses] == [False, True, False, False, True]
    edges = FilteredHook(lambda *_: None, [(2, ((0, frozenset({0})), (1, frozenset({255}))))])
    assert [edges.passes(d) for d in (b"\x00\xff", b"\x00\xfe", b"\x01\xff", b"\x00")] == [
        True,
        False,
        False,
        False,
    ]


def test_segments_hold_a_batch_as_parallel_data_and_iterate_as_chunks():
    chunks = [(b"ab", 1.5, 7), (b"", 1.6, 8), (b"cde", 1.75, 9), (b"f", 2.0, 12)]
    seg = Segments.of(100, chunks)  # the empty chunk adds nothing to the stream: left out
    assert bytes(seg.data) == b"abcdef"
    assert (list(seg.offs), list(seg.times), list(seg.frames)) == (
        [100, 102, 105],
        [1.5, 1.75, 2.0],
        [7, 9, 12],
    )
    assert len(seg) == 3
    assert list(seg) == [(b"ab", 1.5, 7), (b"cde", 1.75, 9), (b"f", 2.0, 12)]
    assert list(seg.tail(1)) == [(b"cde", 1.75, 9), (b"f", 2.0, 12)]
    assert list(seg.tail(1).offs) == [102, 105]
    growing = Segments()  # as the flow table fills a batch: bytes copied as they come
    chunk = b"%d" % 4242  # an object of its own (not a shared constant)
    refs = sys.getrefcount(chunk)
    growing.add(chunk, 106, 2.5, 13)
    assert sys.getrefcount(chunk) == refs  # the batch keeps no Python object per chunk
    growing.add(b"ij", 110, 2.6, 14)
    assert growing.data == b"" and len(growing) == 2
    growing.seal()
    assert growing.data == b"4242ij" and len(growing.buf) == 0
    assert list(growing)[1] == (b"ij", 2.6, 14)
    growing.add(b"k", 112, 2.7, 15)
    growing.seal()  # after the sealed bytes
    assert growing.data == b"4242ijk" and list(growing)[2] == (b"k", 2.7, 15)
    one = Segments.one(b"xyz", 40, 3.0, 5)
    assert list(one) == [(b"xyz", 3.0, 5)] and one.chunk(0)[0] is one.data  # not copied
    # while filling, a chunk's offset, time and frame wait as doubles: exact at any size
    big = Segments()
    big.add(b"z", 2**40 + 1, 9.25, 2**33 + 7)
    big.add(b"y", 2**40 + 2, 9.5, 2**33 + 8)
    assert big.first_ts == 9.25 and len(big) == 2  # the flow table's age check, unsealed
    big.seal()
    assert list(big.offs) == [2**40 + 1, 2**40 + 2] and list(big.frames) == [2**33 + 7, 2**33 + 8]
    assert big.first_ts == 9.25 and list(big.times) == [9.25, 9.5]
