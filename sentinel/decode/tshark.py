"""The tshark-backed OT source: DNP3, IEC 60870-5-104, S7comm, EtherNet/IP-CIP and BACnet/IP.

Wireshark's dissectors already decode these protocols; Sentinel runs ``tshark`` beside its
native Modbus path and turns its dissections into ``OTEvent``s (``sentinel.decode.ot``).

Design
------
*Two processes, no cost on the Modbus path.* A worker process (``python -m
sentinel.decode.tshark_worker``) starts ``tshark`` with a display filter for the enabled
protocols and ``-T json``, splits tshark's stream into packets, normalises them into events
and sends them in batches (pickled, length-prefixed) through a pipe. tshark reads the same
capture file (or interface), through the worker's *prefilter* by default (``ot.prefilter``):
the worker reads the file as the native path does and hands tshark only the packets on the
enabled protocols' ports (and IP fragments), so that tshark does not dissect every Modbus
frame of a Modbus-heavy capture; frame numbers and time stamps are the native path's. On a
live interface the same selection is tshark's capture filter. tshark and the JSON parsing
run on other cores; the pipeline's process only unpickles finished events.

*Why JSON.* ``-T json --no-duplicate-keys`` was chosen over pyshark and over ``-T ek`` /
``-T fields`` after measuring (bench/bench_ot.py, docs/ot-protocols.md): pyshark drives the
same tshark through PDML/XML (or JSON) and builds Python objects per field, several times
slower; ``-T fields`` and ``-T ek`` are flat, so a frame with several PDUs, objects or items
(IEC 104 APDUs, DNP3 object headers, S7 items, CIP service packets) cannot be told apart
reliably, while the JSON tree keeps them apart.

*Joining the native flows.* Every event carries tshark's frame number and the packet's
5-tuple. ``OTBridge`` looks the 5-tuple up in the flow table's index (raw address bytes,
ports, IP protocol -> (flow, is_orig)), so the event gets the flow's ``uid``, its oriented
``conn`` and ``is_orig``, exactly as the native path's events. Events are delivered in
tshark's order from the pipeline's once-a-second tick (packet time), each once the native
path has processed its frame, and at the end of the capture before the flow table is flushed.
While more than ``ot.max_pending_events`` wait, the worker (and tshark) are left to wait in
turn. An event that arrives after its flow ended (tshark lagging behind) finds it among the
last ``ot.max_ended_flows`` ended flows, by 5-tuple and frame range, so that a reused 5-tuple
gets the right connection. Capture frame numbers are the same for both paths (both count
every record of the file); on a live interface, where they are not, packet time decides.

*Off means off.* With ``ot.enabled: false``, ``sentinel analyze --no-ot`` or no enabled
protocol, no bridge exists and nothing changes on the native path. With ``ot.lazy_start``
(the default) tshark is only started when the first flow on an enabled protocol's port is
created (the flow table's analyzer choice is wrapped until then: a check per new flow, not
per packet), so a capture without OT traffic costs nothing either. Without tshark the bridge
only waits for that first OT flow to say, once, how to install it; the Modbus path is
unaffected either way.

*Live capture.* ``sentinel run`` feeds tshark the frames its own sensor captured
(``OTInput(interfaces=..., feed=LiveFeed(...))``): the capture thread offers every frame to
the ``LiveFeed`` with its frame number (the pipeline's), which keeps those that ``may_carry``
OT traffic in a bounded queue (full: the frame is dropped for tshark and counted, the capture
never waits); a writer thread writes them as a pcapng stream, each with the prefilter's
``"<frame number> <time stamp>"`` comment, into the worker's stdin, which is tshark's
(``tshark -r - -l -M ot.live_session_reset``). Events then carry the native frame numbers and
are joined and delivered exactly as from a file, from the once-a-second tick (heartbeats keep
it going when the network is quiet). At the end of the run the feed is closed: tshark reads
EOF, finishes and exits, and ``drain`` delivers the last events (at most
``ot.finish_timeout`` seconds, ``LIVE_FINISH_TIMEOUT`` when 0). The worker runs in a session
of its own, so a Ctrl-C meant for the service does not kill it before the drain, and it ends
by itself when the service dies (its stdin reaches EOF). ``OTInput(interfaces=(...))`` without
a feed runs ``tshark -i IFACE -l`` with the capture filter; its events are joined by 5-tuple
and packet time, and ``drain`` takes what has arrived and stops it (a live tshark never ends).
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import json
import logging
import os
import pickle
import queue
import select
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sentinel.decode.ot_settings import PROTOCOLS, OTSettings, ot_settings
from sentinel.decode.tshark_worker import (
    _EPB,
    _IDB,
    _LENS,
    _OPT,
    _SHB,
    HEADER,
    READ_CHUNK,
    may_carry,
)
from sentinel.events import ConnId, OTEvent

if TYPE_CHECKING:
    from sentinel.decode.flow import Flow, FlowTable

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "tshark (Wireshark's command-line analyser) was not found, so DNP3, IEC 60870-5-104, "
    "S7comm, EtherNet/IP-CIP and BACnet are not decoded (Modbus/TCP is). Install it with "
    "`sudo apt-get install tshark` (Debian/Ubuntu), `sudo dnf install wireshark-cli` "
    "(Fedora/RHEL) or `brew install wireshark` (macOS), or set `ot.tshark` to its path; "
    "`sentinel analyze --no-ot` silences this."
)
MAX_CHUNKS_PER_POLL = 64  # at most 64 MiB read per tick
LIVE_FINISH_TIMEOUT = 10.0  # seconds a live run waits for tshark at its end (finish_timeout 0)
BASE_LAYERS = ("frame", "ip", "ipv6", "tcp", "udp")
DEFAULT_DISSECTOR_PORTS = {  # ports tshark already hands to each protocol's dissector
    "dnp3": {20000},
    "iec104": {2404},
    "s7comm": {102},
    "enip": {44818, 2222},
    "bacnet": {47808},
}

# ``sentinel analyze --no-ot`` / ``--tshark`` (sentinel/decode/cli.py) for this process.
_cli_override: dict[str, Any] = {}


def set_cli_override(enabled: bool | None = None, tshark: str | None = None) -> None:
    """Command-line overrides of the config's ``ot`` section (None: keep the config's)."""
    _cli_override.clear()
    if enabled is not None:
        _cli_override["enabled"] = enabled
    if tshark is not None:
        _cli_override["tshark"] = tshark


def effective_settings(config: Any) -> OTSettings:
    settings = ot_settings(config)
    if _cli_override:
        settings = settings.model_copy(update=_cli_override)
    return settings


# ---------------------------------------------------------------------------- tshark itself
def find_tshark(name: str = "tshark") -> str | None:
    """The tshark executable (a name on PATH or a path), or None."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name)


