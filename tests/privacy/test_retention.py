"""Retention deletes what has expired, per data class, and nothing else: output files, pcap
snapshots, the Elasticsearch spool, audit entries and re-identification table rows.
(Elasticsearch indices: test_elasticsearch.py, against a real node.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.config import Config
from sentinel.es.spool import BULK, FINDINGS, Spool
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import Key, parse_time
from sentinel.privacy.retention import RetentionReport, run_retention
from sentinel.privacy.settings import PrivacySettings
from sentinel.privacy.table import RevealTable

NOW = parse_time("2026-06-01T00:00:00Z")
DAY = 86400.0


def touch(path: Path, age_days: float, data: bytes = b"{}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = NOW - age_days * DAY
    os.utime(path, (t, t))
    return path


def settings(tmp_path: Path, **retention: object) -> PrivacySettings:
    return PrivacySettings.model_validate(
        {
            "retention": {
                "output_dirs": [str(tmp_path / "out")],
                "capture_dirs": [str(tmp_path / "pcaps")],
                "spool": False,
                "elasticsearch": False,
                **retention,
            },
            "audit_log": str(tmp_path / "audit.jsonl"),
        }
    )


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, list[Path]]:
    """Runs of different ages, with the defaults: findings 365d, transactions and flows 30d,
    assets 365d, captures 7d. Returns what must go and what must stay."""
    out, pcaps = tmp_path / "out", tmp_path / "pcaps"
    gone = [
        touch(out / "old-run" / "modbus.jsonl", 40),
        touch(out / "old-run" / "flows.jsonl", 40),
        touch(out / "old-run" / "eve.json", 40),
        touch(out / "old-run" / "ot.jsonl", 40),
        touch(out / "old-run" / "dnp3.jsonl", 40),
        touch(out / "old-run" / "findings.jsonl", 400),
        touch(out / "old-run" / "assets.jsonl", 400),
        touch(out / "old-run" / "stats.json", 400),  # its run has no data left
        touch(out / "mixed" / "modbus.jsonl", 31),
        touch(out / "mixed" / "flows-2026-04-30.jsonl.gz", 31),
        touch(pcaps / "snap-1.pcap", 8),
        touch(pcaps / "deep" / "snap-2.pcapng.gz", 30),
        touch(out / "findings.jsonl", 366),  # a one-capture run written into the root
    ]
    stay = [
        touch(out / "mixed" / "findings.jsonl", 31),  # findings live a year
        touch(out / "mixed" / "assets.jsonl", 31),
        touch(out / "mixed" / "stats.json", 31),  # its run still has data
        touch(out / "fresh" / "modbus.jsonl", 29),
        touch(out / "fresh" / "flows.jsonl", 1),
        touch(out / "fresh" / "stats.json", 1),
        touch(out / "old-run" / "notes.txt", 400),  # not Sentinel's: never touched
        touch(out / "old-run" / "modbus.csv", 400),
        touch(out / "stats.json", 366),  # the root's own run still has
        touch(out / "modbus.jsonl", 2),  # ... this
        touch(pcaps / "snap-3.pcap", 6),
        touch(pcaps / "readme.txt", 90),
    ]
    link_target = touch(tmp_path / "elsewhere" / "modbus.jsonl", 400)
    (out / "fresh" / "linked.jsonl").symlink_to(link_target)
    (out / "fresh" / "modbus-link.jsonl").symlink_to(link_target)
    stay.append(link_target)
    return {"gone": gone, "stay": stay}


def test_files_that_expired_go_and_nothing_else(
    tmp_path: Path, tree: dict[str, list[Path]]
) -> None:
    s = settings(tmp_path)
    dry = run_retention(Config(), NOW, dry_run=True, settings=s)
    assert all(p.exists() for p in tree["gone"] + tree["stay"])  # a dry run deletes nothing
    report = run_retention(Config(), NOW, settings=s)
    assert [a.target for a in dry.actions] == [a.target for a in report.actions]
    assert [p for p in tree["gone"] if p.exists()] == []
    assert [p for p in tree["stay"] if not p.exists()] == []
    assert not (tmp_path / "out" / "old-run" / "stats.json").exists()
    assert (tmp_path / "out" / "old-run").is_dir()  # it still holds files not ours
    assert report.counts() == {"transactions": 5, "flows": 2, "findings": 2, "assets": 1,
                               "captures": 2}  # fmt: skip
    (entry,) = AuditLog(tmp_path / "audit.jsonl").entries()
    assert entry["event"] == "retention" and entry["deleted"] == report.counts()
    again = run_retention(Config(), NOW, settings=s)
    assert again.actions == [] and again.lines() == ["nothing has expired"]


def test_an_empty_run_directory_is_removed_and_null_keeps_forever(tmp_path: Path) -> None:
    run = tmp_path / "out" / "run"
    touch(run / "flows.jsonl", 100)
    touch(run / "stats.json", 100)
    keep = touch(tmp_path / "out" / "keep" / "flows.jsonl", 1000)
    run_retention(Config(), NOW, settings=settings(tmp_path))
    assert not run.exists() and not keep.exists()
    kept = touch(tmp_path / "out" / "k2" / "flows.jsonl", 1000)
    run_retention(Config(), NOW, settings=settings(tmp_path, flows=None))
    assert kept.exists()


def test_playbook_snapshots_are_captures(tmp_path: Path) -> None:
    snaps = tmp_path / "snaps"
    old, new = touch(snaps / "r1-snap.pcap", 8), touch(snaps / "r2-snap.pcap", 1)
    config = Config.model_validate({"actions": {"snapshot": {"dir": str(snaps)}}})
    report = run_retention(config, NOW, settings=settings(tmp_path))
    assert [(a.data_class, a.target) for a in report.actions] == [("captures", str(old))]
    assert not old.exists() and new.exists()


def test_expired_spool_segments_go_and_the_spool_still_works(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, segment_bytes=4096) as spool:
        for i in range(60):  # several segments per queue
            spool.append(FINDINGS, [b'{"index":{}}\t{"n":%d}\n' % i] * 20)
            spool.append(BULK, [b'{"index":{}}\t{"m":%d}\n' % i] * 20)
    for queue in (FINDINGS, BULK):
        segs = sorted((path / queue).glob("*.seg"))
        assert len(segs) > 4
        for i, seg in enumerate(segs):  # the first two 400 days old, then fresh ones
            t = NOW - (400 if i < 2 else 1) * DAY
            os.utime(seg, (t, t))
    with Spool(path) as spool:
        before = {q: spool.depth(q) for q in (FINDINGS, BULK)}
    s = settings(tmp_path, spool=True)
    config = Config.model_validate({})
    report = _retention_with_spool(config, s, path)
    counts = {a.data_class: a.items for a in report.actions}
    assert set(counts) == {"findings", "transactions/flows/assets"}
    with Spool(path) as spool:
        after = {q: spool.depth(q) for q in (FINDINGS, BULK)}
        batch = spool.read(FINDINGS, 10_000)
        assert batch is not None and len(batch.lines) == after[FINDINGS]
        spool.append(FINDINGS, [b'{"index":{}}\t{"n":"new"}\n'])
        batch = spool.read(FINDINGS, 10_000)
        assert batch is not None and batch.lines[-1] == b'{"index":{}}\t{"n":"new"}\n'
    assert after[FINDINGS] == before[FINDINGS] - counts["findings"]
    assert after[BULK] == before[BULK] - counts["transactions/flows/assets"]
    assert all(len(list((path / q).glob("*.seg"))) >= 1 for q in (FINDINGS, BULK))


def _retention_with_spool(config: Config, s: PrivacySettings, path: Path) -> RetentionReport:
    from sentinel.privacy import retention

    saved = retention._spool_path
    retention._spool_path = lambda _config: path  # the config's sinks section, when wired
    try:
        return run_retention(config, NOW, settings=s)
    finally:
        retention._spool_path = saved


def test_a_spool_another_process_holds_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path) as spool:
        spool.append(FINDINGS, [b'{"index":{}}\t{}\n'])
    seg = next((path / FINDINGS).glob("*.seg"))
    os.utime(seg, (0, 0))
    holder = subprocess.Popen(  # another sensor: holds the spool until its stdin closes
        [sys.executable, "-c", "import sys; from sentinel.es.spool import Spool; "
         f"s = Spool({str(path)!r}); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        report = _retention_with_spool(Config(), settings(tmp_path, spool=True), path)
    finally:
        holder.communicate("")
    assert report.actions == [] and "in use" in report.notes[0]
    assert seg.exists()


def test_the_running_sinks_spool_is_expired_through_it(tmp_path: Path) -> None:
    """Inside ``sentinel run`` the retention job expires the spool the Elasticsearch sink holds
    open (same process: opening it again would fail), its open segment included, and the
    sink's spool carries on."""
    path = tmp_path / "spool"
    with Spool(path, segment_bytes=4096) as spool:
        spool.append(FINDINGS, [b'{"index":{}}\t{"n":"old"}\n'] * 3)
        spool.append(BULK, [b'{"index":{}}\t{"m":"old"}\n'] * 2)
        for queue in (FINDINGS, BULK):
            (seg,) = (path / queue).glob("*.seg")  # the segment open for appends
            os.utime(seg, (NOW - 400 * DAY, NOW - 400 * DAY))
        assert Spool.in_process(path) is spool
        report = _retention_with_spool(Config(), settings(tmp_path, spool=True), path)
        assert [(a.data_class, a.items) for a in report.actions] == [
            ("findings", 3),
            ("transactions/flows/assets", 2),
        ]
        assert spool.depth(FINDINGS) == 0 and spool.depth(BULK) == 0
        spool.append(FINDINGS, [b'{"index":{}}\t{"n":"new"}\n'])
        batch = spool.read(FINDINGS, 100)
        assert batch is not None and batch.lines == [b'{"index":{}}\t{"n":"new"}\n']
        spool.ack(batch)
    assert Spool.in_process(path) is None
    with Spool(path) as spool:  # reopened: nothing old comes back
        assert spool.depth() == 0


