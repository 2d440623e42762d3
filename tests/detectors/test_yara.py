"""YARA scanner: every starter rule on a crafted positive and a near-miss negative capture,
stream windows, files rebuilt from HTTP/FTP/TFTP, rule loading errors, the CLI option."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sentinel.config import Config
from sentinel.decode.flow import FlowTable
from sentinel.detector_settings import YaraSettings
from sentinel.detectors.yara_scan import YaraScanner, builtin_rule_files, compile_rules
from sentinel.errors import RuleError
from sentinel.events import ConnId, StreamData
from sentinel.pipeline import Pipeline
from sentinel.pipeline.detector import StreamBatch
from tests.conftest import Analysis, run_analysis
from tests.detectors.pcaps import (
    ENG,
    HMI,
    PLC,
    T0,
    evidence,
    ftp_transfer,
    http_get,
    save,
    summary,
    tcp_stream,
    technique,
    tftp_read,
    udp,
)

MARKER = b"SENTINEL-TEST-MARKER-0123456789"
TEST_RULES = """
rule Test_Marker
{
    meta:
        sid = 9009002
        severity = "low"
        mitre_attack = "T0867"
        description = "test marker"
    strings:
        $m = "SENTINEL-TEST-MARKER-0123456789"
    condition:
        $m
}

