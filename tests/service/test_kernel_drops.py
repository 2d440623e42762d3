"""Kernel drop counters while capturing: a real AF_PACKET socket with the smallest buffer the
kernel allows, not read while a burst arrives, so the kernel must drop; the counters are read
(the kernel resets them at each read), accumulated, and served on a real metrics endpoint.

Needs root (a network namespace and a veth pair; frames sent with scapy from the namespace).
"""

from __future__ import annotations

import os
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from sentinel.capture.live import LiveSource
from sentinel.respond.metrics import MetricsServer, Registry, ServiceMetrics
from tests.service.support import Veth, sample

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture and netns need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]

BURST = 400


def _burst(tmp_path: Path, name: str) -> Path:
    frames = [
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="192.0.2.1", dst="192.0.2.2")
        / UDP(sport=40000, dport=9999)
        / bytes(200)
        for _ in range(BURST)
    ]
    path = tmp_path / f"{name}.pcap"
    wrpcap(str(path), frames)
    return path


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_kernel_drops_accumulate_and_show_on_metrics(tmp_path: Path) -> None:
    burst = _burst(tmp_path, "burst")
    with Veth() as veth:
        # buffer_bytes=1: the kernel raises it to its minimum (a few frames); nobody reads.
        source = LiveSource([veth.host], buffer_bytes=1, stats_interval=0)
        registry = Registry()
        metrics = ServiceMetrics(registry)

        def counters() -> dict[str, tuple[int, int]]:
            source.read_kernel_stats()
            return source.kernel_counters()

        metrics.bind_capture(counters)
        server = MetricsServer(registry, "127.0.0.1", 0).start()
        label = f'interface="{veth.host}"'
        try:
            first = _scrape(server.url + "/metrics")
            assert "# TYPE sentinel_kernel_drops_total counter" in first
            assert sample(first, "sentinel_kernel_drops_total", label) == 0

            veth.send(burst)
            text = _scrape(server.url + "/metrics")
            drops1 = sample(text, "sentinel_kernel_drops_total", label)
            packets1 = sample(text, "sentinel_kernel_packets_total", label)
            assert drops1 is not None and drops1 > 0, text
            assert packets1 is not None and packets1 >= drops1
            # A second scrape without new traffic: the kernel's counters were reset by the
            # read, the totals stay (accumulated, not the last read).
            assert (
                sample(_scrape(server.url + "/metrics"), "sentinel_kernel_drops_total", label)
                == drops1
            )

            veth.send(burst)
            text = _scrape(server.url + "/metrics")
            drops2 = sample(text, "sentinel_kernel_drops_total", label)
            assert drops2 is not None and drops2 > drops1
            stats = source.stats()
            assert stats["kernel_drops"] == drops2
            assert stats["kernel_by_interface"][veth.host]["drops"] == drops2
        finally:
            server.stop()
            source.close()


def test_capture_loop_reads_the_counters_while_iterating(tmp_path: Path) -> None:
    """The capture loop itself reads the counters every ``stats_interval`` seconds: a reader
    that is slow to start (the burst fills the tiny buffer first) sees the drops counted
    while the iteration is still going, before any stop."""
    burst = _burst(tmp_path, "burst")
    with Veth() as veth:
        source = LiveSource([veth.host], buffer_bytes=1, stats_interval=0.05)
        veth.send(burst)  # nobody reads yet: the kernel drops most of it
        seen = threading.Event()

        def consume() -> None:
            for _ in source:
                if source.kernel_counters()[veth.host][1] > 0:
                    seen.set()
                    source.stop()

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            # A second burst keeps frames coming so that the loop yields and polls.
            veth.send(burst)
            assert seen.wait(30), source.stats()
        finally:
            source.stop()
            thread.join(10)
            source.close()
        assert source.stats()["kernel_drops"] > 0
