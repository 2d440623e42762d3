"""``capture.snapshot`` from the packet ring, read back as a capture; the Prometheus endpoint
answering a real HTTP GET."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from sentinel.capture.pcapfile import CaptureFile
from sentinel.decode.packet import PacketDecoder
from sentinel.respond.metrics import MetricsServer, Registry, ServiceMetrics
from sentinel.respond.ring import PacketRing
from sentinel.respond.settings import ActionSettings, SnapshotSettings
from tests.craft import Conversation, adu

from .conftest import make_finding, playbook_from_text

SNAP = """
id: snap
name: snap
trigger: {}
steps:
  - id: pcap
    action: capture.snapshot
    with: {before: 5, after: 1, match: flow}
"""


def _frames() -> list[tuple[float, int, bytes]]:
    t0 = 1_700_000_000.0
    flow = Conversation("198.51.100.66", "198.51.100.20", 40000, 502, t0=t0 - 3)
    flow.exchange(adu(1, 1, bytes([6, 0, 0, 0x03, 0xE7])), adu(1, 1, bytes([6, 0, 0, 3, 0xE7])))
    other = Conversation("198.51.100.10", "198.51.100.20", 41000, 502, t0=t0 - 2)
    other.exchange(adu(1, 1, bytes([3, 0, 0, 0, 1])), adu(1, 1, bytes([3, 2, 0, 1])))
    late = Conversation("198.51.100.66", "198.51.100.20", 40000, 502, t0=t0 + 30)
    old = Conversation("198.51.100.66", "198.51.100.20", 40000, 502, t0=t0 - 60)
    packets = sorted(
        flow.packets + other.packets + late.packets + old.packets, key=lambda p: float(p.time)
    )
    return [(float(p.time), 1, bytes(p)) for p in packets]


def test_snapshot_holds_the_flow_around_the_finding(harness, tmp_path: Path) -> None:
    ring = PacketRing(max_bytes=1 << 20, max_seconds=600)
    frames = _frames()
    assert list(ring.tap(iter(frames))) == frames  # the tap changes nothing
    snapdir = tmp_path / "snaps"
    h = harness(
        [playbook_from_text(SNAP)], ActionSettings(snapshot=SnapshotSettings(dir=str(snapdir)))
    )
    h.services.ring = ring
    h.runner.finding(make_finding(ts=1_700_000_000.0))
    step = h.audit_records()[0]["steps"][0]
    assert step["status"] == "ok", step
    path = Path(step["detail"]["file"])
    assert path.parent == snapdir and path.name.endswith("-pcap.pcap")
    assert path.stat().st_mode & 0o777 == 0o600
    decoder = PacketDecoder()
    with CaptureFile(path) as cap:
        got = list(cap)
    expected = [f for f in frames if 1_700_000_000.0 - 5 <= f[0] <= 1_700_000_000.0 + 1]
    expected = [
        f
        for f in expected
        if decoder.decode(*f)[2] in (40000, 502)
        and 41000 not in (decoder.decode(*f)[2], decoder.decode(*f)[4])
    ]
    assert len(got) == step["detail"]["frames"] == len(expected) == 6
    assert [bytes(g[2]) for g in got] == [f[2] for f in expected]


def test_ring_is_bounded(tmp_path: Path) -> None:
    ring = PacketRing(max_bytes=1 << 20, max_seconds=10)
    for i in range(100):
        ring.add(1000.0 + i, 1, b"x" * 100)
    assert len(ring) == 11 and ring.evicted == 89
    small = PacketRing(max_bytes=1 << 20, max_seconds=1e6)
    for i in range(20000):
        small.add(float(i), 1, b"y" * 100)
    assert len(small) <= (1 << 20) // 100


def test_snapshot_without_ring_is_skipped(harness) -> None:
    h = harness([playbook_from_text(SNAP)])
    h.runner.finding(make_finding())
    step = h.audit_records()[0]["steps"][0]
    assert step["status"] == "skipped" and "sentinel run" in step["error"]
    assert h.emitted == []


def test_metrics_endpoint() -> None:
    registry = Registry()
    m = ServiceMetrics(registry)
    m.packets.inc(1234)
    m.kernel_drops.inc(7, interface="br0")
    m.findings.inc(3, severity="high")
    m.findings.inc(severity="critical")
    m.playbook_steps.inc(playbook="notify-soc", action="notify.webhook", status="ok")
    m.jobs.inc(job='inv"1', status="ok")
    registry.gauge_callback("sentinel_spool_documents_live", "Spool depth.", lambda: 42)
    problems: list[str] = []
    registry.add_health_check("spool", lambda: problems[0] if problems else None)
    server = MetricsServer(registry, "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = resp.read().decode()
        lines = text.splitlines()
        assert "# TYPE sentinel_packets_total counter" in lines
        assert "sentinel_packets_total 1234" in lines
        assert 'sentinel_kernel_drops_total{interface="br0"} 7' in lines
        assert 'sentinel_findings_total{severity="critical"} 1' in lines
        assert 'sentinel_findings_total{severity="high"} 3' in lines
        assert (
            'sentinel_playbook_steps_total{playbook="notify-soc",action="notify.webhook",'
            'status="ok"} 1' in lines
        )
        assert 'sentinel_job_runs_total{job="inv\\"1",status="ok"} 1' in lines
        assert "sentinel_spool_documents_live 42" in lines
        assert "sentinel_up 1" in lines
        with urllib.request.urlopen(server.url + "/healthz", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"ok\n"
        problems.append("Elasticsearch unreachable for 300 s")
        try:
            urllib.request.urlopen(server.url + "/healthz", timeout=5)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert exc.read() == b"spool: Elasticsearch unreachable for 300 s\n"
    finally:
        server.stop()


def test_metrics_refuse_non_loopback() -> None:
    import pytest

    with pytest.raises(ValueError, match="loopback"):
        MetricsServer(Registry(), "0.0.0.0", 0)
