"""``sentinel run``: the long-running sensor service (live capture, detection, response).

One process plugs the parts together (docs/service.md):

- the **capture thread** reads ``LiveSource`` (AF_PACKET, kernel BPF) and, when the packet ring
  is on, keeps a copy of each frame for ``capture.snapshot``; frames go through a bounded
  queue (when it is full the thread waits and the kernel buffer absorbs the burst; what the
  kernel then drops is read every second and served as ``sentinel_kernel_drops_total``, and
  is in ``stats.json``); with OT decoding on (``ot:``) it also offers each frame to the
  tshark ``LiveFeed`` (``sentinel/decode/tshark.py``), which never makes it wait;
- the **OT source**: a worker process runs ``tshark -r -`` on the frames the feed passes
  (those on the enabled protocols' ports); its events (DNP3, IEC 104, S7comm, ENIP/CIP,
  BACnet) reach the detectors and ``ot.jsonl`` / ``dnp3.jsonl`` from the pipeline's
  once-a-second tick; without tshark the run says so once and Modbus is decoded as always;
- the **pipeline** (main thread, ``live=True``) reads that queue; when no frame arrives for
  ``heartbeat`` seconds it gets a ``HEARTBEAT`` item, so flows time out, findings windows
  close and sinks are flushed in quiet periods too;
- **sinks**: the JSONL files in ``out_dir``, Elasticsearch when the config enables it, the
  playbook runner (``runner_from_config``) and a small sink that feeds the metrics;
- the **scheduler** (``SchedulerService``) runs the config's ``jobs:``; its findings, and the
  runner's "action failed" findings, go through ``Pipeline.emit_finding`` and are written by
  the pipeline thread to the same sinks as packet findings (findings.jsonl, Elasticsearch,
  the metrics and, for job findings, the playbooks), counted in the run's stats;
- the **metrics endpoint** (``service.metrics``) serves ``/metrics`` and ``/healthz``.

SIGTERM or SIGINT stops the capture; the pipeline then drains what was read (the OT feed is
closed: tshark dissects what it was given and exits, within ``ot.finish_timeout`` or 10 s),
the scheduler stops, queued playbook runs finish (``playbooks.close_timeout``), the sinks are
flushed and closed (the Elasticsearch spool keeps what was not sent), ``stats.json`` is
written and the process exits 0. A capture that ends by itself (the interface went away) exits 1.

Sensor settings come from the config's ``sensor:`` section when the config schema has one,
else from the defaults; ``--interface`` and ``--out`` override them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import click
import orjson

from sentinel.cli import cli
from sentinel.config import Config, SensorSettings, load_config
from sentinel.decode.tshark import LiveFeed, OTInput, effective_settings, find_tshark
from sentinel.errors import SentinelError
from sentinel.pipeline.engine import HEARTBEAT
from sentinel.privacy.runtime import pseudonymizer_for
from sentinel.sinks.base import Sink

log = logging.getLogger(__name__)

Frame = tuple[float, int, bytes]
_END = object()  # the capture thread's last queue item


class MetricsSink(Sink):
    """Counts findings (by severity) and ended flows into the service metrics."""

    id = "metrics"

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def finding(self, document: dict[str, Any]) -> None:
        label = (document.get("sentinel") or {}).get("severity_label") or "unknown"
        self.metrics.findings.inc(severity=label)

    def flow(self, record: dict[str, Any]) -> None:
        self.metrics.flows.inc()


class Service:
    """One ``sentinel run``: build with the config and sensor settings, then ``run()``."""

    def __init__(self, config: Config, sensor: SensorSettings) -> None:
        if not sensor.interfaces:
            raise SentinelError("no interface to capture from (--interface IFACE or sensor:)")
        self.config = config
        self.sensor = sensor
        self.out_dir = sensor.out_dir
        self.stop_requested = threading.Event()
        self._frames: queue.Queue[Any] = queue.Queue(sensor.queue_frames)
        # Findings from other threads (scheduler jobs, failed playbook actions) go through
        # Pipeline.emit_finding; those raised after the sinks closed are appended at the end.
        self.external_findings = 0
        self.late_findings = 0
        self._late: list[dict[str, Any]] = []
        self._early: list[tuple[dict[str, Any], bool]] = []  # before the pipeline exists
        self._emit_lock = threading.Lock()
        self.ot_feed: LiveFeed | None = None
        self.ot_input: OTInput | None = None
        self.heartbeats = 0
        self.last_progress = time.monotonic()
        self.source: Any = None
        self.ring: Any = None
        self.runner: Any = None
        self.scheduler: Any = None
        self.metrics_server: Any = None
        self.es_sink: Any = None
        self.pipeline: Any = None
        self.pseudonymizer: Any = None  # privacy: built in run(), rotated by _privacy_tick
        self.clock = time.time  # wall clock of key rotation (tests drive a fake one)
        self._reader: threading.Thread | None = None
        self._capture_error: str | None = None
        self._shutdown_done = False

    # -- wiring
    def _build(self) -> list[Sink]:
        from sentinel.capture.live import LiveSource
        from sentinel.respond.factory import runner_from_config
        from sentinel.respond.metrics import MetricsServer, Registry, ServiceMetrics
        from sentinel.respond.ring import PacketRing

        self.registry = Registry()
        self.metrics = ServiceMetrics(self.registry)
        snap = self.config.actions.snapshot
        if self.sensor.ring:
            self.ring = PacketRing(snap.ring_bytes, snap.ring_seconds)
        sinks: list[Sink] = []
        self.es_sink = self._es_sink()
        if self.es_sink is not None:
            sinks.append(self.es_sink)
            self.registry.gauge_callback(
                "sentinel_spool_documents",
                "Documents waiting in the Elasticsearch spool.",
                lambda: float(self.es_sink.pending()),
            )
        self.runner = runner_from_config(
            self.config,
            emit=lambda doc: self._emit(doc, to_runner=False),  # the runner saw it already
            metrics=self.metrics,
            ring=self.ring,
            scans=self._queue_scan,
        )
        sinks += [self.runner, MetricsSink(self.metrics)]
        self.source = LiveSource(
            self.sensor.interfaces, bpf=self.sensor.bpf, buffer_bytes=self.sensor.buffer_bytes
        )
        self.metrics.bind_capture(self._kernel_counters)
        self._ot_setup()
        if self.config.jobs:
            from sentinel.schedule.service import SchedulerService

            self.scheduler = SchedulerService(
                self.config,
                emit=lambda doc: self._emit(doc, to_runner=True),
                devices=self._devices,
                metrics=self.metrics,
            ).start()
        ms = self.config.service.metrics
        if ms.enabled:
            self.metrics_server = MetricsServer(self.registry, ms.host, ms.port).start()
            log.warning("metrics on %s/metrics", self.metrics_server.url)
        self.registry.add_health_check("capture", self._capture_health)
        self.registry.add_health_check("pipeline", self._pipeline_health)
        return sinks

    def _es_sink(self) -> Sink | None:
        try:
            from sentinel.es.config import resolve, sink_section
        except ImportError:  # the Elasticsearch extra is not installed
            return None
        section = sink_section(self.config)
        if section is None or not section.enabled:
            return None
        from sentinel.es.sink import ElasticsearchSink
        from sentinel.es.spool import Spool
        from sentinel.pipeline.engine import SiteLabels

        site_of = SiteLabels(self.config).lookup if self.config.sites else None
        sink = ElasticsearchSink(resolve(section), self.config.observer.name, site_of)
        Spool(sink.spool_dir).close()  # a spool another sensor holds: refuse before capturing
        return sink

    def _ot_setup(self) -> None:
        """The tshark OT source of this run (off when ``ot:`` enables no protocol)."""
        settings = effective_settings(self.config)
        if not settings.enabled or not settings.enabled_protocols():
            return
        interfaces = tuple(self.sensor.interfaces)
        if find_tshark(settings.tshark) is None:
            log.warning(
                "tshark not found (ot.tshark: %s): DNP3, IEC 104, S7comm, EtherNet/IP-CIP and "
                "BACnet are not decoded in this run; Modbus/TCP is. Install tshark or set "
                "ot.enabled: false to silence this.",
                settings.tshark,
            )
            self.ot_input = OTInput(interfaces=interfaces)  # stats.json: "tshark-missing"
            return
        feed = self.ot_feed = LiveFeed(settings.server_ports(), max_frames=self.sensor.queue_frames)
        self.ot_input = OTInput(interfaces=interfaces, feed=feed)
        self.registry.gauge_callback(
            "sentinel_ot_feed_dropped_total",
            "Frames not handed to tshark because it fell behind (OT decoding only).",
            lambda: float(feed.dropped),
            kind="counter",
        )
        self.registry.add_health_check("ot", self._ot_health)

    def _ot_health(self) -> str | None:
        feed = self.ot_feed
        if feed is not None and feed.error and not self.stopping:
            return f"the tshark worker went away ({feed.error}); OT protocols are not decoded"
        return None

    def _kernel_counters(self) -> dict[str, tuple[int, int]]:
        """Fresh kernel counters of the capture sockets (for a metrics scrape)."""
        source = self.source
        if source is None:
            return {}
        source.read_kernel_stats()
        return source.kernel_counters()

    def _emit(self, doc: dict[str, Any], to_runner: bool) -> None:
        """A finding from another thread: to the pipeline's sinks (all but the runner when it
        raised the finding itself), or kept for findings.jsonl once the sinks are closed."""
        with self._emit_lock:
            self.external_findings += 1
            pipeline = self.pipeline
            if self._shutdown_done:
                self._late.append(doc)
                return
            if pipeline is None:  # a job that ran at start-up (a missed run caught up)
                self._early.append((doc, to_runner))
                return
        pipeline.emit_finding(doc, skip=() if to_runner else (self.runner,))

    def _queue_scan(self, job: str, address: str) -> str:
        if self.scheduler is None:
            raise SentinelError("no scheduler: the config has no jobs")
        return str(self.scheduler.queue_scan(job, address))

    def _devices(self, job: str, records: list[dict[str, Any]]) -> None:
        path = os.path.join(self.out_dir, "scanned-devices.jsonl")
        with open(path, "ab") as f:
            for rec in records:
                f.write(orjson.dumps({"job": job, **rec}, default=str) + b"\n")

    def _capture_health(self) -> str | None:
        if self._reader is not None and not self._reader.is_alive() and not self.stopping:
            return self._capture_error or "the capture ended"
        return None

    def _pipeline_health(self) -> str | None:
        idle = time.monotonic() - self.last_progress
        return f"no progress for {idle:.0f} s" if idle > 10 else None

    @property
    def stopping(self) -> bool:
        return self.stop_requested.is_set()

    # -- threads
    def _read(self) -> None:
        """The capture thread: frames (through the ring) into the queue, then ``_END``."""
        try:
            frames = self.ring.tap(self.source) if self.ring is not None else iter(self.source)
            put = self._frames.put
            feed = self.ot_feed
            if feed is None:
                for item in frames:
                    put(item)
            else:  # frame numbers as the pipeline counts them (every frame of the queue)
                offer = feed.offer
                for number, item in enumerate(frames, 1):
                    offer(number, item[0], item[2])
                    put(item)
        except Exception as exc:  # a capture failure ends the run; the pipeline still closes
            self._capture_error = f"{type(exc).__name__}: {exc}"
            log.error("capture failed: %s", self._capture_error)
        finally:
            self._frames.put(_END)

    def _packets(self) -> Iterator[Frame]:
        """What the pipeline reads: frames, heartbeats when idle, then the shutdown steps."""
        get = self._frames.get
        timeout = self.sensor.heartbeat
        pipeline = self.pipeline
        packets = self.metrics.packets
        while True:
            try:
                item = get(timeout=timeout)
            except queue.Empty:
                self._drain_external()
                self.heartbeats += 1
                self.last_progress = time.monotonic()
                self._privacy_tick()
                yield time.time(), HEARTBEAT, b""
                continue
            if item is _END:
                break
            if pipeline.findings_waiting:
                self._drain_external()
            packets.inc()
            self.last_progress = time.monotonic()
            self._privacy_tick()
            yield item
        # The capture stopped: stop what produces findings, let queued runs finish, and
        # write every finding they produced while the sinks are still open.
        self._stop_scheduler()
        if self.runner is not None:
            self.runner.wait_idle(self.config.playbooks.close_timeout)
        self._drain_external()

    def _privacy_tick(self) -> None:
        """Key rotation while running (privacy.pseudonymization.rotation), on the pipeline
        thread between two frames, so no record mixes two keys; cheap (it works once a
        second). A key ring that cannot be written never stops the service: ``tick`` logs
        and counts it (``sentinel_privacy_key_ring_errors``) and keeps the current key."""
        if self.pseudonymizer is not None:
            self.pseudonymizer.tick(self.clock())

    def _drain_external(self) -> None:
        if self.pipeline is not None:
            self.pipeline.drain_findings()

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None:
            try:
                self.scheduler.shutdown(wait=True)
            except Exception:
                log.exception("scheduler: shutdown failed")
            self.scheduler = None

    # -- lifecycle
    def request_stop(self, *_args: Any) -> None:
        """Stop capturing; the run then winds down (safe from a signal handler)."""
        self.stop_requested.set()
        if self.source is not None:
            self.source.stop()

    def run(self) -> dict[str, Any]:
        """Capture until ``request_stop`` (or the capture ends); return the stats written."""
        from sentinel.pipeline import Pipeline
        from sentinel.privacy.retention import register_service_output, unregister_service_output

        os.makedirs(self.out_dir, exist_ok=True)
        register_service_output(self.out_dir)  # the retention job (scheduler) covers it
        started = time.time()
        try:
            sinks = self._build()
            self.pseudonymizer = pseudonymizer_for(self.config)  # the config's privacy section
            if self.pseudonymizer is not None:
                self.registry.gauge_callback(
                    "sentinel_privacy_key_ring_errors",
                    "Times the privacy key ring could not be read or written (the key stays).",
                    lambda: float(self.pseudonymizer.counters["key_ring_errors"]),
                    kind="counter",
                )
            pipeline = Pipeline(
                self.config,
                self.out_dir,
                sinks=sinks,
                live=True,
                pseudonymizer=self.pseudonymizer,
            )
            pipeline.ot_input = self.ot_input  # None: OT decoding is off
            with self._emit_lock:
                self.pipeline = pipeline
                early, self._early = self._early, []
            for doc, to_runner in early:
                pipeline.emit_finding(doc, skip=() if to_runner else (self.runner,))
            self._reader = threading.Thread(target=self._read, name="sentinel-capture", daemon=True)
            self._reader.start()
            log.warning("capturing on %s into %s", ", ".join(self.sensor.interfaces), self.out_dir)
            stats = self.pipeline.run_packets(self._packets())
        finally:
            self._shutdown()
            unregister_service_output(self.out_dir)
        late = self._late_findings()
        capture = self.source.stats()
        stats = {
            "capture": "live:" + ",".join(self.sensor.interfaces),
            "format": "live",
            **stats,
            "live": capture,
            "service": {
                "started": started,
                "stopped": time.time(),
                "stop": "signal" if self.stopping else "capture ended",
                "capture_error": self._capture_error,
                "heartbeats": self.heartbeats,
                "external_findings": self.external_findings,
                "late_findings": late,
                "playbook_runs_dropped": getattr(self.runner, "dropped", 0),
                "ring_frames": len(self.ring) if self.ring is not None else None,
            },
        }
        stats["findings"] += late  # those drained by the pipeline are counted already
        with open(os.path.join(self.out_dir, "stats.json"), "wb") as f:
            f.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return stats

    def _late_findings(self) -> int:
        """Findings handed over after the sinks closed (a playbook run that failed while
        the runner closed): appended to findings.jsonl only (the other sinks are closed)."""
        with self._emit_lock:
            docs = [doc for doc, _ in self._early] + self._late
            self._early, self._late = [], []
        if self.pipeline is not None:
            docs = self.pipeline.take_findings() + docs
        if docs:
            with open(os.path.join(self.out_dir, "findings.jsonl"), "ab") as f:
                for doc in docs:
                    f.write(orjson.dumps(doc) + b"\n")
            log.warning("%d findings raised after the sinks closed: findings.jsonl only", len(docs))
        self.late_findings = len(docs)
        return len(docs)

    def _shutdown(self) -> None:
        """Stop every thread and server this service started (idempotent)."""
        if self._shutdown_done:
            return
        with self._emit_lock:
            self._shutdown_done = True
        if self.source is not None:
            self.source.stop()
        if self.ot_feed is not None:  # the bridge closed it already unless the run failed
            self.ot_feed.disable()
            self.ot_feed.close(timeout=1.0)
        if self._reader is not None:
            # The pipeline normally drained the queue; after an error, unblock the reader.
            while self._reader.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._frames.get(timeout=0.1)
        self._stop_scheduler()
        if self.runner is not None:
            self.runner.close()  # no-op when the pipeline closed it already
        if self.metrics_server is not None:
            self.metrics.up.set(0)
            self.metrics_server.stop()
        if self.source is not None:
            self.source.close()


@click.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config.")
@click.option(
    "--interface",
    "-i",
    "interfaces",
    multiple=True,
    help="Interface to capture from (repeat for more; replaces sensor.interfaces).",
)
@click.option("--out", "out", type=click.Path(file_okay=False), help="Output directory.")
@click.option("--bpf", "bpf", default=None, help="Kernel capture filter (tcpdump syntax).")
def run(
    config_path: str | None, interfaces: tuple[str, ...], out: str | None, bpf: str | None
) -> None:
    """Monitor live traffic until SIGTERM/SIGINT: findings, playbooks, jobs, metrics.

    Needs root (CAP_NET_RAW). Results go to the output directory as with ``analyze``
    (findings.jsonl is written as findings occur); stats.json is written at shutdown.
    """
    config = load_config(config_path)
    sensor = config.sensor
    update: dict[str, Any] = {}
    if interfaces:
        update["interfaces"] = list(interfaces)
    if out:
        update["out_dir"] = out
    if bpf:
        update["bpf"] = bpf
    sensor = sensor.model_copy(update=update)
    service = Service(config, sensor)
    previous = {
        sig: signal.signal(sig, service.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        stats = service.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(
        f"sentinel run: {stats['packets']:,} packets, {stats['findings']:,} findings, "
        f"{stats['live']['kernel_drops']:,} kernel drops -> {sensor.out_dir}",
        err=True,
    )
    if not service.stopping:
        click.echo(
            f"sentinel: capture ended: {service._capture_error or 'the interface went away'}",
            err=True,
        )
        sys.exit(1)


cli.add_command(run)
