"""Playbook actions that act on a host, with pseudonymization on: ``firewall.block`` and
``scan.device`` act on the address behind the finding's pseudonym (re-identified at the
sensor, audited by the system), ``capture.snapshot`` is refused unless the privacy config
allows it; no record, result, error or notification carries the clear address.

Real parts: the playbook runner from the config, the approval store, the packet ring fed
with the site capture, the privacy audit log, reveal by search. Stand-ins, because the real
thing cannot run here: ``nft`` is a script that records its argument list (a real
subprocess, no shell; changing a firewall needs root), and the scheduler's ``queue_scan`` is
a function that records what it was given and answers in the scheduler's own words.
"""

from __future__ import annotations

import gc
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from sentinel.capture.pcapfile import CaptureFile
from sentinel.config import Config
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import Key, write_key_file
from sentinel.respond.factory import runner_from_config
from sentinel.respond.ring import PCAP_HEADER, PacketRing
from tests.privacy import traffic
from tests.privacy.conftest import pseudonymizer
from tests.privacy.test_outputs import assert_private
from tests.respond.conftest import make_finding

T_GUEST = 1_750_000_001.0  # traffic.build: the guest laptop's Modbus flow to the PLC

PLAYBOOK = """
id: contain
name: contain
trigger: {}
steps:
  - id: block
    action: firewall.block
    with: {address: "{{ source.ip }}"}
"""
SCAN = """
id: look
name: look
trigger: {}
steps:
  - id: scan
    action: scan.device
    with: {job: inventory, address: "{{ source.ip }}"}
"""
SNAPSHOT = """
id: keep
name: keep
trigger: {}
steps:
  - id: pcap
    action: capture.snapshot
    with: {before: 5, after: 1, match: flow}
"""


class Site:
    def __init__(self, tmp_path: Path, playbook: str, privacy: dict[str, Any] | None = None):
        self.tmp = tmp_path
        self.key = Key(bytes(range(32)))
        key_file = write_key_file(tmp_path / "sensor.key", self.key)
        self.nft_args = tmp_path / "nft-args"
        nft = tmp_path / "fake-nft"
        nft.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {self.nft_args}\n")
        nft.chmod(0o755)
        (tmp_path / "playbook.yaml").write_text(playbook)
        self.state = tmp_path / "playbook-state"
        settings: dict[str, Any] = {
            "pseudonymization": {"enabled": True, "key_file": str(key_file)},
            **(privacy or {}),
        }
        self.config = Config.model_validate(
            {
                **traffic.SITE_CONFIG,
                "playbooks": {
                    "paths": [str(tmp_path / "playbook.yaml")],
                    "state_dir": str(self.state),
                },
                "actions": {
                    "allow_network_changes": True,
                    "firewall": {"nft": str(nft), "never_block": ["192.0.2.0/24"]},
                    "snapshot": {"dir": str(tmp_path / "snapshots")},
                },
                "jobs": {
                    "inventory": {
                        "type": "modbus.inventory",
                        "cron": "15 3 * * *",
                        "scopes": ["10.20.0.0/16"],
                        "targets": [{"address": "10.20.0.1"}],
                    }
                },
                "privacy": settings,
            }
        )
        self.scans: list[tuple[str, str]] = []
        self.ring: PacketRing | None = None

    def queue_scan(self, job: str, address: str) -> str:
        self.scans.append((job, address))
        return f"{job} for {address}"  # SchedulerService.queue_scan's answer

    def runner(self) -> Any:
        return runner_from_config(
            self.config,
            synchronous=True,
            approval_poll=None,
            scans=self.queue_scan,
            ring=self.ring,
        )

    def finding(self, src: str, dst: str = traffic.PLC) -> dict[str, Any]:
        return make_finding(src=src, dst=dst, sport=51000, dport=502, ts=T_GUEST + 0.01)

    def privacy_audit(self) -> list[dict[str, Any]]:
        return AuditLog(self.tmp / "state" / "privacy-audit.jsonl").entries()

    def everything_written(self) -> bytes:
        paths = [p for p in self.tmp.rglob("*") if p.is_file()]
        skip = {self.nft_args, self.tmp / "sensor.key"}
        return b"\n".join(
            p.read_bytes() for p in paths if p not in skip and p.suffix not in (".pcap", ".key")
        )


def _block(site: Site, finding: dict[str, Any]) -> tuple[Any, Any]:
    runner = site.runner()
    try:
        runner.finding(finding)
        record = runner.records[-1]
        assert [s.status for s in record.steps] == ["pending_approval"]
        runner.approvals.approve(record.run_id, "alice")
        ((_entry, outcome),) = runner.process_approvals()
        return record, outcome
    finally:
        runner.close()


