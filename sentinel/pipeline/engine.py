"""One analysis run: a capture file through decoders and detectors into the output directory.

Output files (all JSON Lines but ``stats.json``), documented field by field in docs/outputs.md:
``modbus.jsonl`` (one record per Modbus message, capture order), ``flows.jsonl`` (one per flow,
at its end), ``assets.jsonl`` (the passive inventory), ``findings.jsonl`` (ECS findings) and
``stats.json`` (counters of the run). With the tshark-backed OT source (DNP3, IEC 104, S7comm,
EtherNet/IP-CIP, BACnet; ``sentinel/decode/tshark.py``) also ``ot.jsonl`` and ``dnp3.jsonl``
(docs/ot-protocols.md): ``OTBridge`` hooks into a run in four places (flow table creation,
the once-a-second tick, before the final flush, and at close) and is not created at all
when OT decoding is off.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from sentinel.capture.pcapfile import CaptureFile
from sentinel.config import Config
from sentinel.decode.dnp3_link import Dnp3LinkAnalyzer
from sentinel.decode.dnp3_link import link_ports as dnp3_link_ports
from sentinel.decode.flow import (
    FilteredHook,
    Flow,
    FlowTable,
    GateAlternative,
    Segments,
    StreamHook,
)
from sentinel.decode.modbus import ModbusAnalyzer, looks_like_modbus_request
from sentinel.decode.modbus_codes import FUNC_BY_RAW
from sentinel.decode.packet import PROTO_TCP, Decoded, PacketDecoder
from sentinel.decode.tshark import OTBridge, OTInput
from sentinel.decode.tshark import server_ports as ot_server_ports
from sentinel.events import Anomaly, ArpEvent, ModbusMessage, PacketEvent, StreamData
from sentinel.findings import Aggregator, Finding
from sentinel.pipeline import routes
from sentinel.pipeline.detector import (
    EVENT_METHODS,
    REGISTRY,
    Detector,
    ModbusInterest,
    StreamBatch,
)
from sentinel.pipeline.inventory import Inventory
from sentinel.privacy import clear_for_matching
from sentinel.sinks.base import Sink
from sentinel.sinks.jsonl import JsonlSink

if TYPE_CHECKING:
    from sentinel.privacy.pseudonymizer import Pseudonymizer

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (bytes read, total bytes)
# A live source yields (now, HEARTBEAT, b"") when idle so that ticks (timeouts, findings
# windows, detectors' on_tick) run in quiet periods too.
HEARTBEAT = -1
PROGRESS_EVERY = 0x3FFF  # packets between progress callbacks (a power of two minus one)
MAX_SHARED_GATES = 1024  # distinct stream gates kept for sharing (a rule set has a handful)
_new_tuple = tuple.__new__


@dataclass
class RunResult:
    out_dir: str
    stats: dict[str, Any]


def modbus_record(m: ModbusMessage) -> dict[str, Any]:
    """The modbus.jsonl record: Zeek's modbus.log fields, then the decoded PDU fields."""
    # One tuple unpack instead of a dozen attribute look-ups: this runs once per message.
    ts, uid, conn, is_orig, tid, pid, unit, fc, func, exception, length, frame, fields, lat = m
    orig_h, orig_p, resp_h, resp_p = conn
    rec: dict[str, Any] = {
        "ts": ts,
        "uid": uid,
        "orig_h": orig_h,
        "orig_p": orig_p,
        "resp_h": resp_h,
        "resp_p": resp_p,
        "is_orig": is_orig,
        "tid": tid,
        "pid": pid,
        "unit": unit,
        "fc": fc,
        "func": func,
        "pdu_type": "REQ" if is_orig else "RESP",
        "exception": exception,
        "len": length,
        "frame": frame,
    }
    if fields:
        rec.update(fields)
    if lat is not None:
        rec["latency"] = round(lat, 6)
    return rec


