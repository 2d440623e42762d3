"""One analysis run: a capture file through decoders and detectors into the output directory.

Output files (all JSON Lines but ``stats.json``), documented field by field in docs/outputs.md:
``modbus.jsonl`` (one record per Modbus message, capture order), ``flows.jsonl`` (one per flow,
at its end), ``assets.jsonl`` (the passive inventory), ``findings.jsonl`` (ECS findings) and
``stats.json`` (counters of the run).
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from sentinel.capture.pcapfile import CaptureFile
from sentinel.config import Config
from sentinel.decode.flow import Flow, FlowTable
from sentinel.decode.modbus import ModbusAnalyzer, looks_like_modbus_request
from sentinel.decode.packet import PROTO_TCP, PacketDecoder
from sentinel.events import Anomaly, ModbusMessage
from sentinel.findings import Aggregator, Finding
from sentinel.pipeline.detector import REGISTRY, Detector
from sentinel.pipeline.inventory import Inventory
from sentinel.sinks.jsonl import JsonlWriter

ProgressCallback = Callable[[int, int], None]  # (bytes read, total bytes)
PROGRESS_EVERY = 0x3FFF  # packets between progress callbacks (a power of two minus one)


@dataclass
class RunResult:
    out_dir: str
    stats: dict[str, Any]


def modbus_record(m: ModbusMessage) -> dict[str, Any]:
    """The modbus.jsonl record: Zeek's modbus.log fields, then the decoded PDU fields."""
    c = m.conn
    rec: dict[str, Any] = {
        "ts": m.ts,
        "uid": m.uid,
        "orig_h": c.orig_h,
        "orig_p": c.orig_p,
        "resp_h": c.resp_h,
        "resp_p": c.resp_p,
        "is_orig": m.is_orig,
        "tid": m.tid,
        "pid": m.pid,
        "unit": m.unit,
        "fc": m.fc,
        "func": m.func,
        "pdu_type": "REQ" if m.is_orig else "RESP",
        "exception": m.exception,
        "len": m.len,
        "frame": m.frame,
    }
    if m.fields:
        rec.update(m.fields)
    if m.latency is not None:
        rec["latency"] = round(m.latency, 6)
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
        if ip not in self._cache:
            addr = ipaddress.ip_address(ip)
            self._cache[ip] = next((lab for net, lab in self._nets if addr in net), None)
        return self._cache[ip]

    def for_finding(self, f: Finding) -> dict[str, str] | None:
        if not self._nets or f.conn is None:
            return None
        return self.lookup(f.conn.resp_h) or self.lookup(f.conn.orig_h)


