"""Key rotation during a run: a capture spanning a key boundary (packet time), and the live
service writing the next key while it runs (its rotation hook driven by a fake wall clock
that follows the frames fed to it, instead of sleeping)."""

from __future__ import annotations

import logging
import os
import queue
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sentinel.capture.pcapfile import CaptureFile
from sentinel.config import Config, SensorSettings
from sentinel.pipeline import Pipeline
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import Key, load_ring, write_key_file
from sentinel.privacy.reveal import reveal
from sentinel.privacy.runtime import declared_networks, pseudonymizer_for
from sentinel.privacy.settings import PrivacySettings
from sentinel.service import _END, Service
from tests.privacy import traffic
from tests.privacy.conftest import Run, pseudonymizer, run
from tests.privacy.test_outputs import assert_private

T0 = 1_750_000_000.0  # traffic.build: GUEST's flows begin at T0+1.002, T0+2.002, T0+3.002
BOUNDARY = T0 + 3  # key files keep whole seconds; the web flow starts at T0+3.002


def _ring(directory: Path, *starts: float) -> list[Key]:
    directory.mkdir(mode=0o700)
    keys = []
    for n, start in enumerate(starts):
        key = Key(bytes([n + 1]) * 32, start, start)
        write_key_file(directory / f"{n}.key", key)
        keys.append(key)
    return keys


def _config(ring: Path, **pseudonymization: Any) -> Config:
    privacy = {"pseudonymization": {"enabled": True, "key_file": str(ring), **pseudonymization}}
    return Config.model_validate({**traffic.SITE_CONFIG, "privacy": privacy})


def _guest_flows(r: Run, *pseudonyms: str) -> list[dict[str, Any]]:
    return [f for f in r.records("flows") if f["orig_h"] in pseudonyms]


def test_a_capture_across_a_key_boundary_switches_keys_in_packet_time(
    site_capture: Path, tmp_path: Path
) -> None:
    old, new = _ring(tmp_path / "ring", T0 - 86400, BOUNDARY)
    config = _config(tmp_path / "ring")
    p = pseudonymizer_for(config)
    assert p is not None and p.rotates
    r = run(site_capture, tmp_path / "out", config, p)

    before = pseudonymizer(config, old).address(traffic.GUEST)
    after = pseudonymizer(config, new).address(traffic.GUEST)
    assert before != after
    flows = _guest_flows(r, before, after)
    assert len(flows) == 3
    for flow in flows:  # each flow under the key in force at its start, both ends alike
        key = old if flow["ts"] < BOUNDARY else new
        ends = pseudonymizer(config, key)
        assert flow["orig_h"] == ends.address(traffic.GUEST)
        assert flow["resp_h"] in (ends.address(traffic.PLC), ends.address(traffic.GUEST_SERVER))
    assert [f["orig_h"] for f in flows] == [before, before, after]
    assert r.stats["privacy"]["key_switches"] == 1
    assert [k["key_id"] for k in r.stats["privacy"]["keys"]] == [old.id, new.id]
    assert_private(r.all_bytes(), traffic.OUTSIDE, old)
    assert_private(r.all_bytes(), traffic.OUTSIDE, new)

    ring = load_ring(str(tmp_path / "ring"))
    audit = AuditLog(tmp_path / "audit.jsonl")
    nets = declared_networks(config)
    for flow in flows:  # each pseudonym revealed, with the key its record's time names
        found = reveal(flow["orig_h"], ring, audit, "incident 7", networks=nets, at=flow["ts"])
        assert found.outcome == "found", found.notes
        assert [(m.value, m.key_id) for m in found.matches] == [
            (traffic.GUEST, old.id if flow["ts"] < BOUNDARY else new.id)
        ]
    # A record before the boundary cannot carry the newer key's pseudonym.
    assert reveal(after, ring, audit, "x", networks=nets, at=T0 + 1).outcome == "not-found"
    # Without --at every retained key is tried.
    assert {m.key_id for m in reveal(before, ring, audit, "x", networks=nets).matches} == {old.id}
    entries = audit.entries()
    assert [e.get("at") is not None for e in entries] == [True, True, True, True, False]
    assert traffic.GUEST.encode() not in (tmp_path / "audit.jsonl").read_bytes()