class LiveFeed:
    """The frames a live sensor captured, handed to tshark through a pipe (module docstring).

    ``offer`` (the capture thread) never blocks: a frame that cannot carry OT traffic is
    ignored, one that finds the queue full is dropped for tshark (``dropped``). ``attach``
    starts the writer thread on the worker's stdin; frames offered before wait in the queue.
    ``close`` lets the writer write what is queued, then closes the pipe (tshark reads EOF);
    ``disable`` (no tshark) makes ``offer`` a no-op and discards the queue.
    """

    def __init__(self, ports: frozenset[int], max_frames: int = 65536) -> None:
        self.ports = ports
        self.offered = self.passed = self.dropped = self.written = 0
        self.error: str | None = None
        self._queue: queue.Queue[tuple[int, float, bytes]] = queue.Queue(max_frames)
        self._closing = threading.Event()
        self._disabled = False
        self._thread: threading.Thread | None = None

    def offer(self, number: int, ts: float, frame: bytes) -> None:
        """Frame ``number`` of the run (as the pipeline counts them), Ethernet."""
        if self._disabled or self._closing.is_set():
            return
        self.offered += 1
        if not may_carry(1, frame, self.ports):
            return
        try:
            self._queue.put_nowait((number, ts, frame))
            self.passed += 1
        except queue.Full:
            self.dropped += 1

    def attach(self, pipe: Any) -> None:
        self._thread = threading.Thread(
            target=self._write, args=(pipe,), name="sentinel-ot-feed", daemon=True
        )
        self._thread.start()

    def disable(self) -> None:
        self._disabled = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then EOF for tshark (waits at most ``timeout`` seconds)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        out = {
            "frames_offered": self.offered,
            "frames_to_tshark": self.written,
            "frames_dropped": self.dropped,
        }
        if self.error:
            out["error"] = self.error
        return out

    def _write(self, pipe: Any) -> None:
        get = self._queue.get
        try:
            pipe.write(_SHB.pack(0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
            # One Ethernet interface, nanosecond time stamps (if_tsresol = 9).
            pipe.write(_IDB.pack(1, 32, 1, 0, 0, 9, 1, 9, 0, 0, 0, 0, 0, 32))
            pipe.flush()
            while True:
                try:
                    item = get(timeout=0.2)
                except queue.Empty:
                    if self._closing.is_set():
                        break
                    continue
                batch = [item]
                with contextlib.suppress(queue.Empty):
                    while len(batch) < 256:
                        batch.append(self._queue.get_nowait())
                pipe.write(b"".join(_epb(*it) for it in batch))
                pipe.flush()
                self.written += len(batch)
        except (BrokenPipeError, OSError, ValueError) as exc:  # the worker went away
            self.error = f"{type(exc).__name__}: {exc}"
            self.disable()
        finally:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()


def _epb(number: int, ts: float, frame: bytes) -> bytes:
    """An Enhanced Packet Block with the ``"<frame number> <time stamp>"`` comment (as the
    prefilter writes them, ``sentinel.decode.tshark_worker.Prefilter``)."""
    ns = int(ts * 1e9)
    comment = f"{number} {ts!r}".encode()
    option = _OPT.pack(1, len(comment)) + comment + b"\0" * (-len(comment) % 4) + b"\0\0\0\0"
    pad = -len(frame) % 4
    size = 32 + len(frame) + pad + len(option)
    header = _EPB.pack(6, size, 0, ns >> 32, ns & 0xFFFFFFFF)
    return (
        header
        + _LENS.pack(len(frame), len(frame))
        + frame
        + b"\0" * pad
        + option
        + size.to_bytes(4, "little")
    )


@dataclass(frozen=True)
class OTInput:
    """What tshark reads: a capture file, live interfaces, or a live sensor's ``feed``."""

    file: str | None = None
    interfaces: tuple[str, ...] = ()
    feed: LiveFeed | None = field(default=None, compare=False)

    @property
    def live(self) -> bool:
        return self.file is None

    @property
    def numbered(self) -> bool:
        """Whether events carry the native path's frame numbers (joined by frame)."""
        return self.file is not None or self.feed is not None


def tshark_command(tshark: str, settings: OTSettings, source: OTInput) -> list[str]:
    """The tshark command line (no shell: a list of arguments)."""
    from sentinel.decode.ot import MODULES

    protocols = settings.enabled_protocols()
    layers: list[str] = list(BASE_LAYERS)
    if (settings.prefilter and source.file is not None) or source.feed is not None:
        layers.append("pkt_comment")  # the prefilter's (the feed's) frame number and time
    filters: list[str] = []
    for p in protocols:
        layers += MODULES[p].LAYERS
        filters.append(MODULES[p].FILTER)
    cmd = [tshark, "-n"]
    if source.feed is not None:  # the worker's stdin: the sensor's frames, as they come
        cmd += ["-r", "-", "-l"]
        if settings.live_session_reset:
            cmd += ["-M", str(settings.live_session_reset)]
    elif source.file is not None:
        # With the prefilter the worker feeds tshark the capture's OT packets on stdin.
        cmd += ["-r", "-" if settings.prefilter else source.file]
    else:
        for iface in source.interfaces:
            cmd += ["-i", iface]
        cmd += ["-l"]
        if settings.live_session_reset:
            cmd += ["-M", str(settings.live_session_reset)]
        if settings.prefilter:
            cmd += ["-f", capture_filter(settings.server_ports())]
    cmd += ["-Y", " or ".join(filters), "-T", "json", "--no-duplicate-keys", "-J", " ".join(layers)]
    for p in protocols:
        extra = [
            port for port in settings.protocol(p).ports if port not in DEFAULT_DISSECTOR_PORTS[p]
        ]
        for port in extra:
            for transport in MODULES[p].TRANSPORTS:
                cmd += ["-d", f"{transport}.port=={port},{MODULES[p].DISSECTOR}"]
    for pref in settings.tshark_preferences:
        cmd += ["-o", pref]
    return cmd


def capture_filter(ports: frozenset[int]) -> str:
    """The BPF equivalent of the prefilter for live capture: the OT ports and IPv4 fragments."""
    return " or ".join([*(f"port {p}" for p in sorted(ports)), "(ip[6:2] & 0x3fff != 0)"])


def worker_spec(cmd: list[str], settings: OTSettings, source: OTInput) -> dict[str, Any]:
    """What the worker process is told (``python -m sentinel.decode.tshark_worker SPEC``)."""
    protocols = settings.enabled_protocols()
    spec: dict[str, Any] = {
        "cmd": cmd,
        "protocols": protocols,
        "max_objects": settings.max_objects,
        "ports": {p: settings.protocol(p).ports for p in protocols},
        "max_pending_events": settings.max_pending_events,
    }
    if settings.prefilter and source.file is not None:
        spec["prefilter"] = {"file": source.file, "ports": sorted(settings.server_ports())}
    if source.feed is not None:
        spec["stdin"] = True  # tshark reads the feed's pcapng stream from the worker's stdin
    return spec


# ---------------------------------------------------------------------------- the source
class TsharkSource:
    """The worker process seen from the pipeline: start, poll (non-blocking), finish."""

    def __init__(self, cmd: list[str], settings: OTSettings, source: OTInput) -> None:
        spec = worker_spec(cmd, settings, source)
        env = dict(os.environ)
        feed = source.feed
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel.decode.tshark_worker", json.dumps(spec)],
            stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            # Fed live: a terminal's Ctrl-C (or a group signal) must not kill it before the
            # drain; it ends with EOF on its stdin, which also happens when the service dies.
            start_new_session=feed is not None,
        )
        if feed is not None:
            feed.attach(self.proc.stdin)
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._buf = bytearray()
        self.end: dict[str, Any] | None = None
        self.eof = False

    def _frames(self) -> list[Any]:
        out: list[Any] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if len(buf) - pos - 4 < size:
                break
            out.append(pickle.loads(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        del buf[:pos]
        return out

    def _read(self, block: bool) -> bool:
        """Read what is there (or wait for something when ``block``); False at EOF."""
        for _ in range(MAX_CHUNKS_PER_POLL):
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                if not block:
                    return True
                select.select([self._fd], [], [], 1.0)
                continue
            if not chunk:
                self.eof = True
                return False
            self._buf += chunk
            if block:
                return True
        return True

    def poll(self) -> list[tuple[tuple, OTEvent]]:
        """Events available now, without waiting."""
        if not self.eof:
            self._read(block=False)
        return self._collect()

    def wait(self, deadline: float | None) -> Iterator[list[tuple[tuple, OTEvent]]]:
        """Batches until the worker ends (or the deadline passes)."""
        while not self.eof:
            if deadline is not None and time.monotonic() > deadline:
                break
            self._read(block=True)
            items = self._collect()
            if items:
                yield items
        items = self._collect()
        if items:
            yield items

    def _collect(self) -> list[tuple[tuple, OTEvent]]:
        items: list[tuple[tuple, OTEvent]] = []
        for msg in self._frames():
            if isinstance(msg, dict) and msg.get("end"):
                self.end = msg
            elif isinstance(msg, list):
                items.extend(msg)
        return items

    def close(self) -> str:
        """Stop the worker (and tshark) if still running; its stderr (a crash) if any."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = b""
        if proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                err = proc.stderr.read() or b""
            proc.stderr.close()
        if proc.stdout is not None:
            proc.stdout.close()
        return err.decode("utf-8", "replace")[-2000:]


# ---------------------------------------------------------------------------- the bridge
class _Ended:
    __slots__ = ("conn", "first_frame", "first_ts", "is_orig_key", "last_frame", "last_ts", "uid")

    def __init__(self, flow: Flow) -> None:
        self.uid = flow.uid
        self.conn = flow.conn
        self.first_frame, self.last_frame = flow.frame, flow.last_frame
        self.first_ts, self.last_ts = flow.first_ts, flow.last_ts
        self.is_orig_key = flow.key


def ot_record(ev: OTEvent) -> dict[str, Any]:
    """The ot.jsonl record (docs/ot-protocols.md); ``data`` (payload bytes) is never written."""
    c = ev.conn
    rec: dict[str, Any] = {
        "ts": ev.ts,
        "uid": ev.uid,
        "orig_h": c.orig_h,
        "orig_p": c.orig_p,
        "resp_h": c.resp_h,
        "resp_p": c.resp_p,
        "is_orig": ev.is_orig,
        "frame": ev.frame,
        "transport": ev.transport,
        "protocol": ev.protocol,
        "direction": ev.direction,
        "operation": ev.operation,
        "function": ev.function,
        "code": ev.code,
        "unit": ev.unit,
        "objects": list(ev.objects),
        "status": ev.status,
        "flags": list(ev.flags),
    }
    rec.update(ev.detail)
    return rec


class Dnp3Log:
    """Zeek's dnp3.log: one record per request/reply pair of a connection.

    As Zeek's ``base/protocols/dnp3/main.zeek``: a request sets ``fc_request`` (a second
    request before any reply overwrites it), a reply sets ``fc_reply`` and ``iin`` and writes
    the record, and a request still open when its connection ends is written without reply.
    ``ts`` is the time of the last message that went into the record (Zeek's
    ``network_time()`` at each header).
    """

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        self.write = write
        self.open: OrderedDict[Any, dict[str, Any]] = OrderedDict()

    def event(self, ev: OTEvent) -> None:
        if ev.code is None:  # a link frame without an application fragment (bad data CRC)
            return
        key = ev.uid or ev.conn
        rec = self.open.get(key)
        if rec is None:
            c = ev.conn
            rec = {
                "ts": ev.ts,
                "uid": ev.uid,
                "orig_h": c.orig_h,
                "orig_p": c.orig_p,
                "resp_h": c.resp_h,
                "resp_p": c.resp_p,
                "fc_request": None,
                "fc_reply": None,
                "iin": None,
            }
            self.open[key] = rec
        rec["ts"] = ev.ts
        if ev.code is not None and ev.code < 0x80:
            rec["fc_request"] = ev.function
            if len(self.open) > 65536:  # bounded: flush the oldest open request
                old_key, old = next(iter(self.open.items()))
                if old_key != key:
                    del self.open[old_key]
                    self.write(old)
            return
        rec["fc_reply"] = ev.function
        rec["iin"] = ev.detail.get("dnp3", {}).get("iin")
        del self.open[key]
        self.write(rec)

    def flow_ended(self, uid: str) -> None:
        rec = self.open.pop(uid, None)
        if rec is not None:
            self.write(rec)

    def flush(self) -> None:
        for rec in self.open.values():
            self.write(rec)
        self.open.clear()


class OTBridge:
    """Joins the tshark source to one pipeline run (see the module docstring)."""

    def __init__(
        self, pipeline: Any, flows: FlowTable, settings: OTSettings, source: OTInput
    ) -> None:
        self.pipeline = pipeline
        self.flows = flows
        self.settings = settings
        self.input = source
        # Events carry the native frame numbers (a file, a live feed): joined by frame; else
        # (tshark on a live interface) by packet time.
        self._by_time = not source.numbered
        self.ports = settings.server_ports()
        self.tshark = find_tshark(settings.tshark)
        self.source: TsharkSource | None = None
        self.status = "idle"
        self.counts: Counter[str] = Counter()
        self.by_protocol: Counter[str] = Counter()
        self.by_operation: Counter[str] = Counter()
        self.worker_end: dict[str, Any] | None = None
        self.messages: list[str] = []
        self._pending: deque[tuple[tuple, OTEvent]] = deque()
        self._ended: dict[tuple, list[_Ended]] = {}
        self._ended_order: deque[tuple] = deque()
        self._dnp3_ends: list[tuple[float, str]] = []  # heap of (last frame or ts, uid)
        self._dnp3_ports = frozenset(settings.dnp3.ports) if settings.dnp3.enabled else frozenset()
        # Sinks and detectors, resolved once.
        sinks = pipeline._sinks
        self._ot_writers = [s.ot for s in sinks if _overrides(s, "ot")]
        self._dnp3_writers = [s.dnp3 for s in sinks if _overrides(s, "dnp3")]
        self._handlers = pipeline._handlers.get("on_ot", [])
        self._raise = pipeline._raise
        self._inventory = pipeline.inventory
        p = getattr(pipeline, "pseudonymizer", None)  # privacy: identity of unknown devices
        self._scrub = p.scrub_ot if p is not None else None
        self.dnp3_log = Dnp3Log(self._write_dnp3) if self._dnp3_writers else None
        # Flow ends: remember the flow for late events (and close its DNP3 record).
        self._on_flow_end = flows.on_flow_end
        flows.on_flow_end = self._flow_ended
        if settings.lazy_start and not source.live:
            self._choose = flows.choose_analyzer
            flows.choose_analyzer = self._choose_and_watch  # type: ignore[method-assign]
        else:
            self._start()

    @classmethod
    def create(cls, pipeline: Any, flows: FlowTable, source: OTInput | None) -> OTBridge | None:
        """A bridge for this run, or None when OT decoding is off (nothing is hooked)."""
        if source is None:
            return None
        settings = effective_settings(pipeline.config)
        if not settings.enabled_protocols():
            return None
        return cls(pipeline, flows, settings, source)

    # -- starting
    def _choose_and_watch(self, flow: Flow, first_payload: bytes | None) -> Any:
        if first_payload is None and (
            flow.conn.resp_p in self.ports or flow.conn.orig_p in self.ports
        ):
            self.flows.choose_analyzer = self._choose  # type: ignore[method-assign]
            self._start()
        return self._choose(flow, first_payload)

    def _start(self) -> None:
        feed = self.input.feed
        if self.tshark is None:
            self.status = "tshark-missing"
            if feed is not None:
                feed.disable()
            _warn_missing()
            return
        cmd = tshark_command(self.tshark, self.settings, self.input)
        log.debug("starting %s", cmd)
        try:
            self.source = TsharkSource(cmd, self.settings, self.input)
        except OSError as exc:
            self.status = "failed"
            if feed is not None:
                feed.disable()
            self.messages.append(f"cannot start the tshark worker: {exc}")
            log.warning("OT decoding: cannot start the tshark worker: %s", exc)
            return
        self.status = "running"

    # -- the pipeline's hooks
    def pump(self, now: float, processed: int) -> None:
        """Deliver the events of the frames the native path has processed (``processed``
        frames, packet time ``now``); called by the pipeline once a second of packet time."""
        if self.source is None:
            return
        if len(self._pending) < self.settings.max_pending_events:
            items = self.source.poll()  # else let the worker (and tshark) wait for us
            if items:
                self._pending.extend(items)
        if self._pending:
            self._deliver(now, processed)

    def drain(self) -> None:
        """End of the capture: wait for tshark, deliver every event, before flows end."""
        if self.source is None:
            return
        if self.input.live and self.input.feed is None:
            # tshark on an interface never ends: deliver what it has sent, then stop it.
            self._pending.extend(self.source.poll())
            self._deliver(None, None)
            self._finish_source()
            return
        timeout = self.settings.finish_timeout
        if self.input.feed is not None:
            # EOF once the queue is written: tshark dissects what it was given, then exits.
            # No waiting here: the writer may wait for tshark, which waits for us to read.
            self.input.feed.close(timeout=0)
            timeout = timeout or LIVE_FINISH_TIMEOUT
        deadline = time.monotonic() + timeout if timeout else None
        for items in self.source.wait(deadline):
            self._pending.extend(items)
            self._deliver(None, None)
        self._deliver(None, None)
        if not self.source.eof:
            self.messages.append(f"tshark did not finish within ot.finish_timeout ({timeout} s)")
        self._finish_source()

    def close(self) -> None:
        """Always called at the end of a run (also after an error)."""
        if self.input.feed is not None:
            self.input.feed.disable()
            self.input.feed.close(timeout=1.0)
        if self.source is not None:
            self._finish_source()
        if self.dnp3_log is not None:
            while self._dnp3_ends:
                self.dnp3_log.flow_ended(heapq.heappop(self._dnp3_ends)[1])
            self.dnp3_log.flush()

    def _finish_source(self) -> None:
        source = self.source
        if source is None:
            return
        self.source = None
        crash = source.close()
        end = source.end
        self.worker_end = end
        if end is None:
            self.status = "failed"
            detail = crash.strip().splitlines()[-1] if crash.strip() else "no result"
            self.messages.append(f"the tshark worker stopped early: {detail}")
            log.warning("OT decoding: the tshark worker stopped early: %s", detail)
            return
        self.messages += end.get("messages", [])
        if end.get("error"):
            self.status = "failed"
            self.messages.append(end["error"])
            log.warning("OT decoding: %s", end["error"])
        elif end.get("returncode") not in (0, None):
            self.status = "failed" if not self.counts["events"] else "partial"
            text = "; ".join(end.get("messages", [])) or f"exit code {end.get('returncode')}"
            log.warning("OT decoding: tshark exited with code %s: %s", end.get("returncode"), text)
        else:
            self.status = "ok"

    def _flow_ended(self, flow: Flow) -> None:
        key = flow.key
        entries = self._ended.get(key)
        if entries is None:
            entries = self._ended[key] = []
        entries.append(_Ended(flow))
        self._ended_order.append(key)
        if len(self._ended_order) > self.settings.max_ended_flows:
            old = self._ended_order.popleft()
            olds = self._ended.get(old)
            if olds:
                olds.pop(0)
                if not olds:
                    del self._ended[old]
        if self.dnp3_log is not None and (key[1] in self._dnp3_ports or key[3] in self._dnp3_ports):
            # Its open DNP3 record is written once every event up to its last frame has been
            # delivered (Zeek writes it when the connection is removed).
            mark = flow.last_ts if self._by_time else flow.last_frame
            heapq.heappush(self._dnp3_ends, (mark, flow.uid))
            if len(self._dnp3_ends) > self.settings.max_ended_flows:
                self.dnp3_log.flow_ended(heapq.heappop(self._dnp3_ends)[1])
        self._on_flow_end(flow)

    # -- joining and delivering
    def _resolve(self, key: tuple, ev: OTEvent) -> tuple[str, ConnId, bool] | None:
        live = self._by_time
        entry = self.flows.index.get(key)
        if entry is not None:
            flow, is_orig = entry
            if (flow.first_ts <= ev.ts) if live else (flow.frame <= ev.frame):
                return flow.uid, flow.conn, is_orig
        src, sport, dst, dport, proto = key
        for oriented, is_orig in (
            ((src, sport, dst, dport, proto), True),
            ((dst, dport, src, sport, proto), False),
        ):
            entries = self._ended.get(oriented)
            if not entries:
                continue
            for e in reversed(entries):
                if (
                    (e.first_ts <= ev.ts <= e.last_ts + 1.0)
                    if live
                    else (e.first_frame <= ev.frame <= e.last_frame)
                ):
                    return e.uid, e.conn, is_orig
        return None

    def _deliver(self, now: float | None, processed: int | None) -> None:
        """Deliver pending events in tshark's (frame) order, up to the first one whose frame
        the native path has not processed yet; everything when ``processed`` is None."""
        pending = self._pending
        live = self._by_time
        while pending:
            key, ev = pending[0]
            if processed is not None and (ev.ts > now if live else ev.frame > processed):  # type: ignore[operator]
                break
            pending.popleft()
            ends = self._dnp3_ends
            if ends:
                mark = ev.ts if live else ev.frame
                while ends and ends[0][0] < mark:
                    self.dnp3_log.flow_ended(heapq.heappop(ends)[1])  # type: ignore[union-attr]
            joined = self._resolve(key, ev)
            if joined is None:
                self.counts["events_without_flow"] += 1
                mapper = self.flows.address_mapper
                if mapper is not None:
                    c = ev.conn
                    ev = ev._replace(
                        conn=ConnId(mapper(c.orig_h), c.orig_p, mapper(c.resp_h), c.resp_p)
                    )
            else:
                uid, conn, is_orig = joined
                ev = ev._replace(uid=uid, conn=conn, is_orig=is_orig)
            self._dispatch(ev)

    def _dispatch(self, ev: OTEvent) -> None:
        if self._scrub is not None:
            ev = self._scrub(ev)
        self.counts["events"] += 1
        self.by_protocol[ev.protocol] += 1
        self.by_operation[ev.operation] += 1
        if self._ot_writers:
            record = ot_record(ev)
            for write in self._ot_writers:
                write(record)
        if ev.protocol == "dnp3" and self.dnp3_log is not None:
            self.dnp3_log.event(ev)
        self._inventory.add_ot(ev)
        for handler in self._handlers:
            self._raise(handler(ev))

    def _write_dnp3(self, record: dict[str, Any]) -> None:
        for write in self._dnp3_writers:
            write(record)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "protocols": self.settings.enabled_protocols(),
            "events": self.counts["events"],
            "events_by_protocol": dict(self.by_protocol.most_common()),
            "events_by_operation": dict(self.by_operation.most_common()),
            "events_without_flow": self.counts["events_without_flow"],
        }
        if self.input.feed is not None:
            out["feed"] = self.input.feed.stats()
        if self.worker_end is not None:
            out["tshark"] = {"path": self.tshark, "version": self.worker_end.get("version")}
            out["worker"] = {
                k: self.worker_end.get(k)
                for k in ("returncode", "seconds", "stats")
                if k in self.worker_end
            }
        if self.messages:
            out["messages"] = self.messages[-20:]
        if self.status == "tshark-missing":
            out["hint"] = INSTALL_HINT
        return out


def _overrides(sink: Any, method: str) -> bool:
    from sentinel.sinks.base import Sink

    return getattr(type(sink), method, None) is not getattr(Sink, method, None) or method in vars(
        sink
    )


_warned_missing = False


def _warn_missing() -> None:
    global _warned_missing
    if not _warned_missing:
        _warned_missing = True
        log.warning(INSTALL_HINT)


def server_ports(config: Any) -> frozenset[int]:
    """Ports of the enabled OT protocols: the flow table orients flows towards them (like
    Zeek's well-known ports), whether or not tshark is available, so flows.jsonl does not
    depend on it."""
    settings = effective_settings(config)
    return settings.server_ports() if settings.enabled else frozenset()


def is_broadcast(address: str) -> bool:
    """Broadcast or multicast destinations (BACnet Who-Is/I-Am) are not inventory hosts."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_multicast or address == "255.255.255.255":
        return True
    return ip.version == 4 and address.endswith(".255")


__all__ = [
    "INSTALL_HINT",
    "LIVE_FINISH_TIMEOUT",
    "PROTOCOLS",
    "Dnp3Log",
    "LiveFeed",
    "OTBridge",
    "OTInput",
    "TsharkSource",
    "effective_settings",
    "find_tshark",
    "ot_record",
    "server_ports",
    "set_cli_override",
    "tshark_command",
]