class SiteLabels:
    """IP address -> ``{"site": name, "sector": sector}`` from the config's site networks."""

    def __init__(self, config: Config) -> None:
        self._nets = [
            (ipaddress.ip_network(net), {"site": s.name, "sector": s.sector})
            for s in config.sites
            for net in s.networks
        ]
        self._cache: dict[str, dict[str, str] | None] = {}

    def lookup(self, ip: str) -> dict[str, str] | None:
        labels = self._cache.get(ip, False)
        if labels is False:
            try:  # a pseudonym (privacy) is labelled by the address behind it
                addr = ipaddress.ip_address(clear_for_matching(ip))
            except ValueError:  # not an address: hostile input is never an error here
                return None
            labels = next((lab for net, lab in self._nets if addr in net), None)
            if len(self._cache) < 65536:  # bounded: a scan must not grow it without end
                self._cache[ip] = labels
        return labels  # type: ignore[return-value]

    def for_finding(self, f: Finding) -> dict[str, str] | None:
        if not self._nets or f.conn is None:
            return None
        return self.lookup(f.conn.resp_h) or self.lookup(f.conn.orig_h)


class _FlowBus:
    """The event bus (``sentinel.decode.modbus.EventBus``) of one Modbus connection: its own
    dispatch, which keeps the handler tables of its two directions."""

    __slots__ = ("anomaly", "modbus")

    def __init__(
        self, modbus: Callable[[ModbusMessage], None], anomaly: Callable[[Anomaly], None]
    ) -> None:
        self.modbus = modbus
        self.anomaly = anomaly