rule Test_MZ_File : testing
{
    meta:
        sid = 9009001
        severity = "medium"
        description = "a Windows executable carried as a file"
    condition:
        sentinel_scope == "file" and uint16(0) == 0x5A4D and filesize > 1000
}
"""


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


def blob(*parts: bytes, size: int = 2048) -> bytes:
    """A binary-looking file with the given parts spread inside it."""
    out = bytearray(b"MZ\x90\x00" + bytes(range(256)) * 2)
    for part in parts:
        out += b"\x00" * 37 + part
    out += b"\xcc" * max(0, size - len(out))
    return bytes(out)


def library_zip(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.writestr(name, b"\x03\xf3\r\n" + name.encode() * 40)
    return buf.getvalue()


S7_STOP = bytes.fromhex("0300002102f08032010000000e0010000029000000000009" + b"P_PROGRAM".hex())
S7_HOT_START = bytes.fromhex(
    "0300002502f08032010000000c0014000028000000000000fd000009" + b"P_PROGRAM".hex()
)
S7_COLD_START = bytes.fromhex(
    "0300002702f08032010000000d0016000028000000000000fd0002432009" + b"P_PROGRAM".hex()
)
S7_READ_VAR = bytes.fromhex("0300001f02f080320100000001000e00000401120a10020001000184000000")
S7_INSERT_BLOCK = bytes.fromhex(
    "0300002502f08032010000000f0014000028000000000000fd000005" + b"_INSE".hex() + "00000000"
)
INDUSTROYER2_CONFIG = utf16(
    '10.82.40.105 2404 3 0 1 1 PService_PPD.exe 1 "D:\\OIK\\DevCounter" 0 1 0 0 1 0 0 44'
)
IEC104_INI = (
    b"[STATION]\r\ntarget_ip=10.0.0.5\r\ntarget_port=2404\r\nasdu=1\r\nfirst_action=on\r\n"
    b"command_type=def\r\noperation=sequence\r\nrange=1-40\r\nstop_comm_service=1\r\n"
    b"stop_comm_service_name=PServiceControl.exe\r\nsocket_timeout=15000\r\n"
)
TRITON_NAMES = ["TsHi.pyc", "TsLow.pyc", "TsBase.pyc", "TS_cnames.pyc", "sh.pyc", "os.pyc"]

# (rule id, technique, port, positive payload, text of the first matching string, negative)
STARTER: dict[str, tuple[str, str, int, bytes, bytes, bytes]] = {
    "Industroyer_Payload_Modules": (
        "9001001",
        "T0867",
        4444,
        blob(b"Crash104.dll\x00", utf16("haslo.dat")),
        b"Crash104.dll",
        blob(b"104.dll\x00", utf16("haslo.txt"), b"Crash.dll"),
    ),
    "Industroyer_IEC104_Payload_Config": (
        "9001002",
        "T0867",
        8080,
        IEC104_INI,
        b"target_ip",
        b"[network]\r\ntarget_ip=10.0.0.5\r\ntarget_port=2404\r\ntimeout=5\r\n",
    ),
    "Industroyer2_Embedded_Target_Config": (
        "9001003",
        "T0867",
        4444,
        blob(INDUSTROYER2_CONFIG),
        utf16("PService_PPD.exe"),
        blob(utf16('10.82.40.105 2404 PService_PPD.exe "D:\\OIK\\Reports"')),
    ),
    "TRITON_Framework_Components": (
        "9001004",
        "T0867",
        4444,
        library_zip(TRITON_NAMES),
        b"TsHi.py",
        library_zip(["os.pyc", "sh.pyc", "TsHi_notes.txt", "inject.txt"]),
    ),
    "PIPEDREAM_LAZYCARGO_AsrDrv103": (
        "9001005",
        "T0867",
        4444,
        blob(utf16("\\??\\AsrDrv103")),
        utf16("AsrDrv103"),
        blob(utf16("\\??\\AsrDrv106")),
    ),
    "S7comm_CPU_Stop_Job": (
        "9001006",
        "T0858",
        102,
        S7_READ_VAR + S7_STOP,
        S7_STOP[7:],
        S7_READ_VAR + S7_INSERT_BLOCK,
    ),
    "S7comm_CPU_Program_Start_Job": (
        "9001007",
        "T0858",
        102,
        S7_READ_VAR + S7_COLD_START,
        S7_COLD_START[7:],
        S7_READ_VAR + S7_INSERT_BLOCK,
    ),
    "Stuxnet_Step7_Dropper_Artifacts": (
        "9001008",
        "T0867",
        445,
        blob(utf16("s7otbxsx.dll")),
        utf16("s7otbxsx.dll"),
        blob(utf16("s7otbxdx.dll"), b"mrxcls.sys"),
    ),
}


def scanner(config: Config | None = None, **settings: Any) -> YaraScanner:
    cfg = config or Config()
    return YaraScanner(cfg, YaraSettings(**settings)) if settings else YaraScanner(cfg)


def with_test_rules(tmp_path: Path, **settings: Any) -> YaraScanner:
    rules = tmp_path / "test_rules.yar"
    rules.write_text(TEST_RULES)
    return YaraScanner(Config(), YaraSettings(rules=[str(rules)], **settings))


def analyze(tmp_path: Path, det: YaraScanner, *packets: list) -> Analysis:
    pcap = save(tmp_path / "capture.pcap", *packets)
    return run_analysis(pcap, tmp_path / "out", Config(), [det])


def assert_no_payload(findings: list[dict[str, Any]], *secrets: bytes) -> None:
    text = json.dumps(findings)
    for s in secrets:
        for form in (s, s.hex().encode()):
            assert form.decode("latin-1") not in text


# ---------------------------------------------------------------- the starter set
def test_starter_set_compiles_with_unique_ids() -> None:
    files = builtin_rule_files()
    assert {f.name for f in files} >= {"industroyer.yar", "triton.yar", "pipedream.yar"}
    _, infos = compile_rules(files)
    assert sorted(i.identifier for i in infos.values()) == sorted(STARTER)
    assert sorted(i.rule_id for i in infos.values()) == [f"900100{n}" for n in range(1, 9)]
    for info in infos.values():
        assert info.reference and info.reference.startswith("https://")
        assert info.meta["author"] == "Sentinel team"


@pytest.mark.parametrize("name", sorted(STARTER))
def test_starter_rule_positive(tmp_path: Path, name: str) -> None:
    rule_id, tech, port, payload, first, _ = STARTER[name]
    segments = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
    a = analyze(tmp_path, scanner(), tcp_stream(ENG, PLC, port, segments))
    assert summary(a.findings) == [(rule_id, 1)]
    f = a.findings[0]
    assert technique(f) == tech
    assert f["rule"]["name"] == name and f["rule"]["ruleset"] == "sentinel-yara"
    assert f["event"]["dataset"] == "sentinel.yara"
    assert (f["source"]["ip"], f["destination"]["ip"]) == (ENG, PLC)
    ev = evidence(f)
    assert ev["scope"] == "stream" and ev["direction"] == "to_server"
    assert ev["stream_offset"] == payload.find(first)
    y = ev["yara"]
    assert y["rule"] == name and y["meta"]["sid"] == int(rule_id) and y["strings"]
    assert_no_payload(a.findings, first)


@pytest.mark.parametrize("name", sorted(STARTER))
def test_starter_rule_negative(tmp_path: Path, name: str) -> None:
    _, _, port, _, _, negative = STARTER[name]
    segments = [negative[i : i + 1000] for i in range(0, len(negative), 1000)]
    assert analyze(tmp_path, scanner(), tcp_stream(ENG, PLC, port, segments)).findings == []


def test_s7_hot_start_is_a_program_start(tmp_path: Path) -> None:
    a = analyze(tmp_path, scanner(), tcp_stream(ENG, PLC, 102, [S7_READ_VAR, S7_HOT_START]))
    assert summary(a.findings) == [("9001007", 1)]


# ---------------------------------------------------------------- stream windows
def test_match_straddling_two_windows_is_found_once(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path, window_bytes=1024, overlap_bytes=64)
    payload = bytearray(b"\x00" * 4096)
    payload[1000 : 1000 + len(MARKER)] = MARKER  # crosses the end of the first window
    payload[3000 : 3000 + len(MARKER)] = MARKER  # once more, further on
    segments = [bytes(payload[i : i + 512]) for i in range(0, len(payload), 512)]
    a = analyze(tmp_path, det, tcp_stream(HMI, PLC, 4444, segments))
    assert summary(a.findings) == [("9009002", 2)]  # two places, folded by the aggregator
    ev = evidence(a.findings[0])
    assert ev["stream_offset"] == 1000 and ev["window"] == [960, 1984]


def test_match_inside_the_overlap_is_not_reported_twice(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path, window_bytes=1024, overlap_bytes=64)
    payload = bytearray(b"\x00" * 2048)
    payload[980 : 980 + len(MARKER)] = MARKER  # seen whole by windows 1 and 2
    a = analyze(tmp_path, det, tcp_stream(HMI, PLC, 4444, [bytes(payload)]))
    assert summary(a.findings) == [("9009002", 1)]
    assert evidence(a.findings[0])["window"] == [0, 1024]


def test_stream_finding_names_the_packet_that_completed_the_match(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path)
    half = len(MARKER) // 2
    segments = [b"a" * 100, b"b" * 100 + MARKER[:half], MARKER[half:] + b"c" * 10, b"d" * 50]
    packets = tcp_stream(HMI, PLC, 4444, segments)
    a = analyze(tmp_path, det, packets)
    f = a.findings[0]
    # frames: SYN, SYN/ACK, ACK, then the four segments (4..7): the match ends in frame 6
    assert f["sentinel"]["frame"] == 6
    assert evidence(f)["stream_offset"] == 200


def test_match_split_across_a_batch_border_is_found_at_its_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FlowTable, "batch_segments", 2)  # the pipeline hands over 2 at a time
    det = with_test_rules(tmp_path)
    half = len(MARKER) // 2
    # chunk 1 goes alone (the flow is classified), then batches [2, 3], [4, 5], [6, 7]
    segments = [b"a" * 10] * 4 + [b"b" * 5 + MARKER[:half], MARKER[half:] + b"c", b"d"]
    a = analyze(tmp_path, det, tcp_stream(HMI, PLC, 4444, segments))
    assert summary(a.findings) == [("9009002", 1)]
    f = a.findings[0]
    assert f["sentinel"]["frame"] == 9  # SYN, SYN/ACK, ACK, chunks 1..7 = frames 4..10
    assert evidence(f)["stream_offset"] == 45


@pytest.mark.parametrize("sizes", [(1,), (2, 3), (7,), (128,), (300, 1, 50)])
def test_batches_give_the_findings_of_chunk_by_chunk_delivery(
    tmp_path: Path, sizes: tuple[int, ...]
) -> None:
    """Same windows, chunk index (compacted beyond 256 chunks) and so the same findings,
    frames and offsets, whatever the batch sizes."""
    conn = ConnId(HMI, 40000, PLC, 4444)
    segments = []
    offset = 0
    for i in range(1500):  # about 6 windows of 1024 bytes, markers across chunks and windows
        data = bytes([i % 251]) * (1 + i % 7)
        if i % 97 == 5:
            data += MARKER[: 5 + i % 11]
        elif i % 97 == 6:
            data = MARKER[5 + (i - 1) % 11 :] + data
        segments.append((data, T0 + i * 0.01, 4 + i))
        offset += len(data)

    def findings(det: YaraScanner, batched: bool) -> list[tuple]:
        out: list = []
        if batched:
            i = offset = n = 0
            while i < len(segments):
                size = sizes[n % len(sizes)]
                part = segments[i : i + size]
                out += det.on_stream_batch(StreamBatch("Cb", conn, True, 6, offset, part)) or []
                offset += sum(len(d) for d, _, _ in part)
                i += size
                n += 1
        else:
            offset = 0
            for data, ts, frame in segments:
                out += det.on_stream(StreamData(ts, frame, "Cb", conn, True, data, offset)) or []
                offset += len(data)
        out += det.on_flow_end({"uid": "Cb"}) or []
        return [(f.rule_id, f.ts, f.frame, f.evidence["stream_offset"], f.evidence["window"])
                for f in out]  # fmt: skip

    settings = {"window_bytes": 1024, "overlap_bytes": 64}
    expected = findings(with_test_rules(tmp_path, **settings), batched=False)
    assert len(expected) >= 5  # one finding per window that holds a marker
    assert findings(with_test_rules(tmp_path, **settings), batched=True) == expected


@pytest.mark.parametrize("seed", range(6))
def test_batches_and_flushes_keep_the_chunk_index_of_chunk_by_chunk_delivery(
    tmp_path: Path, seed: int
) -> None:
    """Random chunk and batch sizes, windows that fill inside a batch, flushes at ticks: the
    chunk index, window and findings stay those of chunk-by-chunk delivery."""
    rng = random.Random(seed)
    conn = ConnId(HMI, 40000, PLC, 4444)
    batches: list[tuple[list[tuple[bytes, float, int]], float | None]] = []  # (chunks, tick)
    # first, 300 chunks of one byte: the index is compacted
    chunks = [(b"x", T0 + i * 0.01, 4 + i) for i in range(300)]
    batches.append((chunks, None))
    ts, frame = T0 + 3.0, 304
    for _ in range(120):
        chunks = []
        for _ in range(rng.choice((1, 3, 40, 128, 300))):
            size = rng.choice((1, 1, 2, 3)) if rng.random() < 0.99 else rng.randrange(1, 1500)
            data = bytes([frame % 251]) * size
            if rng.random() < 0.02:  # a marker, sometimes cut across chunks
                cut = rng.randrange(len(MARKER))
                data += MARKER[:cut]
                chunks.append((data, ts, frame))
                ts, frame, data = ts + 0.01, frame + 1, MARKER[cut:]
            chunks.append((data, ts, frame))
            ts, frame = ts + 0.01, frame + 1
        tick = ts + rng.choice((0.0, 3.0, 6.0)) if rng.random() < 0.4 else None
        ts = tick or ts
        batches.append((chunks, tick))

    def run(batched: bool) -> tuple[list[tuple], list[tuple]]:
        det = with_test_rules(tmp_path, window_bytes=1024, overlap_bytes=64, flush_seconds=5.0)
        found: list = []
        states: list[tuple] = []
        offset = 0
        for chunks, tick in batches:
            if batched:
                found += det.on_stream_batch(StreamBatch("Cb", conn, True, 6, offset, chunks))
                offset += sum(len(d) for d, _, _ in chunks)
            else:
                for data, t, f in chunks:
                    found += det.on_stream(StreamData(t, f, "Cb", conn, True, data, offset)) or []
                    offset += len(data)
            if tick is not None:
                found += det.on_tick(tick) or []
            st = det._streams[("Cb", True)]
            index = list(zip(st.offs, st.times, st.frames, strict=True))
            states.append((index, bytes(st.buf), st.base, st.since))
        found += det.on_flow_end({"uid": "Cb"}) or []
        return [(f.rule_id, f.ts, f.frame, f.evidence["stream_offset"], f.evidence["window"])
                for f in found], states  # fmt: skip

    expected, states = run(batched=False)
    assert len(expected) >= 3
    starts, offset = set(), 0
    for chunks, _ in batches:
        for data, _, f in chunks:
            starts.add((offset, f))
            offset += len(data)
    merged = {(o, f) for index, *_ in states for o, _, f in index}
    assert merged - starts  # compacted entries: a chunk's offset with a later chunk's frame
    assert run(batched=True) == (expected, states)


def test_pending_bytes_are_scanned_after_flush_seconds() -> None:
    det = YaraScanner(Config(), YaraSettings(flush_seconds=5.0), paths=[], builtin=True)
    conn = ConnId(HMI, 40000, PLC, 102)
    chunk = StreamData(T0, 4, "Cflush", conn, True, S7_READ_VAR + S7_STOP, 0)
    assert det.on_stream(chunk) == []  # waits for its window
    assert det.on_tick(T0 + 4.0) == []
    found = det.on_tick(T0 + 5.0)
    assert [f.rule_id for f in found] == ["9001006"]
    assert found[0].ts == T0 and found[0].frame == 4
    assert det.on_tick(T0 + 10.0) == []
    assert det.on_flow_end({"uid": "Cflush"}) == []  # already reported


def test_reading_a_file_a_tail_waits_for_its_flow_and_gives_the_live_finding() -> None:
    """Live, a tail is scanned flush_seconds after it came; reading a capture file (``live``
    False), when its flow ends: the same finding (rule, packet, time), later."""
    found = {}
    for live in (True, False):
        det = YaraScanner(Config(), YaraSettings(flush_seconds=5.0), paths=[], builtin=True)
        det.live = live
        conn = ConnId(HMI, 40000, PLC, 102)
        chunk = StreamData(T0, 4, "Cflush", conn, True, S7_READ_VAR + S7_STOP, 0)
        assert det.on_stream(chunk) == []
        at_tick = [(f.rule_id, f.ts, f.frame) for f in det.on_tick(T0 + 60.0) or []]
        at_end = [(f.rule_id, f.ts, f.frame) for f in det.on_flow_end({"uid": "Cflush"}) or []]
        found[live] = (at_tick, at_end)
    assert found[True] == ([("9001006", T0, 4)], [])
    assert found[False] == ([], [("9001006", T0, 4)])


def test_the_pipeline_tells_its_detectors_whether_the_run_is_live(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path)
    assert det.live  # alone, a detector keeps the live behaviour
    Pipeline(Config(), tmp_path / "file", [det])
    assert det.live is False
    Pipeline(Config(), tmp_path / "sensor", [det], live=True)
    assert det.live is True


def test_least_recently_active_streams_are_scanned_when_evicted(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path, max_streams=2)
    flows = [
        tcp_stream(
            HMI,
            f"192.0.2.{100 + i}",
            4444,
            [b"x" * 100, MARKER, b"y" * 100],
            t0=T0 + i * 0.001,
            sport=41000 + i,
            dt=1.0,
        )
        for i in range(5)
    ]
    a = analyze(tmp_path, det, *flows)
    assert sorted(f["destination"]["ip"] for f in a.findings) == [
        f"192.0.2.{100 + i}" for i in range(5)
    ]
    assert {evidence(f)["stream_offset"] for f in a.findings} == {100}


def test_a_full_stream_table_scans_out_its_least_recently_active_eighth(tmp_path: Path) -> None:
    """Many short connections: a new stream on a full table drops the least recently active
    eighth at once (one sort, not a search of the table per new stream), scanned first."""
    det = with_test_rules(tmp_path, max_streams=16)
    conn = ConnId(HMI, 40000, PLC, 4444)
    for i in range(16):  # stream i last active at T0 + i; C1 carries the marker
        data = MARKER if i == 1 else b"x" * 10
        assert det.on_stream(StreamData(T0 + i, i, f"C{i}", conn, True, data, 0)) == []
    det.on_stream(StreamData(T0 + 40, 40, "C0", conn, True, b"z", 10))  # C0 active again
    found = det.on_stream(StreamData(T0 + 50, 50, "Cnew", conn, True, b"y", 0))
    assert [(f.rule_id, f.uid, f.frame) for f in found] == [("9009002", "C1", 1)]
    # 16 // 8 = 2 dropped, the least recently active: C1 and C2 (C0 was active at T0 + 40)
    assert sorted(uid for uid, _ in det._streams) == sorted(
        ["Cnew", "C0", *(f"C{i}" for i in range(3, 16))]
    )


def test_udp_payloads_are_a_stream(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path)
    packets = [
        udp(HMI, PLC, 40000, 1502, b"\x00" * 20 + MARKER[:10], T0),
        udp(HMI, PLC, 40000, 1502, MARKER[10:] + b"\x00" * 5, T0 + 0.1),
    ]
    a = analyze(tmp_path, det, packets)
    assert summary(a.findings) == [("9009002", 1)]
    f = a.findings[0]
    assert f["network"] == {"transport": "udp", "protocol": "tristation"}
    assert evidence(f)["stream_offset"] == 20


# ---------------------------------------------------------------- files
EXE = b"MZ" + bytes(range(256)) * 20  # 5122 bytes


def file_finding(a: Analysis, rule_id: str = "9009001") -> dict[str, Any]:
    assert summary(a.findings) == [(rule_id, 1)]
    f = a.findings[0]
    assert evidence(f)["scope"] == "file"
    return f


def test_http_response_body_is_a_file(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path)
    a = analyze(tmp_path, det, http_get(HMI, "192.0.2.80", "/dl/tool.exe?x=1", EXE))
    f = file_finding(a)
    ev = evidence(f)
    file = ev["file"]
    assert file["name"] == "tool.exe" and file["protocol"] == "http"
    assert file["size"] == len(EXE) and not file["truncated"]
    assert file["sha256"] == hashlib.sha256(EXE).hexdigest()
    assert (file["status"], file["method"], file["uri"]) == (200, "GET", "/dl/tool.exe?x=1")
    header = b"HTTP/1.1 200 OK\r\nContent-Length: 5122\r\n\r\n"
    assert ev["stream_offset"] == len(header) and ev["direction"] == "to_client"
    assert f["network"]["protocol"] == "http"
    assert f["source"]["ip"] == HMI  # the flow: the client that downloaded it
    assert evidence(f)["yara"]["tags"] == ["testing"]


def test_http_chunked_gzip_body_is_decoded(tmp_path: Path) -> None:
    # Zip member names are invisible in the gzip-coded stream; the rebuilt file shows them.
    body = gzip.compress(library_zip(TRITON_NAMES), mtime=0)
    headers = (
        'Content-Encoding: gzip\r\nContent-Disposition: attachment; filename="library.zip"\r\n'
    )
    packets = http_get(HMI, "192.0.2.80", "/get?id=7", body, headers=headers, chunked=True)
    a = analyze(tmp_path, scanner(), packets)
    f = file_finding(a, "9001004")
    file = evidence(f)["file"]
    assert file["name"] == "library.zip" and file["content_encoding"] == "gzip"
    assert file["size"] == len(body)  # on the wire
    assert file["match_offset"] > 0


def test_file_match_already_seen_in_the_stream_is_not_repeated(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path)
    body = b"0" * 3000 + MARKER + b"1" * 3000
    a = analyze(tmp_path, det, http_get(HMI, "192.0.2.80", "/notes.txt", body))
    assert summary(a.findings) == [("9009002", 1)]
    assert evidence(a.findings[0])["scope"] == "stream"


@pytest.mark.parametrize(("passive", "store"), [(True, False), (False, True)])
def test_ftp_transfer_is_a_file(tmp_path: Path, passive: bool, store: bool) -> None:
    det = with_test_rules(tmp_path)
    a = analyze(tmp_path, det, ftp_transfer(ENG, PLC, "PLC_PRG.exe", EXE, passive, store))
    f = file_finding(a)
    file = evidence(f)["file"]
    assert (file["name"], file["protocol"], file["size"]) == ("PLC_PRG.exe", "ftp", len(EXE))
    assert file["command"] == ("STOR" if store else "RETR")
    assert file["sha256"] == hashlib.sha256(EXE).hexdigest()


def test_tftp_transfer_is_a_file(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path)
    a = analyze(tmp_path, det, tftp_read(HMI, PLC, "fw.bin", EXE, blksize=1024))
    f = file_finding(a)
    file = evidence(f)["file"]
    assert (file["name"], file["protocol"], file["size"]) == ("fw.bin", "tftp", len(EXE))
    assert file["operation"] == "RRQ" and file["complete"] is True
    assert file["sha256"] == hashlib.sha256(EXE).hexdigest()  # the resent block dropped
    assert f["network"]["transport"] == "udp"


def test_match_across_tftp_blocks_is_found_in_the_file(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path)
    body = b"\x00" * 500 + MARKER + b"\x00" * 600  # the marker straddles blocks 1 and 2
    a = analyze(tmp_path, det, tftp_read(HMI, PLC, "cfg.bin", body))
    f = file_finding(a, "9009002")
    assert evidence(f)["file"]["match_offset"] == 500


def test_file_larger_than_the_limit_is_scanned_head_first(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path, max_file_bytes=2048)
    a = analyze(tmp_path, det, http_get(HMI, "192.0.2.80", "/big.exe", EXE))
    file = evidence(file_finding(a))["file"]
    assert file["truncated"] is True and file["scanned_bytes"] == 2048
    assert file["size"] == len(EXE)


def test_hostile_http_never_raises(tmp_path: Path) -> None:
    det = with_test_rules(tmp_path)
    junk = [
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\nxx",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /x HTTP/1.1\r\n" + b"A" * 40000,
    ]
    packets = [tcp_stream(HMI, PLC, 80, [j], sport=48000 + i) for i, j in enumerate(junk)]
    assert analyze(tmp_path, det, *packets).findings == []


# ---------------------------------------------------------------- loading rules
def test_syntax_error_is_located(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yar"
    bad.write_text(
        'rule ok { condition: true }\n\nrule bad {\n  strings: $a = "x"\n  condition: $b\n}\n'
    )
    with pytest.raises(RuleError) as err:
        YaraScanner(Config(), paths=[bad], builtin=False)
    assert str(err.value).startswith(f"{bad}:")
    assert err.value.location is not None and err.value.location.line in (5, 6)
    assert 'undefined string "$b"' in str(err.value)


def test_unexpected_end_of_file_is_located_at_the_last_line(tmp_path: Path) -> None:
    bad = tmp_path / "cut.yar"
    bad.write_text("rule cut {\n  condition:\n    true\n")
    with pytest.raises(RuleError) as err:
        YaraScanner(Config(), paths=[bad], builtin=False)
    assert str(err.value).startswith(f"{bad}:3: YARA: syntax error")


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ('severity = "urgent"', "meta severity must be one of low, medium, high, critical"),
        ('sid = "x"', "meta sid must be a positive integer"),
        ('mitre_attack = "T1059"', "meta mitre_attack must be an ATT&CK for ICS id"),
    ],
)
def test_bad_metadata_is_located(tmp_path: Path, meta: str, problem: str) -> None:
    bad = tmp_path / "meta.yar"
    bad.write_text(f"// rules\n\nrule r1 {{\n  meta:\n    {meta}\n  condition:\n    true\n}}\n")
    with pytest.raises(RuleError) as err:
        YaraScanner(Config(), paths=[bad], builtin=False)
    assert str(err.value).startswith(f"{bad}:3: rule r1: {problem}")


def test_duplicate_sid_is_refused(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yar"
    dup.write_text("rule mine {\n  meta:\n    sid = 9001001\n  condition:\n    true\n}\n")
    with pytest.raises(RuleError, match="sid 9001001 is already used by industroyer"):
        YaraScanner(Config(), paths=[dup], builtin=True)


def test_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no such YARA rule file or directory"):
        YaraScanner(Config(), paths=[tmp_path / "nope.yar"], builtin=False)
    with pytest.raises(RuleError, match=r"no \*.yar or \*.yara files"):
        YaraScanner(Config(), paths=[tmp_path], builtin=False)


def test_user_rule_without_sid_gets_a_namespaced_id(tmp_path: Path) -> None:
    rules = tmp_path / "site.yar"
    rules.write_text('rule Site_Marker { strings: $m = "SENTINEL-TEST-MARKER" condition: $m }')
    det = YaraScanner(Config(), paths=[rules], builtin=False)
    a = analyze(tmp_path, det, tcp_stream(HMI, PLC, 4444, [MARKER]))
    assert summary(a.findings) == [("yara:site.Site_Marker", 1)]
    f = a.findings[0]
    assert technique(f) == "T0867" and f["event"]["severity"] == 73  # defaults: T0867, high


# ---------------------------------------------------------------- command line
def sentinel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_yara_option_adds_rules(tmp_path: Path) -> None:
    rules = tmp_path / "site.yar"
    rules.write_text(TEST_RULES)
    pcap = save(tmp_path / "c.pcap", tcp_stream(HMI, PLC, 4444, [b"z" * 10 + MARKER]))
    out = tmp_path / "out"
    done = sentinel("analyze", str(pcap), "--yara", str(rules), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    findings = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    assert [
        (f["rule"]["id"], f["sentinel"]["evidence"]["stream_offset"])
        for f in findings
        if f["sentinel"]["detector"] == "yara"
    ] == [("9009002", 10)]


def test_cli_yara_option_refuses_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yar"
    bad.write_text("rule bad {\n  condition:\n    $nope\n}\n")
    pcap = save(tmp_path / "c.pcap", tcp_stream(HMI, PLC, 4444, [MARKER]))
    done = sentinel("analyze", str(pcap), "--yara", str(bad), "--out", str(tmp_path / "o"), "-q")
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"sentinel: {bad}:")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


def test_cli_yara_check_lists_the_starter_set() -> None:
    done = sentinel("yara", "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("8 rules in 5 files: OK")
    assert "9001006\thigh\tT0858\ts7_plc_control.S7comm_CPU_Stop_Job" in done.stdout


def test_struct_layout_of_crafted_s7_frames() -> None:
    # TPKT length and S7 parameter length agree with the bytes (so the rules see real frames)
    for frame in (S7_STOP, S7_HOT_START, S7_COLD_START, S7_READ_VAR, S7_INSERT_BLOCK):
        assert struct.unpack(">H", frame[2:4])[0] == len(frame)
        assert struct.unpack(">H", frame[13:15])[0] == len(frame) - 17


# ---------------------------------------------------------------- stream depth
def depth_config(depth: int) -> Config:
    return Config.model_validate({"decode": {"stream_depth": depth}})


def marker_stream(before: int, after: int, size: int = 1000) -> list[bytes]:
    """Segments of ``size`` bytes carrying MARKER at stream offsets ``before`` and ``after``."""
    payload = bytearray(b"\x00" * (after + 2 * size))
    payload[before : before + len(MARKER)] = MARKER
    payload[after : after + len(MARKER)] = MARKER
    return [bytes(payload[i : i + size]) for i in range(0, len(payload), size)]


@pytest.mark.parametrize(
    ("depth", "offsets"),
    [
        (None, [5000, 1_200_000]),  # the default, 0: unlimited, both are found
        (1 << 20, [5000]),  # Suricata's 1 MiB: the marker at 1.2 MB is beyond it
        (0, [5000, 1_200_000]),
    ],
)
def test_stream_scan_stops_at_the_stream_depth(
    tmp_path: Path, depth: int | None, offsets: list[int]
) -> None:
    config = Config() if depth is None else depth_config(depth)
    rules = tmp_path / "test_rules.yar"
    rules.write_text(TEST_RULES)
    det = YaraScanner(config, YaraSettings(rules=[str(rules)]))
    pcap = save(tmp_path / "c.pcap", tcp_stream(HMI, PLC, 4444, marker_stream(5000, 1_200_000)))
    a = run_analysis(pcap, tmp_path / "out", config, [det])
    assert summary(a.findings) == [("9009002", len(offsets))]  # folded by the aggregator
    assert evidence(a.findings[0])["stream_offset"] == offsets[0]
    reached = a.stats["tcp"].get("stream_depth_reached", 0)
    assert reached == (1 if depth else 0)  # the server sent nothing


def test_match_straddling_the_stream_depth_is_not_found(tmp_path: Path) -> None:
    config = depth_config(4096)
    rules = tmp_path / "test_rules.yar"
    rules.write_text(TEST_RULES)
    det = YaraScanner(config, YaraSettings(rules=[str(rules)]))
    a = run_analysis(
        save(tmp_path / "c.pcap", tcp_stream(HMI, PLC, 4444, marker_stream(1000, 4090))),
        tmp_path / "out",
        config,
        [det],
    )
    assert [evidence(f)["stream_offset"] for f in a.findings] == [1000]


def test_files_are_extracted_beyond_the_stream_depth(tmp_path: Path) -> None:
    config = depth_config(1024)
    rules = tmp_path / "test_rules.yar"
    rules.write_text(TEST_RULES)
    det = YaraScanner(config, YaraSettings(rules=[str(rules)]))
    body = b"0" * 3000 + MARKER + b"1" * 3000
    pcap = save(tmp_path / "c.pcap", http_get(HMI, "192.0.2.80", "/notes.txt", body))
    a = run_analysis(pcap, tmp_path / "out", config, [det])
    # not seen in the stream (beyond 1 KiB), found in the file rebuilt from all its bytes
    assert summary(a.findings) == [("9009002", 1)]
    ev = evidence(a.findings[0])
    assert ev["scope"] == "file" and ev["file"]["size"] == len(body)
    assert a.stats["tcp"]["stream_depth_reached"] >= 1