def test_block_acts_on_the_real_address_and_shows_only_the_pseudonym(tmp_path: Path) -> None:
    site = Site(tmp_path, PLAYBOOK)
    p = pseudonymizer(site.config, site.key)  # the sensor's pseudonymizer, alive in memory
    pseudonym = p.address(traffic.GUEST)
    record, outcome = _block(site, site.finding(pseudonym))
    assert outcome.status == "ok", outcome.error
    args = site.nft_args.read_text().splitlines()
    assert args[6] == traffic.GUEST  # nft was given the real host
    assert outcome.detail["command"].endswith(f"'{{' {pseudonym} timeout 3600s '}}'")
    assert pseudonym in record.steps[0].summary
    (entry,) = site.privacy_audit()
    assert entry["event"] == "reveal" and entry["by"] == "system"
    assert entry["action"] == "firewall.block" and entry["playbook"] == "contain"
    assert entry["run_id"] == record.run_id and entry["outcome"] == "found"
    assert entry["pseudonym"] == pseudonym and entry["method"] == ["memory"]
    assert entry["key_id"] == [site.key.id] and "automatic" in entry["reason"]
    assert_private(site.everything_written(), traffic.OUTSIDE, site.key)


def test_without_the_pseudonym_in_memory_the_sensor_searches_its_network(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path, PLAYBOOK)
    pseudonym = pseudonymizer(site.config, site.key).address(traffic.GUEST)
    gc.collect()  # that pseudonymizer is gone: a sensor restarted since, or the approve CLI
    _record, outcome = _block(site, site.finding(pseudonym))
    assert outcome.status == "ok", outcome.error
    assert site.nft_args.read_text().splitlines()[6] == traffic.GUEST
    (entry,) = site.privacy_audit()
    assert entry["method"] == ["search"] and entry["at"].startswith("2025-06-15T15:06:41")
    assert_private(site.everything_written(), traffic.OUTSIDE, site.key)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("241.1.2.3", "not acted on"),  # pseudonym space, but no address has it
        ("241.1.2.3; reboot", "is not an IP address"),
        ("ps:0123456789abcdef", "is not an IP address"),  # an identifier pseudonym
        ("::ffff:241.1.2.3", "not acted on"),  # mapped IPv4 is the same pseudonym
        ("fd00:1:2:1::9", "not acted on"),  # a ULA in no key's prefix
    ],
)
def test_hostile_or_unknown_pseudonyms_are_refused(tmp_path: Path, source: str, why: str) -> None:
    site = Site(tmp_path, PLAYBOOK)
    runner = site.runner()
    try:
        runner.finding(site.finding(source))
        record = runner.records[-1]
        if record.steps[0].status == "pending_approval":
            runner.approvals.approve(record.run_id, "alice")
            ((_e, outcome),) = runner.process_approvals()
        else:
            outcome = record.steps[0]
    finally:
        runner.close()
    assert outcome.status == "refused" and why in outcome.error, outcome.error
    assert not site.nft_args.exists()
    for entry in site.privacy_audit():
        assert entry["outcome"] != "found"


def test_a_pseudonym_shared_by_two_hosts_is_never_acted_on(tmp_path: Path) -> None:
    site = Site(tmp_path, PLAYBOOK)
    p = pseudonymizer(site.config, site.key)
    seen: dict[str, str] = {}
    for n in range(1 << 16):  # the guest /16 holds pseudonym collisions (24 bits of HMAC)
        host = f"10.20.{n >> 8}.{n & 255}"
        pseudonym = p.pseudonym(ipaddress.ip_address(host))
        if pseudonym in seen:
            break
        seen[pseudonym] = host
    else:
        pytest.fail("no collision in a /16: the test would prove nothing")
    assert p.address(seen[pseudonym]) == p.address(host) == pseudonym
    assert p.counters["collisions"] == 1
    _record, outcome = _block(site, site.finding(pseudonym))
    assert outcome.status == "refused" and "ambiguous" in outcome.error, outcome.error
    assert not site.nft_args.exists()
    (entry,) = site.privacy_audit()
    assert entry["outcome"] == "ambiguous" and entry["method"] == ["search"]


def test_a_protected_host_behind_a_pseudonym_is_not_blocked_nor_named(tmp_path: Path) -> None:
    site = Site(tmp_path, PLAYBOOK)
    site.config = site.config.model_copy(
        update={
            "actions": site.config.actions.model_copy(
                update={
                    "firewall": site.config.actions.firewall.model_copy(
                        update={"never_block": ["10.20.0.0/16"]}  # the guest network
                    )
                }
            )
        }
    )
    p = pseudonymizer(site.config, site.key)
    pseudonym = p.address(traffic.GUEST)
    _record, outcome = _block(site, site.finding(pseudonym))
    assert outcome.status == "refused" and pseudonym in outcome.error
    assert traffic.GUEST not in outcome.error
    assert not site.nft_args.exists()
    assert_private(site.everything_written(), traffic.OUTSIDE, site.key)