def test_reveal_table_rows_expire_by_last_seen(tmp_path: Path) -> None:
    table = RevealTable(tmp_path / "t.db")
    key = Key.generate()
    table.add(key, "ipv4", "241.0.0.1", "10.0.0.1", now=NOW - 400 * DAY)
    table.add(key, "ipv4", "241.0.0.2", "10.0.0.2", now=NOW - 400 * DAY)
    table.add(key, "ipv4", "241.0.0.2", "10.0.0.2", now=NOW - 2 * DAY)  # seen again lately
    table.close()
    s = PrivacySettings.model_validate(
        {"pseudonymization": {"reveal_table": str(tmp_path / "t.db")},
         "retention": {"spool": False, "elasticsearch": False},
         "audit_log": str(tmp_path / "a.jsonl")}
    )  # fmt: skip
    report = run_retention(Config(), NOW, settings=s)
    assert [(a.data_class, a.items) for a in report.actions] == [("reveal_table", 1)]
    table = RevealTable(tmp_path / "t.db")
    assert [e.pseudonym for e in table.lookup("241.0.0.2")] == ["241.0.0.2"]
    assert table.lookup("241.0.0.1") == []


def test_audit_entries_expire(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.append("reveal", now=NOW - 800 * DAY, pseudonym="241.0.0.1", reason="old")
    audit.append("reveal", now=NOW - 10 * DAY, pseudonym="241.0.0.2", reason="recent")
    s = settings(tmp_path)
    report = run_retention(Config(), NOW, settings=s)
    assert [(a.data_class, a.items) for a in report.actions] == [("audit", 1)]
    reasons = [e.get("reason") for e in audit.entries()]
    assert reasons[0] == "recent" and "old" not in reasons
    assert audit.verify() == []


def test_retention_command_dry_run(tmp_path: Path, tree: dict[str, list[Path]]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"privacy": json.loads(settings(tmp_path).model_dump_json())}))
    proc = subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", "privacy", "retention",
         "--config", str(config), "--dry-run", "--now", "2026-06-01T00:00:00Z", "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] and doc["counts"]["captures"] == 2
    assert {a["target"] for a in doc["actions"]} == {str(p) for p in tree["gone"]} - {
        str(tmp_path / "out" / "old-run" / "stats.json")
    }
    assert all(p.exists() for p in tree["gone"])