class Pipeline:
    """One run: packets through decoders and detectors into the sinks; one Pipeline per run.

    ``run(capture)`` reads a capture file; ``run_packets(packets)`` takes any iterable of
    ``(ts, linktype, frame)`` (a live source, with ``live=True``). The JSONL sink always
    writes into ``out_dir``; ``sinks`` adds others (Elasticsearch, EVE) that receive the same
    records.
    """

    def __init__(
        self,
        config: Config,
        out_dir: str | os.PathLike[str],
        detectors: Iterable[Detector] | None = None,
        sinks: Iterable[Sink] = (),
        progress: ProgressCallback | None = None,
        live: bool = False,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.config = config
        self.pseudonymizer = pseudonymizer  # privacy: addresses outside the inventory
        self.live = live  # findings go out at once and sinks are flushed every second
        self.out_dir = os.fspath(out_dir)
        self.progress = progress
        if detectors is None:
            import sentinel.detectors  # noqa: F401 - registers the built-in detectors

            detectors = [cls(config) for cls in REGISTRY.values()]
        self.detectors = list(detectors)
        self._handlers: dict[str, list[Callable[..., Any]]] = {m: [] for m in EVENT_METHODS}
        for det in self.detectors:
            det.live = live
            for method in det.subscriptions():
                self._handlers[method].append(getattr(det, method))
        self._batch_ok = [
            d.takes_batches for d in self.detectors if "on_stream_batch" in d.subscriptions()
        ]
        self._stream_detectors = [d for d in self.detectors if "on_stream" in d.subscriptions()]
        self._gates: dict[tuple[GateAlternative, ...], FilteredHook] = {}
        self.extra_sinks = list(sinks)
        self.sites = SiteLabels(config)
        self.inventory = Inventory(config)
        self.modbus_ports = frozenset(config.decode.modbus_ports)
        self.dnp3_ports = dnp3_link_ports(config)  # the native DNP3 link checker's
        self.by_function: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.findings_by_severity: Counter[str] = Counter()
        self.findings = 0
        # What the tshark OT source reads: ``run`` sets the capture file; a live collector
        # sets ``OTInput(interfaces=(...))`` before ``run_packets``. None: no OT source.
        self.ot_input: OTInput | None = None
        self.unanswered = 0
        self._aggregator = Aggregator(self._emit_finding, immediate=live)
        self._after_event = [False]  # a protocol event was raised: its message goes to all
        # per-connection Modbus dispatches, when detectors choose their messages
        self._connection_dispatch: Callable[[], Callable[[ModbusMessage], None]] | None = None
        # Findings from other threads (``emit_finding``), written by the pipeline's thread.
        self._external: queue.SimpleQueue[tuple[dict[str, Any], tuple[Sink, ...]]] = (
            queue.SimpleQueue()
        )

    # -- events from the decoders (the EventBus protocol)
    def modbus(self, msg: ModbusMessage) -> None:
        """Every run replaces this with the closure from ``_make_modbus_dispatch``."""
        raise RuntimeError("Pipeline.modbus called outside a run")

    def _make_modbus_dispatch(self) -> Callable[[], Callable[[ModbusMessage], None]] | None:
        """Sets ``self.modbus``, the dispatch of every Modbus message (the JSONL record and the
        ``on_modbus`` handlers). When a detector chooses its messages (``modbus_interest``),
        returns the factory of per-connection dispatches (``_FlowBus``) instead: each keeps
        its two directions' handler tables at hand, no look-up per message."""
        writers = [s.modbus for s in self._sinks if _overrides(s, "modbus")]
        handlers = self._handlers["on_modbus"]
        raise_ = self._raise
        if len(writers) == 1 and not handlers:
            write = writers[0]

            def dispatch(msg: ModbusMessage) -> None:
                write(modbus_record(msg))

            self.modbus = dispatch  # type: ignore[method-assign]
            return None

        def dispatch_all(msg: ModbusMessage) -> None:
            record = modbus_record(msg)
            for write in writers:
                write(record)
            for handler in handlers:
                findings = handler(msg)
                if findings:
                    raise_(findings)

        self.modbus = dispatch_all  # type: ignore[method-assign]
        gated = [d for d in self.detectors if "on_modbus" in d.subscriptions()]
        if not any(_overrides_interest(d) for d in gated):
            return None
        # Per flow direction (asked at its first message), the handlers by the message's
        # function byte (its name, ``func``); tables are shared by the directions with the
        # same interests. A message that follows a protocol event goes to every handler.
        tables: dict[tuple, dict[str, tuple[Callable[..., Any], ...]]] = {}
        after_event = self._after_event = [False]

        def table(msg: ModbusMessage) -> dict[str, tuple[Callable[..., Any], ...]]:
            interests = tuple(d.modbus_interest(msg.uid, msg.conn, msg.is_orig) for d in gated)
            t = tables.get(interests)
            if t is None:
                pairs = list(zip(handlers, interests, strict=True))
                t = tables[interests] = {
                    func: tuple(h for h, i in pairs if _wants(i, raw))
                    for raw, func in enumerate(FUNC_BY_RAW)
                }
            return t

        def connection_dispatch() -> Callable[[ModbusMessage], None]:
            return routes.ConnectionDispatch(
                modbus_record, writers, tuple(handlers), table, after_event, raise_
            )

        return connection_dispatch

    def anomaly(self, event: Anomaly) -> None:
        self.anomalies[event.name] += 1
        self._after_event[0] = True  # the message it concerns goes to every detector
        for handler in self._handlers["on_anomaly"]:
            self._raise(handler(event))

    def _raise(self, findings: Iterable[Finding] | None) -> None:
        if findings:
            for f in findings:
                self._aggregator.add(f)

    def _emit_finding(self, f: Finding) -> None:
        self.findings += 1
        self.findings_by_severity[f.severity] += 1
        doc = f.to_ecs(self.config.observer.name, self.sites.for_finding(f))
        for sink in self._sinks:
            sink.finding(doc)

    # -- findings raised outside the packet path (scheduler jobs, playbook failures)
    def emit_finding(self, document: dict[str, Any], skip: Iterable[Sink] = ()) -> None:
        """Queue a finding document (ECS, as ``Finding.to_ecs`` makes) raised by another thread;
        the pipeline's thread writes it to every sink but those in ``skip`` at the next
        ``drain_findings()``. Thread-safe, never blocks."""
        self._external.put((document, tuple(skip)))

    def drain_findings(self) -> int:
        """Write the queued findings of ``emit_finding`` to the sinks, counted in the run's
        stats; call it from the thread that runs ``run_packets`` (a live source's iterator),
        never after the run ended. Returns how many were written."""
        sinks = getattr(self, "_sinks", None)
        if sinks is None:  # not running yet: they wait
            return 0
        n = 0
        while True:
            try:
                doc, skip = self._external.get_nowait()
            except queue.Empty:
                return n
            n += 1
            self.findings += 1
            label = (doc.get("sentinel") or {}).get("severity_label") or "unknown"
            self.findings_by_severity[label] += 1
            for sink in sinks:
                if sink in skip:
                    continue
                try:
                    sink.finding(doc)
                except Exception:  # one sink's failure must not starve the others
                    log.exception("sink %s: could not write a finding", sink.id)

    def take_findings(self) -> list[dict[str, Any]]:
        """The queued findings of ``emit_finding`` that were not written, removed from the
        queue: after the run closed its sinks, the caller decides where they go."""
        out: list[dict[str, Any]] = []
        while True:
            try:
                out.append(self._external.get_nowait()[0])
            except queue.Empty:
                return out

    @property
    def findings_waiting(self) -> bool:
        """Whether ``emit_finding`` queued findings that ``drain_findings`` has not written."""
        return not self._external.empty()

    # -- flows and bytes
    def _choose_analyzer(
        self, flow: Flow, first_payload: bytes | None
    ) -> ModbusAnalyzer | Dnp3LinkAnalyzer | None:
        if flow.proto != PROTO_TCP:
            return None
        if first_payload is None:
            if flow.conn.resp_p in self.modbus_ports:
                return self._modbus_analyzer(flow)
            if flow.conn.resp_p in self.dnp3_ports:  # beside the tshark path (dnp3_link.py)
                return Dnp3LinkAnalyzer(flow, self)
            return None
        if looks_like_modbus_request(first_payload):
            return self._modbus_analyzer(flow)
        return None

    def _modbus_analyzer(self, flow: Flow) -> ModbusAnalyzer:
        bus: Any = self
        if self._connection_dispatch is not None:
            dispatch = self._connection_dispatch()
            if self.pseudonymizer is not None:
                dispatch = self.pseudonymizer.wrap_modbus(dispatch)
            bus = _FlowBus(dispatch, self.anomaly)
        return ModbusAnalyzer(flow, bus, self.config.decode.max_pending_requests)

    def _flow_ended(self, flow: Flow) -> None:
        record = flow.record()
        analyzer = flow.analyzer
        if isinstance(analyzer, ModbusAnalyzer):
            self.unanswered += analyzer.unanswered
            self.inventory.add_connection(analyzer, flow.first_ts, flow.last_ts)
            for raw_fc, n in enumerate(analyzer.func_counts):
                if n:
                    self.by_function[FUNC_BY_RAW[raw_fc]] += n
        for sink in self._sinks:
            sink.flow(record)
        for handler in self._handlers["on_flow_end"]:
            self._raise(handler(record))

    def _packet_event(self, flow: Flow, is_orig: bool, ts: float, frame: int, d: Decoded) -> None:
        event = PacketEvent(
            ts, frame, flow.uid, flow.conn, is_orig, d[0], d[5], d[8], flow.established
        )
        for handler in self._handlers["on_packet"]:
            self._raise(handler(event))

    def _stream_event(self, flow: Flow, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
        # tuple.__new__ skips the NamedTuple's Python-level __new__: this runs once per chunk.
        offset = flow.stream_offsets[is_orig]
        event = _new_tuple(
            StreamData, (ts, frame, flow.uid, flow.conn, is_orig, data, offset, flow.proto)
        )
        for handler in self._handlers["on_stream"]:
            findings = handler(event)
            if findings:
                self._raise(findings)

    def _stream_route(self, flow: Flow, is_orig: bool) -> StreamHook | FilteredHook | None:
        """The flow table's stream router: the hook of one flow direction, from the gates of
        the ``on_stream`` detectors (see ``Detector.stream_gate``)."""
        alternatives: list[GateAlternative] = []
        for det in self._stream_detectors:
            gate = det.stream_gate(flow.uid, flow.conn, is_orig, flow.proto)
            if gate is None:
                return self._stream_event  # every chunk
            alternatives += gate.alternatives
        if not alternatives:
            return None
        # One hook per distinct gate, shared by the directions that have it (a handful per
        # rule set): a chunk's check then reads tables that stay in the CPU's caches, where
        # a hook per direction was a cold object per chunk.
        key = tuple(alternatives)
        hook = self._gates.get(key)
        if hook is None:
            if len(self._gates) >= MAX_SHARED_GATES:
                self._gates.clear()
            hook = self._gates[key] = FilteredHook(self._stream_event, key)
        return hook

    def _stream_batch(self, flow: Flow, is_orig: bool, offset: int, segments: Segments) -> bool:
        """The flow table's batch hook: whether the flow's next chunks may come in batches."""
        uid = flow.uid
        event = _new_tuple(StreamBatch, (uid, flow.conn, is_orig, flow.proto, offset, segments))
        for handler in self._handlers["on_stream_batch"]:
            findings = handler(event)
            if findings:
                self._raise(findings)
        return all([takes(uid) for takes in self._batch_ok])  # a list: cheaper than a generator

    def _arp_event(self, event: ArpEvent) -> None:
        if self.pseudonymizer is not None:  # privacy: IPs and MACs before any detector
            event = self.pseudonymizer.arp(event)
        for handler in self._handlers["on_arp"]:
            self._raise(handler(event._replace(frame=self._frame)))

    # -- the run
    def run(self, capture_path: str | os.PathLike[str]) -> RunResult:
        self.ot_input = OTInput(file=os.fspath(capture_path))
        with CaptureFile(capture_path) as capture:
            stats = self.run_packets(capture, capture.position, capture.size)
            stats = {"capture": os.fspath(capture_path), "format": capture.format, **stats}
            stats["decode_errors"] = dict(
                sorted((Counter(stats["decode_errors"]) + capture.problems).items())
            )
        self._write_stats(stats)
        return RunResult(self.out_dir, stats)

    def run_packets(
        self,
        packets: Iterable[tuple[float, int, bytes]],
        position: Callable[[], int] | None = None,
        size: int | None = None,
    ) -> dict[str, Any]:
        """Process ``(ts, linktype, frame)`` tuples until the iterable ends; return the stats."""
        started = time.perf_counter()
        decoder = PacketDecoder()
        dc = self.config.decode
        flows = FlowTable(
            self._choose_analyzer,
            self._flow_ended,
            server_ports=self.modbus_ports | ot_server_ports(self.config),
            max_flows=dc.max_flows,
            tcp_timeout=dc.tcp_idle_timeout,
            udp_timeout=dc.udp_idle_timeout,
            max_stream_buffer=dc.max_stream_buffer,
        )
        flows.stream_depth = dc.stream_depth
        p = self.pseudonymizer
        if p is not None:  # every address is mapped before any event carries it
            flows.address_mapper = p.address
            if p.rotates:  # key rotation: the key follows packet time (sentinel.privacy)
                packets = p.follow(packets)
        if self._handlers["on_packet"]:
            flows.packet_hook = self._packet_event
        if self._handlers["on_stream"]:
            flows.stream_router = self._stream_route
        if self._handlers["on_stream_batch"]:
            flows.batch_hook = self._stream_batch
            flows.batch_seconds = min(
                d.batch_seconds for d in self.detectors if "on_stream_batch" in d.subscriptions()
            )
        # Batches waiting longer than batch_seconds are handed over at the tick, live; reading
        # a file they go when full, or with their flow (fewer, larger batches).
        hand_over_by_time = self.live and flows.batch_hook is not None
        if self._handlers["on_arp"]:
            decoder.arp_hook = self._arp_event
        jsonl = JsonlSink(self.out_dir, live=self.live)  # live: append, rotate daily
        self._sinks: list[Sink] = [jsonl, *self.extra_sinks]
        self._connection_dispatch = self._make_modbus_dispatch()
        if p is not None:  # identity strings of devices outside the inventory
            self.modbus = p.wrap_modbus(self.modbus)  # type: ignore[method-assign]
        ot = OTBridge.create(self, flows, self.ot_input)
        packets_seen = nbytes = 0
        try:
            decode = decoder.decode
            process = flows.process
            tick_handlers = self._handlers["on_tick"]
            next_tick = 0.0
            progress = self.progress if position is not None else None
            for ts, linktype, frame in packets:
                if linktype >= 0:
                    packets_seen += 1
                    self._frame = packets_seen
                    nbytes += len(frame)
                    d = decode(ts, linktype, frame)
                    if d is not None:
                        process(ts, packets_seen, d)
                else:  # a live source's heartbeat (HEARTBEAT): time moves when idle, and
                    flows.expire(ts)  # flows idle past their timeout end (flows.jsonl, metrics)
                if ts >= next_tick:
                    if next_tick:
                        if hand_over_by_time:
                            flows.flush_batches(ts)
                        self._aggregator.expire(ts)
                        for handler in tick_handlers:
                            self._raise(handler(ts))
                        if self.live:
                            for sink in self._sinks:
                                sink.flush()
                        if ot is not None:
                            ot.pump(ts, packets_seen)
                    next_tick = ts + 1.0
                if progress is not None and not packets_seen & PROGRESS_EVERY:
                    progress(position(), size or 0)  # type: ignore[misc]
            if ot is not None:
                ot.drain()
            flows.flush()
            self._aggregator.flush()
            assets = self.inventory.records()
            if p is not None:
                assets = p.assets(assets)
            for sink in self._sinks:
                sink.assets(assets)
        finally:
            if ot is not None:
                ot.close()
            for sink in self._sinks:
                sink.close()
        if progress is not None:
            progress(size or 0, size or 0)
        elapsed = time.perf_counter() - started
        stats: dict[str, Any] = {
            "packets": packets_seen,
            "bytes": nbytes,
            "flows": flows.stats["flows"],
            "flows_evicted": flows.stats["flows.evicted"],
            "modbus_messages": sum(self.by_function.values()),
            "modbus_by_function": dict(self.by_function.most_common()),
            "modbus_unanswered_requests": self.unanswered,
            "devices": len(assets),
            "anomalies": dict(sorted(self.anomalies.items())),
            "decode_errors": dict(sorted(decoder.errors.items())),
            "tcp": {
                k.removeprefix("tcp."): v
                for k, v in sorted(flows.stats.items())
                if k.startswith("tcp.")
            },
            "non_ip_frames": decoder.non_ip,
            "other_ip_protocols": {str(k): v for k, v in decoder.other_protocols.items()},
            "ot": ot.stats() if ot is not None else {"status": "off"},
            "findings": self.findings,
            "findings_by_severity": dict(self.findings_by_severity),
            "elapsed_seconds": round(elapsed, 3),
            "packets_per_second": round(packets_seen / elapsed) if elapsed > 0 else None,
        }
        if p is not None:
            stats["privacy"] = p.stats()
        return stats

    def _write_stats(self, stats: dict[str, Any]) -> None:
        with open(os.path.join(self.out_dir, "stats.json"), "wb") as f:
            f.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def _wants(interest: ModbusInterest | None, raw_fc: int) -> bool:
    """Whether a detector with this interest gets messages with this raw function byte."""
    if interest is None or interest.functions is None:
        return True
    return bool(raw_fc & 0x80 and interest.exceptions) or raw_fc & 0x7F in interest.functions


def _overrides_interest(det: Detector) -> bool:
    return type(det).modbus_interest is not Detector.modbus_interest


def _overrides(sink: Sink, method: str) -> bool:
    return getattr(type(sink), method, None) is not getattr(Sink, method) or method in vars(sink)
