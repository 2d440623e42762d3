"""The tshark worker process: tshark's JSON stream -> normalised ``OTEvent`` batches.

Started by ``sentinel.decode.tshark.TsharkSource`` as ``python -m
sentinel.decode.tshark_worker SPEC_JSON`` (SPEC: the tshark command, the enabled protocols,
``max_objects`` and the protocols' ports). It runs tshark, splits its ``-T json`` output into
packets as it streams, turns them into events with ``sentinel.decode.ot`` and writes them to
stdout as length-prefixed pickled batches of ``(flow key, OTEvent)``; the last message is a
dict with ``end``, tshark's exit code, its stderr (tail) and counters. With ``stdin`` in the
SPEC (a live sensor's ``LiveFeed``) tshark reads the worker's own stdin, a pcapng stream whose
packet comments carry the sensor's frame numbers and time stamps. It imports only the
standard library, orjson and the normalisers, so it starts fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import orjson

from sentinel.decode.ot.common import FrameBase, to_int
from sentinel.events import OTEvent

log = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
BATCH = 512  # events per message to the pipeline
READ_CHUNK = 1 << 20
PROTO_NUMBERS = {"tcp": 6, "udp": 17}
_NOISE = ("Running as user", "This could be dangerous", "resetting session")  # tshark -M
_SUMMARY = re.compile(r"^prefilter: (\d+) of (\d+) packets$")


def split_packets(stream: BinaryIO | int, chunk_ends: bool = False) -> Iterator[bytes]:
    """tshark's ``-T json`` array, one packet object at a time, as it streams; with
    ``chunk_ends``, also ``b""`` after the packets of each read (nothing more is waiting), so
    that a live reader can send what it has instead of waiting for a full batch.

    tshark pretty-prints with two spaces per level: a packet object opens with ``"  {"``
    and closes with ``"  }"`` at the start of a line; everything inside is indented
    further, and JSON strings never contain a raw newline, so ``b"\\n  }"`` ends a packet.
    """
    fd = stream if isinstance(stream, int) else stream.fileno()
    buf = bytearray()
    scan = 0
    while True:
        chunk = os.read(fd, READ_CHUNK)
        if not chunk:
            break
        buf += chunk
        start = 0
        while True:
            end = buf.find(b"\n  }", max(scan, start))
            if end < 0:
                break
            opening = buf.find(b"{", start, end)
            if opening >= 0:
                yield bytes(buf[opening : end + 4])
            start = end + 4
        del buf[:start]
        scan = max(0, len(buf) - 3)
        if chunk_ends:
            yield b""


class FrameParser:
    """One tshark packet (``_source.layers``) -> [(flow key, OTEvent)] via the normalisers."""

    def __init__(
        self, protocols: Iterable[str], max_objects: int, ports: dict[str, list[int]]
    ) -> None:
        from sentinel.decode.ot import MODULES

        self.normalisers: list[tuple[tuple[str, ...], Any]] = []
        for p in protocols:
            module = MODULES[p]
            if p == "enip":
                norm = module.Normaliser(max_objects, frozenset(ports.get(p, [44818])))
            else:
                norm = module.Normaliser(max_objects)
            self.normalisers.append((module.LAYERS, norm))
        self.stats: Counter[str] = Counter()
        # With the prefilter, tshark numbers the packets it was given; each carries the
        # capture's frame number and the native path's time stamp in its packet comment.
        self.renumber = False

    def parse(self, raw: bytes) -> list[tuple[tuple, OTEvent]]:
        try:
            packet = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # tshark passes some non-UTF-8 strings through as they are
                packet = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                self.stats["bad_json"] += 1
                return []
        source = packet.get("_source") if isinstance(packet, dict) else None
        layers = source.get("layers") if isinstance(source, dict) else None
        if not isinstance(layers, dict):
            self.stats["bad_json"] += 1
            return []
        base, key = _frame_base(layers)
        if base is None:
            self.stats["frames_without_transport"] += 1
            return []
        if self.renumber:
            origin = _origin(layers)
            if origin is None:
                self.stats["frames_without_origin"] += 1
                return []
            base = base._replace(frame=origin[0], ts=origin[1])
        self.stats["frames"] += 1
        out: list[tuple[tuple, OTEvent]] = []
        for names, norm in self.normalisers:
            if not any(n in layers for n in names):
                continue
            try:
                events = norm.packet(layers, base)
            except Exception:  # a dissection shape we did not foresee: count, never crash
                log.debug("normaliser failed on frame %s", base.frame, exc_info=True)
                self.stats["normaliser_errors"] += 1
                continue
            out.extend((key, ev) for ev in events)
        return out


def _origin(layers: dict[str, Any]) -> tuple[int, float] | None:
    """(frame number, time stamp) the prefilter wrote in the packet's comment."""
    comment = _last(layers.get("pkt_comment"))
    text = comment.get("frame.comment") if comment else None
    if isinstance(text, list):
        text = text[0] if text else None
    if not isinstance(text, str):
        return None
    number, _, ts = text.partition(" ")
    try:
        return int(number), float(ts)
    except ValueError:
        return None


