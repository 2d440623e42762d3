"""Health and metrics of ``sentinel run`` in the Prometheus text format, on loopback.

``Registry`` holds counters and gauges (with labels) and gauge callbacks that are read at
scrape time (spool depth, kernel drop counters); ``render()`` is the text exposition format
0.0.4 (``# HELP``, ``# TYPE``, escaped label values, one sample per line). ``MetricsServer``
serves it from a thread:

- ``GET /metrics``: every metric;
- ``GET /healthz``: ``200 ok`` while every registered health check passes, else ``503`` and
  the failing checks, one per line (for systemd watchdogs, load balancers, monitoring).

It listens on 127.0.0.1 (``service.metrics``); the settings refuse other addresses. Standard
metric names for the service are created by ``service_metrics``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sentinel.findings import SEVERITY

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Metric:
    def __init__(self, name: str, help_: str, kind: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_
        self.kind = kind
        self.labelnames = labelnames
        # An unlabelled metric is exposed from the start (0), as Prometheus clients do, so
        # that a scrape shows it before anything happened and ``rate()`` has a first point.
        self._values: dict[Labels, float] = {} if labelnames else {(): 0.0}
        self._lock = threading.Lock()
        self.callback: Callable[[], dict[Labels, float] | float] | None = None

    def _key(self, labels: dict[str, Any]) -> Labels:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, not {tuple(labels)}")
        return tuple((n, str(labels[n])) for n in self.labelnames)

    def inc(self, amount: float = 1.0, **labels: Any) -> None:
        if amount < 0 and self.kind == "counter":
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: Any) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def value(self, **labels: Any) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> dict[Labels, float]:
        if self.callback is not None:
            try:
                got = self.callback()
            except Exception:  # a broken callback must not break the scrape
                log.exception("metric %s: callback failed", self.name)
                return {}
            return got if isinstance(got, dict) else {(): float(got)}
        with self._lock:
            return dict(self._values)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in sorted(self.samples().items()):
            if labels:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{self.name}{{{text}}} {_number(value)}")
            else:
                lines.append(f"{self.name} {_number(value)}")
        return lines


class Registry:
    """Metrics by name; creating one twice returns the first (same kind and labels)."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        self._lock = threading.Lock()
        self.health: dict[str, Callable[[], str | None]] = {}

    def _get(self, name: str, help_: str, kind: str, labels: tuple[str, ...]) -> Metric:
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = Metric(name, help_, kind, labels)
            elif metric.kind != kind or metric.labelnames != labels:
                raise ValueError(f"metric {name} exists with another kind or labels")
            return metric

    def counter(self, name: str, help_: str, labels: tuple[str, ...] = ()) -> Metric:
        return self._get(name, help_, "counter", labels)

    def gauge(self, name: str, help_: str, labels: tuple[str, ...] = ()) -> Metric:
        return self._get(name, help_, "gauge", labels)

    def gauge_callback(
        self,
        name: str,
        help_: str,
        callback: Callable[[], dict[Labels, float] | float],
        labels: tuple[str, ...] = (),
        kind: str = "gauge",
    ) -> Metric:
        metric = self._get(name, help_, kind, labels)
        metric.callback = callback
        return metric

    def add_health_check(self, name: str, check: Callable[[], str | None]) -> None:
        """``check()`` returns None when healthy, else what is wrong."""
        self.health[name] = check

    def unhealthy(self) -> list[str]:
        out = []
        for name, check in self.health.items():
            try:
                problem = check()
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                out.append(f"{name}: {problem}")
        return out

    def render(self) -> str:
        with self._lock:
            metrics = list(self._metrics.values())
        lines: list[str] = []
        for metric in sorted(metrics, key=lambda m: m.name):
            lines += metric.render()
        return "\n".join(lines) + "\n"


class ServiceMetrics:
    """The metrics of ``sentinel run`` the issue asks for, with their standard names."""

    def __init__(self, registry: Registry) -> None:
        r = registry
        self.registry = r
        self.packets = r.counter("sentinel_packets_total", "Frames received from the capture.")
        self.kernel_drops = r.counter(
            "sentinel_kernel_drops_total",
            "Frames the kernel dropped before Sentinel read them, by interface.",
            ("interface",),
        )
        self.kernel_packets = r.counter(
            "sentinel_kernel_packets_total",
            "Frames the kernel passed to the capture socket (dropped ones included), by interface.",
            ("interface",),
        )
        self.flows = r.counter("sentinel_flows_total", "Connections that ended.")
        self.findings = r.counter(
            "sentinel_findings_total", "Findings raised, by severity.", ("severity",)
        )
        for severity in SEVERITY:  # every severity is exposed from the start (0)
            self.findings.inc(0, severity=severity)
        self.spool_depth = r.gauge(
            "sentinel_spool_documents", "Documents waiting in the Elasticsearch spool."
        )
        self.jobs = r.counter(
            "sentinel_job_runs_total", "Scheduled job runs by job and result.", ("job", "status")
        )
        self.playbook_runs = r.counter(
            "sentinel_playbook_runs_total",
            "Playbook runs by playbook and result.",
            ("playbook", "status"),
        )
        self.playbook_steps = r.counter(
            "sentinel_playbook_steps_total",
            "Playbook steps by playbook, action and outcome.",
            ("playbook", "action", "status"),
        )
        self.playbook_dropped = r.counter(
            "sentinel_playbook_runs_dropped_total", "Runs not started: the queue was full."
        )
        self.pending_approvals = r.gauge(
            "sentinel_playbook_pending_approvals", "Actions waiting for an operator's approval."
        )
        self.up = r.gauge("sentinel_up", "1 while the service runs.")
        self.up.set(1)

    def bind_capture(self, read: Callable[[], dict[str, tuple[int, int]]]) -> None:
        """Serve the kernel counters from ``read()`` (interface -> (packets, drops), totals
        since the capture started, e.g. ``LiveSource.kernel_counters`` after a fresh
        ``read_kernel_stats``) at each scrape, so drops show while the service runs."""

        def column(i: int) -> Callable[[], dict[Labels, float]]:
            return lambda: {(("interface", n),): float(c[i]) for n, c in read().items()}

        for metric, i in ((self.kernel_packets, 0), (self.kernel_drops, 1)):
            metric.callback = column(i)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` (port 0: a free one) from a thread."""

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 9108) -> None:
        import ipaddress

        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("the metrics endpoint listens on loopback only")
        self.registry = registry
        handler = _handler(registry)
        family_server = ThreadingHTTPServer
        if ":" in host:
            import socket

            class _V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            family_server = _V6
        self.httpd = family_server((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="sentinel-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _handler(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sentinel-metrics"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, registry.render(), CONTENT_TYPE)
            elif path == "/healthz":
                problems = registry.unhealthy()
                body = "\n".join(problems) + "\n" if problems else "ok\n"
                self._send(503 if problems else 200, body, "text/plain; charset=utf-8")
            else:
                self._send(404, "not found: try /metrics or /healthz\n", "text/plain")

        def _send(self, status: int, body: str, ctype: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics: " + format, *args)

    return Handler