class Pipeline:
    """Analyse one capture into ``out_dir``; create a new Pipeline per run."""

    def __init__(
        self,
        config: Config,
        out_dir: str | os.PathLike[str],
        detectors: Iterable[Detector] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.out_dir = os.fspath(out_dir)
        self.progress = progress
        if detectors is None:
            import sentinel.detectors  # noqa: F401 - registers the built-in detectors

            detectors = [cls(config) for cls in REGISTRY.values()]
        self.detectors = list(detectors)
        self._handlers: dict[str, list[Callable[..., Any]]] = {
            "on_modbus": [], "on_anomaly": [], "on_flow_end": [], "on_tick": [],
        }
        for det in self.detectors:
            for method in det.subscriptions():
                self._handlers[method].append(getattr(det, method))
        self.sites = SiteLabels(config)
        self.inventory = Inventory(config)
        self.modbus_ports = frozenset(config.decode.modbus_ports)
        self.by_function: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.findings_by_severity: Counter[str] = Counter()
        self.unanswered = 0
        self.modbus_messages = 0

    # -- events from the decoders (the EventBus protocol)
    def modbus(self, msg: ModbusMessage) -> None:
        self.modbus_messages += 1
        self.by_function[msg.func] += 1
        self._modbus_out.write(modbus_record(msg))
        self.inventory.on_modbus(msg)
        for handler in self._handlers["on_modbus"]:
            self._raise(handler(msg))

    def anomaly(self, event: Anomaly) -> None:
        self.anomalies[event.name] += 1
        for handler in self._handlers["on_anomaly"]:
            self._raise(handler(event))

    def _raise(self, findings: Iterable[Finding] | None) -> None:
        if findings:
            for f in findings:
                self._aggregator.add(f)

    def _emit_finding(self, f: Finding) -> None:
        observer = self.config.observer.name
        self.findings_by_severity[f.severity] += 1
        self._findings_out.write(f.to_ecs(observer, self.sites.for_finding(f)))

    # -- flows
    def _choose_analyzer(self, flow: Flow, first_payload: bytes | None) -> ModbusAnalyzer | None:
        if flow.proto != PROTO_TCP:
            return None
        if first_payload is None:
            if flow.conn.resp_p in self.modbus_ports:
                return ModbusAnalyzer(flow, self, self.config.decode.max_pending_requests)
            return None
        if looks_like_modbus_request(first_payload):
            return ModbusAnalyzer(flow, self, self.config.decode.max_pending_requests)
        return None

    def _flow_ended(self, flow: Flow) -> None:
        record = flow.record()
        if isinstance(flow.analyzer, ModbusAnalyzer):
            self.unanswered += flow.analyzer.unanswered
            self.inventory.flow_ended(flow.uid)
        self._flows_out.write(record)
        for handler in self._handlers["on_flow_end"]:
            self._raise(handler(record))

    # -- the run
    def run(self, capture_path: str | os.PathLike[str]) -> RunResult:
        os.makedirs(self.out_dir, exist_ok=True)
        started = time.perf_counter()
        decoder = PacketDecoder()
        dc = self.config.decode
        flows = FlowTable(
            self._choose_analyzer, self._flow_ended, server_ports=self.modbus_ports,
            max_flows=dc.max_flows, tcp_timeout=dc.tcp_idle_timeout,
            udp_timeout=dc.udp_idle_timeout, max_stream_buffer=dc.max_stream_buffer,
        )
        self._aggregator = Aggregator(self._emit_finding)
        path = lambda name: os.path.join(self.out_dir, name)  # noqa: E731
        packets = nbytes = 0
        with (
            CaptureFile(capture_path) as capture,
            JsonlWriter(path("modbus.jsonl")) as self._modbus_out,
            JsonlWriter(path("flows.jsonl")) as self._flows_out,
            JsonlWriter(path("findings.jsonl")) as self._findings_out,
        ):
            decode = decoder.decode
            process = flows.process
            tick_handlers = self._handlers["on_tick"]
            next_tick = 0.0
            progress = self.progress
            for ts, linktype, frame in capture:
                packets += 1
                nbytes += len(frame)
                d = decode(ts, linktype, frame)
                if d is not None:
                    process(ts, packets, d)
                if ts >= next_tick:
                    if next_tick:
                        self._aggregator.expire(ts)
                        for handler in tick_handlers:
                            self._raise(handler(ts))
                    next_tick = ts + 1.0
                if progress is not None and not packets & PROGRESS_EVERY:
                    progress(capture.position(), capture.size)
            flows.flush()
            self._aggregator.flush()
            if progress is not None:
                progress(capture.size, capture.size)
            assets = self.inventory.records()
            with JsonlWriter(path("assets.jsonl")) as out:
                for rec in assets:
                    out.write(rec)
            elapsed = time.perf_counter() - started
            stats = {
                "capture": os.fspath(capture_path),
                "format": capture.format,
                "packets": packets,
                "bytes": nbytes,
                "flows": flows.stats["flows"],
                "flows_evicted": flows.stats["flows.evicted"],
                "modbus_messages": self.modbus_messages,
                "modbus_by_function": dict(self.by_function.most_common()),
                "modbus_unanswered_requests": self.unanswered,
                "devices": len(assets),
                "anomalies": dict(sorted(self.anomalies.items())),
                "decode_errors": dict(sorted((decoder.errors + capture.problems).items())),
                "tcp": {k.removeprefix("tcp."): v for k, v in sorted(flows.stats.items())
                        if k.startswith("tcp.")},
                "non_ip_frames": decoder.non_ip,
                "other_ip_protocols": {str(k): v for k, v in decoder.other_protocols.items()},
                "findings": self._findings_out.count,
                "findings_by_severity": dict(self.findings_by_severity),
                "elapsed_seconds": round(elapsed, 3),
                "packets_per_second": round(packets / elapsed) if elapsed > 0 else None,
            }
        with open(path("stats.json"), "wb") as f:
            f.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return RunResult(self.out_dir, stats)