def _last(layer: Any) -> Any:
    if isinstance(layer, list):
        layer = layer[-1] if layer else None
    return layer if isinstance(layer, dict) else None


def _frame_base(layers: dict[str, Any]) -> tuple[Any, tuple]:
    frame = _last(layers.get("frame")) or {}
    ip = _last(layers.get("ip"))
    family = socket.AF_INET
    prefix = "ip"
    if ip is None:
        ip, family, prefix = _last(layers.get("ipv6")), socket.AF_INET6, "ipv6"
    if ip is None:
        return None, ()
    transport = "tcp" if "tcp" in layers else "udp" if "udp" in layers else None
    if transport is None:
        return None, ()
    tl = _last(layers.get(transport)) or {}
    src, dst = ip.get(f"{prefix}.src"), ip.get(f"{prefix}.dst")
    sport, dport = to_int(tl.get(f"{transport}.srcport")), to_int(tl.get(f"{transport}.dstport"))
    if not isinstance(src, str) or not isinstance(dst, str) or sport is None or dport is None:
        return None, ()
    try:
        key = (
            socket.inet_pton(family, src),
            sport,
            socket.inet_pton(family, dst),
            dport,
            PROTO_NUMBERS[transport],
        )
    except OSError:
        return None, ()
    try:
        ts = float(frame.get("frame.time_epoch", "0"))
    except ValueError:
        ts = 0.0
    number = to_int(frame.get("frame.number"), 0) or 0
    return FrameBase(ts, number, transport, src, sport, dst, dport), key


# Link types the prefilter looks into (LINKTYPE_* of the pcap and pcapng specifications).
ETHERNET, NULL, LOOP, RAW, SLL, SLL2 = 1, 0, 108, 101, 113, 276
RAW_IP = frozenset({RAW, 12, 14, 228, 229})
VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100})
IPV6_EXTENSIONS = frozenset({0, 43, 60, 51})  # hop-by-hop, routing, destination options, AH
_U16 = struct.Struct(">H")
_PORTS = struct.Struct(">HH")
_SHB = struct.Struct("<IIIHHqI")
_IDB = struct.Struct("<IIHHIHHBBBBHHI")
_EPB = struct.Struct("<IIIII")
_LENS = struct.Struct("<II")
_OPT = struct.Struct("<HH")


def may_carry(linktype: int, frame: bytes, ports: frozenset[int]) -> bool:
    """Whether a frame can belong to an OT conversation: TCP or UDP with one of ``ports``, an IP
    fragment (ports unknown), or a link type this function does not read (handed on)."""
    try:
        if linktype == ETHERNET:
            ethertype, off = _U16.unpack_from(frame, 12)[0], 14
            while ethertype in VLAN_TAGS:
                ethertype, off = _U16.unpack_from(frame, off + 2)[0], off + 4
            if ethertype not in (0x0800, 0x86DD):
                return False
        elif linktype == SLL:
            off = 16
        elif linktype == SLL2:
            off = 20
        elif linktype in (NULL, LOOP):
            off = 4
        elif linktype in RAW_IP:
            off = 0
        else:
            return True
        version = frame[off] >> 4
        if version == 4:
            if _U16.unpack_from(frame, off + 6)[0] & 0x3FFF:
                return True  # a fragment: its ports are in the first one only
            proto, l4 = frame[off + 9], off + (frame[off] & 0x0F) * 4
        elif version == 6:
            proto, l4 = frame[off + 6], off + 40
            while proto in IPV6_EXTENSIONS:
                length = (frame[l4 + 1] + 2) * 4 if proto == 51 else (frame[l4 + 1] + 1) * 8
                proto, l4 = frame[l4], l4 + length
            if proto == 44:
                return True
        else:
            return False
        if proto not in (6, 17):
            return False
        sport, dport = _PORTS.unpack_from(frame, l4)
        return sport in ports or dport in ports
    except (IndexError, struct.error):
        return False  # too short to carry anything the native path could use either