def _jsonl(path: Path, records: list[dict[str, object]], age_days: float = 0) -> Path:
    return touch(path, age_days, b"".join(json.dumps(r).encode() + b"\n" for r in records))


def _iso(age_days: float) -> str:
    from sentinel.privacy.keys import iso

    return iso(NOW - age_days * DAY)


def test_the_services_data_is_covered_without_output_dirs(tmp_path: Path) -> None:
    """``sentinel run``'s output directory (``sensor.out_dir``, or the one a running service
    registers), its daily-rotated JSONL files, ``scanned-devices.jsonl``, the playbook audit,
    the playbooks' JSONL documents (runs, cases): all expire with the defaults (findings and
    assets 365d, transactions and flows 30d, audit 730d), and nothing that has not."""
    from sentinel.privacy import retention
    from sentinel.sinks.jsonl import rotated_name

    live, pb = tmp_path / "live", tmp_path / "pbstate"
    config = Config.model_validate({"sensor": {"out_dir": str(live)},
                                    "playbooks": {"state_dir": str(pb)}})  # fmt: skip

    def rotated(name: str, day: str, age: float) -> Path:
        return touch(Path(rotated_name(str(live / name), day)), age)

    gone = [
        rotated("findings.jsonl", "2025-04-01", 400),
        rotated("modbus.jsonl", "2026-04-01", 60),
        rotated("flows.jsonl", "2026-04-01", 60),
        rotated("eve.json", "2026-04-01", 60),
        touch(pb / "documents" / "sentinel-playbook-runs-2024.05.01.jsonl", 760),
    ]
    stay = [
        touch(live / "findings.jsonl", 0.5),
        rotated("findings.jsonl", "2026-05-30", 2),
        rotated("modbus.jsonl", "2026-05-30", 2),
        touch(pb / "documents" / "sentinel-playbook-runs-2026.05.01.jsonl", 31),
    ]
    assert rotated("modbus.jsonl", "2026-04-01", 60).name == "modbus.2026-04-01.1.jsonl"
    gone.append(live / "modbus.2026-04-01.1.jsonl")
    scanned = _jsonl(live / "scanned-devices.jsonl", [
        {"job": "inv", "ip": "10.0.0.1", "scanned_at": NOW - 400 * DAY},
        {"job": "inv", "ip": "10.0.0.2", "scanned_at": NOW - 10 * DAY},
    ])  # fmt: skip
    audit = _jsonl(pb / "playbook-audit.jsonl", [
        {"@timestamp": _iso(800), "audit": {"id": "old"}},
        {"@timestamp": _iso(740), "audit": {"id": "old2"}},
        {"@timestamp": _iso(10), "audit": {"id": "new"}},
        {"@timestamp": _iso(900), "audit": {"id": "late line, kept after a newer one"}},
    ])  # fmt: skip

    def case(cid: str, op: str, created: float, updated: float) -> dict[str, object]:
        doc = {"case": {"id": cid, "updated": _iso(updated)}, "@timestamp": _iso(created)}
        return {"_id": cid, "_op": op, "doc": doc}

    cases = _jsonl(pb / "documents" / "sentinel-cases.jsonl", [
        case("A", "index", 400, 400), case("B", "index", 400, 400), case("A", "update", 400, 380),
        case("B", "update", 400, 10), case("C", "index", 5, 5),
    ])  # fmt: skip
    svc = tmp_path / "svc"  # `sentinel run --out svc`: known only to the running service
    svc_old = touch(svc / "flows.2026-04-01.jsonl", 60)

    s = PrivacySettings.model_validate(
        {"retention": {"spool": False, "elasticsearch": False},
         "audit_log": str(tmp_path / "privacy-audit.jsonl")}
    )  # fmt: skip
    retention.register_service_output(svc)
    try:
        report = run_retention(config, NOW, settings=s)
    finally:
        retention.unregister_service_output(svc)
    assert [p for p in gone if p.exists()] == []
    assert [p for p in stay if not p.exists()] == []
    assert not svc_old.exists()
    lines = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
    assert [r["ip"] for r in lines(scanned)] == ["10.0.0.2"]
    assert [r["audit"]["id"] for r in lines(audit)] == ["new", "late line, kept after a newer one"]
    assert sorted({r["_id"] for r in lines(cases)}) == ["B", "C"]
    assert len(lines(cases)) == 3  # case B keeps its first line, so it still reads whole
    counts = report.counts()
    assert counts == {"findings": 1 + 2, "transactions": 3, "flows": 2, "assets": 1, "audit": 3}

    svc_later = touch(svc / "flows.2026-04-02.jsonl", 59)  # the service has stopped
    run_retention(config, NOW, settings=s)
    assert svc_later.exists()