def test_without_a_boundary_in_the_capture_nothing_switches(
    site_capture: Path, tmp_path: Path
) -> None:
    _old, new = _ring(tmp_path / "ring", T0 - 86400, T0 - 3600)
    config = _config(tmp_path / "ring")
    r = run(site_capture, tmp_path / "out", config, pseudonymizer_for(config))
    assert r.stats["privacy"]["key_switches"] == 0
    assert r.stats["privacy"]["key_id"] == new.id
    assert _guest_flows(r, pseudonymizer(config, new).address(traffic.GUEST))


class _FollowingClock:
    """The service's wall clock in this test: the time of the last frame taken from the
    queue (a frame captured now is stamped now), so no test waits for real time to pass."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class _ClockedQueue(queue.Queue):  # type: ignore[type-arg]
    def __init__(self, clock: _FollowingClock) -> None:
        super().__init__()
        self.clock = clock

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        item = super().get(block, timeout)
        if item is not _END:
            self.clock.now = item[0]
        return item


def test_the_service_rotates_the_key_while_running(site_capture: Path, tmp_path: Path) -> None:
    from sentinel.respond.metrics import Registry, ServiceMetrics

    ring_dir = tmp_path / "ring"
    (first,) = _ring(ring_dir, T0 - 3500)  # its hour ends at T0+100, during the run
    config = _config(ring_dir, rotation="1h")
    sensor = SensorSettings(interfaces=["lo"], out_dir=str(tmp_path / "out"))
    service = Service(config, sensor)
    clock = _FollowingClock(T0)
    service.clock = clock
    service.metrics = ServiceMetrics(Registry())
    service.pseudonymizer = pseudonymizer_for(config, now=T0)
    assert service.pseudonymizer is not None
    assert [k.id for k in load_ring(str(ring_dir)).keys] == [first.id]  # not due at start
    service.pipeline = Pipeline(
        config, sensor.out_dir, sinks=[], live=True, pseudonymizer=service.pseudonymizer
    )
    service.pipeline.ot_input = None
    frames = _ClockedQueue(clock)
    with CaptureFile(site_capture) as capture:  # the site traffic, then the same again later
        original = [(ts, lt, bytes(frame)) for ts, lt, frame in capture]
    for shift in (0.0, 200.0):
        for ts, lt, frame in original:
            frames.put((ts + shift, lt, frame))
    frames.put(_END)
    service._frames = frames
    stats = service.pipeline.run_packets(service._packets())

    ring = load_ring(str(ring_dir))
    assert len(ring.keys) == 2  # written by the running service, ahead of its boundary
    second = ring.keys[1]
    assert second.valid_from == T0 + 100
    rotations = [e for e in AuditLog(PrivacySettings().audit_path()).entries()]
    assert [(e["event"], e["key_id"], e["by"]) for e in rotations] == [
        ("rotate", second.id, "sentinel run")
    ]
    assert stats["privacy"]["key_switches"] == 1
    out = Run(Path(sensor.out_dir), stats)
    before = pseudonymizer(config, first).address(traffic.GUEST)
    after = pseudonymizer(config, second).address(traffic.GUEST)
    flows = _guest_flows(out, before, after)
    assert [f["orig_h"] for f in flows] == [before] * 3 + [after] * 3
    assert all((f["ts"] < T0 + 100) == (f["orig_h"] == before) for f in flows)
    assert_private(out.all_bytes(), traffic.OUTSIDE, first)
    assert_private(out.all_bytes(), traffic.OUTSIDE, second)
    audit = AuditLog(tmp_path / "reveal-audit.jsonl")
    for flow in (flows[0], flows[-1]):
        found = reveal(
            flow["orig_h"], ring, audit, "t", networks=declared_networks(config), at=flow["ts"]
        )
        assert [m.value for m in found.matches] == [traffic.GUEST]


def test_a_running_sensor_picks_up_a_key_added_to_its_ring(tmp_path: Path) -> None:
    from sentinel.privacy.pseudonymizer import Pseudonymizer

    ring_dir = tmp_path / "ring"
    (first,) = _ring(ring_dir, T0 - 86400)
    p = Pseudonymizer(first, ring=load_ring(str(ring_dir)))  # no rotation of its own
    before = p.address(traffic.GUEST)
    assert p.tick(T0) is None and p.key.id == first.id
    added = load_ring(str(ring_dir)).add(T0 + 30)  # `sentinel privacy rotate` elsewhere
    p.tick(T0 + 40)  # within the reload period: not seen yet
    assert p.key.id == first.id
    p.tick(T0 + 61)  # read the ring directory again, and the new key is in force
    assert p.key.id == added.id and p.counters["key_switches"] == 1
    after = p.address(traffic.GUEST)
    assert after != before
    assert p.remembered(before) == (traffic.GUEST, first.id)  # the previous key's, in memory
    assert p.remembered(after) == (traffic.GUEST, added.id)


def _read_only(directory: Path, on: bool) -> None:
    """Make ``directory`` unwritable (mode 0500; as root, which ignores modes, the immutable
    attribute of ``chattr``), or writable again."""
    if os.geteuid() != 0:
        directory.chmod(0o500 if on else 0o700)
        return
    flag = "+i" if on else "-i"
    proc = subprocess.run(["chattr", flag, str(directory)], capture_output=True, text=True)
    if on and proc.returncode != 0:
        pytest.skip(f"root, and chattr +i is refused here: {proc.stderr.strip()}")
    if on:
        probe = directory / "probe"
        with pytest.raises(PermissionError):
            probe.write_bytes(b"")


def test_a_read_only_key_ring_does_not_stop_the_sensor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rotation due, the ring directory not writable (``ProtectSystem=strict`` and a ring in
    /etc): the sensor keeps its key, counts and logs the error (once, then at most every
    ``RING_LOG_SECONDS``), and rotates as soon as the directory is writable again."""
    from sentinel.privacy.pseudonymizer import RING_LOG_SECONDS, RING_RETRY_SECONDS, Pseudonymizer

    ring_dir = tmp_path / "ring"
    (first,) = _ring(ring_dir, T0 - 3500)  # its hour ends at T0+100
    p = Pseudonymizer(first, ring=load_ring(str(ring_dir)), rotation=3600.0)
    before = p.address(traffic.GUEST)
    _read_only(ring_dir, True)
    try:
        with caplog.at_level(logging.ERROR, logger="sentinel.privacy.pseudonymizer"):
            t = T0 + 10  # within the lead (300 s): the next key is due to be written
            while t < T0 + 10 + 2 * RING_LOG_SECONDS:
                assert p.tick(t) is None
                t += 1.0
        assert p.key.id == first.id and p.address(traffic.GUEST) == before
        errors = p.stats()["key_ring_errors"]
        assert errors == len(range(0, int(2 * RING_LOG_SECONDS), int(RING_RETRY_SECONDS)))
        logged = [r for r in caplog.records if "privacy key ring" in r.getMessage()]
        assert len(logged) == 2  # at T0+10 and once RING_LOG_SECONDS later
        assert first.id in logged[0].getMessage()
        assert len(load_ring(str(ring_dir)).keys) == 1
    finally:
        _read_only(ring_dir, False)
    new = None
    while new is None:  # writable again: the next retry writes the key
        t += 1.0
        new = p.tick(t)
    assert new.valid_from == max(T0 + 100, t)
    assert len(load_ring(str(ring_dir)).keys) == 2
    assert p.key.id == new.id  # past the old key's period: in force at once