class Prefilter:
    """Reads the capture exactly as the native path does (``CaptureFile``: same records, same
    frame numbers, same time stamps, gzip and damaged files alike) and writes, as a pcapng
    stream, only the packets that ``may_carry`` OT traffic, each with a packet comment
    ``"<frame number> <time stamp>"`` so that events keep the native path's numbering and
    time. tshark then dissects a fraction of a Modbus-heavy capture instead of all of it.
    Runs as a process of its own (``python -m sentinel.decode.tshark_worker --prefilter``)
    piped into tshark, so that it never waits for the normalisers."""

    def __init__(self, path: str, ports: frozenset[int]) -> None:
        self.path = path
        self.ports = ports
        self.read = self.passed = 0

    def run(self, out: BinaryIO) -> None:
        from sentinel.capture.pcapfile import CaptureFile

        ports, interfaces = self.ports, {}
        write = out.write
        write(_SHB.pack(0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        with CaptureFile(self.path) as capture:
            for number, (ts, linktype, frame) in enumerate(capture, 1):
                self.read = number
                if not may_carry(linktype, frame, ports):
                    continue
                if linktype not in interfaces:  # if_tsresol = 9: nanoseconds
                    interfaces[linktype] = len(interfaces)
                    write(_IDB.pack(1, 32, linktype & 0xFFFF, 0, 0, 9, 1, 9, 0, 0, 0, 0, 0, 32))
                self.passed += 1
                ns = int(ts * 1e9)
                comment = f"{number} {ts!r}".encode()
                option = _OPT.pack(1, len(comment)) + comment + b"\0" * (-len(comment) % 4)
                option += b"\0\0\0\0"  # opt_endofopt
                pad = -len(frame) % 4
                size = 32 + len(frame) + pad + len(option)
                header = _EPB.pack(6, size, interfaces[linktype], ns >> 32, ns & 0xFFFFFFFF)
                write(header + _LENS.pack(len(frame), len(frame)) + frame + b"\0" * pad)
                write(option + size.to_bytes(4, "little"))


def prefilter_main(path: str, ports: list[int]) -> int:
    """``--prefilter FILE PORTS_JSON``: the filtered pcapng on stdout (for tshark's stdin)."""
    out = os.fdopen(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)
    prefilter = Prefilter(path, frozenset(ports))
    try:
        prefilter.run(out)
        out.flush()
    except BrokenPipeError:
        return 0  # tshark stopped reading (it failed; its own message says why)
    except Exception as exc:  # a capture the native path reports too: one line, no traceback
        print(f"prefilter: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"prefilter: {prefilter.passed} of {prefilter.read} packets", file=sys.stderr)
    return 0


class Output:
    """Length-prefixed pickled messages to stdout from a thread of their own, so that tshark and
    the normalisers keep going while the pipeline is busy (it reads once a second of packet
    time); at most ``limit`` messages wait, then the worker (and tshark) wait too."""

    def __init__(self, limit: int) -> None:
        self.out = os.fdopen(sys.stdout.fileno(), "wb", buffering=0, closefd=False)
        with contextlib.suppress(OSError, AttributeError):  # Linux: a 1 MiB pipe if allowed
            import fcntl

            fcntl.fcntl(self.out.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max(limit, 1))
        self.broken = False
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def send(self, obj: Any) -> None:
        if not self.broken:
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
            self.queue.put(HEADER.pack(len(data)) + data)

    def _write(self) -> None:
        while (data := self.queue.get()) is not None:
            try:
                self.out.write(data)
            except (BrokenPipeError, OSError):  # the pipeline went away
                self.broken = True
                while self.queue.get() is not None:  # let senders finish
                    pass
                return

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


def _tshark_version(cmd: list[str], result: dict[str, str]) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([cmd[0], "-v"], capture_output=True, text=True, timeout=60).stdout
        for word in out.split():
            if word.count(".") == 2 and word.replace(".", "").isdigit():
                result["version"] = word
                return


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds worker_main, which stops its children


def worker_main(spec: dict[str, Any]) -> int:
    """Run tshark, normalise its packets, write length-prefixed pickled batches to stdout."""
    signal.signal(signal.SIGTERM, _terminate)
    children: list[subprocess.Popen] = []
    try:
        return _work(spec, children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _work(spec: dict[str, Any], children: list[subprocess.Popen]) -> int:
    output = Output(max(4, spec.get("max_pending_events", 100_000) // BATCH))
    send = output.send
    parser = FrameParser(spec["protocols"], spec["max_objects"], spec["ports"])
    started = time.perf_counter()
    feeder = None
    try:
        stdin: Any = subprocess.DEVNULL
        if spec.get("stdin"):  # a live sensor's feed (pcapng with frame comments): tshark's
            stdin = sys.stdin.fileno()
            parser.renumber = True
        elif spec.get("prefilter"):
            pf = spec["prefilter"]
            feeder = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sentinel.decode.tshark_worker",
                    "--prefilter",
                    pf["file"],
                    json.dumps(pf["ports"]),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            children.append(feeder)
            stdin = feeder.stdout
            parser.renumber = True
        proc = subprocess.Popen(
            spec["cmd"], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        children.append(proc)
        if feeder is not None and feeder.stdout is not None:
            feeder.stdout.close()  # tshark holds it now
    except OSError as exc:
        send(
            {"end": True, "error": f"cannot run tshark: {exc.strerror or exc}", "returncode": None}
        )
        output.close()
        return 1
    messages: deque[str] = deque(maxlen=20)
    version: dict[str, str] = {}

    def read_stderr(stream: Any) -> None:
        for line in iter(stream.readline, b""):
            text = line.decode("utf-8", "replace").strip()
            if text and not any(n in text for n in _NOISE):
                messages.append(text[:500])

    helpers = [
        threading.Thread(target=read_stderr, args=(proc.stderr,), daemon=True),
        threading.Thread(target=_tshark_version, args=(spec["cmd"], version), daemon=True),
    ]
    if feeder is not None:
        helpers.append(threading.Thread(target=read_stderr, args=(feeder.stderr,), daemon=True))
    for thread in helpers:
        thread.start()
    batch: list[tuple[tuple, OTEvent]] = []
    packets = 0
    live = bool(spec.get("stdin"))  # events go out as soon as tshark has written them
    assert proc.stdout is not None
    for raw in split_packets(proc.stdout, chunk_ends=live):
        if not raw:  # live: the end of what tshark has written so far
            if batch:
                send(batch)
                batch = []
            continue
        packets += 1
        batch.extend(parser.parse(raw))
        if len(batch) >= BATCH:
            send(batch)
            batch = []
        if output.broken:  # the pipeline went away: stop tshark and leave quietly
            for child in (proc, feeder):
                if child is not None:
                    child.kill()
                    child.wait()
            output.close()
            return 0
    if batch:
        send(batch)
    returncode = proc.wait()
    if feeder is not None and feeder.wait() != 0 and returncode == 0:
        returncode = feeder.returncode
    for thread in helpers:
        thread.join(timeout=5)
    stats = dict(parser.stats)
    stats["packets"] = packets
    for message in list(messages):
        m = _SUMMARY.match(message)
        if m:
            messages.remove(message)
            stats["prefilter_passed"], stats["prefilter_read"] = int(m[1]), int(m[2])
    for module in parser.normalisers:
        for k, v in getattr(module[1], "stats", {}).items():
            stats[k] = stats.get(k, 0) + v
    send(
        {
            "end": True,
            "returncode": returncode,
            "messages": list(messages),
            "stats": stats,
            "version": version.get("version", "unknown"),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    output.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "--prefilter":
        return prefilter_main(args[1], json.loads(args[2]))
    if len(args) != 1:
        print(
            "usage: python -m sentinel.decode.tshark_worker SPEC_JSON (run by the pipeline)",
            file=sys.stderr,
        )
        return 2
    return worker_main(json.loads(args[0]))


if __name__ == "__main__":
    sys.exit(main())