def test_no_reidentification_without_an_audit_entry(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    site = Site(tmp_path, PLAYBOOK, {"audit_log": str(blocker / "audit.jsonl")})
    p = pseudonymizer(site.config, site.key)
    _record, outcome = _block(site, site.finding(p.address(traffic.GUEST)))
    assert outcome.status == "refused" and "audit" in outcome.error
    assert not site.nft_args.exists()


def test_without_privacy_a_pseudonym_is_never_acted_on(tmp_path: Path) -> None:
    site = Site(tmp_path, PLAYBOOK)
    site.config = site.config.model_copy(update={"privacy": None})
    _record, outcome = _block(site, site.finding("242.82.56.216"))
    assert outcome.status == "refused" and "pseudonym" in outcome.error
    assert not site.nft_args.exists()


def test_scan_queues_the_real_device_and_reports_the_pseudonym(tmp_path: Path) -> None:
    site = Site(tmp_path, SCAN)
    p = pseudonymizer(site.config, site.key)
    pseudonym = p.address(traffic.GUEST)
    runner = site.runner()
    try:
        runner.finding(site.finding(pseudonym))
        (step,) = runner.records[0].steps
    finally:
        runner.close()
    assert step.status == "ok", step.error
    assert site.scans == [("inventory", traffic.GUEST)]
    assert step.detail == {"queued": f"inventory for {pseudonym}"}
    assert [e["action"] for e in site.privacy_audit()] == ["scan.device"]
    assert_private(site.everything_written(), traffic.OUTSIDE, site.key)


def _ring(site_capture: Path) -> PacketRing:
    ring = PacketRing(max_bytes=1 << 24, max_seconds=1e9)
    with CaptureFile(site_capture) as capture:
        for ts, lt, frame in capture:
            ring.add(ts, lt, bytes(frame))
    return ring


def _snapshot(site: Site, site_capture: Path) -> Any:
    site.ring = _ring(site_capture)
    p = pseudonymizer(site.config, site.key)
    runner = site.runner()
    try:
        runner.finding(site.finding(p.address(traffic.GUEST)))
        (step,) = runner.records[0].steps  # (later runs answer the failure findings)
    finally:
        runner.close()
    return step


def test_snapshots_are_refused_with_privacy_on(site_capture: Path, tmp_path: Path) -> None:
    site = Site(tmp_path, SNAPSHOT)
    step = _snapshot(site, site_capture)
    assert step.status == "refused" and "privacy.snapshots.allow" in step.error
    assert not list(tmp_path.rglob("*.pcap"))
    assert site.privacy_audit() == []  # refused before anything was re-identified


def test_allowed_snapshots_must_be_covered_by_retention(site_capture: Path, tmp_path: Path) -> None:
    site = Site(tmp_path, SNAPSHOT, {"snapshots": {"allow": True}})
    step = _snapshot(site, site_capture)
    assert step.status == "refused" and "retention.capture_dirs" in step.error
    assert not list(tmp_path.rglob("*.pcap"))


def test_an_allowed_snapshot_is_capped_and_audited(site_capture: Path, tmp_path: Path) -> None:
    snapshots = {"allow": True, "max_bytes": 4096, "frame_bytes": 64}
    retention = {"capture_dirs": [str(tmp_path / "snapshots")]}
    site = Site(tmp_path, SNAPSHOT, {"snapshots": snapshots, "retention": retention})
    step = _snapshot(site, site_capture)
    assert step.status == "ok", step.error
    path = Path(step.detail["file"])
    assert path.parent == tmp_path / "snapshots" and path.stat().st_size <= 4096
    with CaptureFile(path) as capture:
        frames = [bytes(f) for _ts, _lt, f in capture]
    assert len(frames) == step.detail["frames"] > 0 and step.detail["truncated"] is True
    assert all(len(f) <= 64 for f in frames)
    assert path.stat().st_size == PCAP_HEADER + sum(16 + len(f) for f in frames)
    entries = site.privacy_audit()
    hosts = {ipaddress.ip_address(traffic.GUEST).packed, ipaddress.ip_address(traffic.PLC).packed}
    assert all({f[26:30], f[30:34]} == hosts for f in frames)  # the guest's flow, found
    assert [(e["event"], e.get("action")) for e in entries] == [  # by its real address
        ("reveal", "capture.snapshot"),  # the guest (the PLC is in clear: nothing to reveal)
        ("snapshot", "capture.snapshot"),
    ]
    pseudonym = pseudonymizer(site.config, site.key).address(traffic.GUEST)
    assert entries[1]["a"] == pseudonym and entries[1]["b"] == traffic.PLC
    assert entries[1]["frames"] == step.detail["frames"]
    assert_private(site.everything_written(), traffic.OUTSIDE, site.key)
