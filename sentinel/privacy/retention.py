"""Retention: delete each data class when it has been kept as long as the config allows.

``run_retention(config, now)`` is the scheduler's retention job (and ``sentinel privacy
retention [--dry-run]`` meanwhile). Nothing that has not expired is touched, and nothing but
Sentinel's own data. Per data class (``privacy.retention``; ``null`` keeps it forever):

==============  ==============================================  =================================
data class      files (under the output directories)              Elasticsearch / elsewhere
==============  ==============================================  =================================
findings        ``findings*.jsonl*``                              ``sentinel-findings-*``; spool
                                                                  ``findings/`` segments; cases
                                                                  (``sentinel-cases`` by
                                                                  ``case.updated``, its JSONL
                                                                  by case)
transactions    ``modbus*.jsonl*``, ``eve*.json*``, ``ot*.jsonl*``, ``sentinel-modbus-*``
                ``dnp3*.jsonl*``
flows           ``flows*.jsonl*``                                 ``sentinel-flows-*``
assets          ``assets*.jsonl*``, ``scanned-devices*.jsonl*``   ``sentinel-assets`` (by last seen)
                (by ``scanned_at``)
captures        ``*.pcap``, ``*.pcapng``, ``*.cap`` (+ ``.gz``)    playbook snapshots
                under ``capture_dirs``                            (``capture.snapshot``)
audit           ``sentinel-playbook-runs*.jsonl*``                privacy audit log entries;
                                                                  playbook audit
                                                                  (``playbook-audit.jsonl`` by
                                                                  ``@timestamp``;
                                                                  ``sentinel-playbook-runs-*``)
reveal_table    -                                                 table rows (by last seen)
==============  ==============================================  =================================

The output directories: ``retention.output_dirs``, the service's (``sensor.out_dir``, or
what ``sentinel run --out`` chose: the running service registers it), and the playbooks'
document folder (``<state>/documents``, or the folder of ``actions.cases.jsonl``). Names
match rotated files too (``findings.2026-01-31.jsonl``, ``modbus.jsonl.1``).

How age is measured:

- **Files**: their modification time, i.e. when the newest record in them was written, so a
  file goes when everything in it has expired. Files that are appended to forever and never
  rotated (``scanned-devices.jsonl``, ``playbook-audit.jsonl``, the cases JSONL) lose their
  expired lines instead: the leading run of lines older than the cutoff (they are appended
  in time order; a line without a readable time stops the run and is kept), and for cases
  every line of a case last updated before the cutoff. The file is rewritten next to itself
  and renamed over it (writers open, append and close per record). A run directory whose
  data files are all gone loses its ``stats.json`` (no personal data) and is removed if then
  empty; the configured root directories themselves stay. Other files are never touched.
- **Elasticsearch**: a daily index (``sentinel-findings-2026.01.31``) is deleted once the
  whole day has expired; in the index of the day the cutoff falls in, the documents whose
  ``@timestamp`` is older are deleted by id (search, then bulk delete: portable to clusters
  without ``_delete_by_query``). Assets are deleted when last seen before the cutoff. Where
  the cluster has ILM, its policies are brought in line (``sentinel.es.setup``) as a
  second line of defence.
- **Spool** (documents Elasticsearch has not taken yet): a segment goes when its
  modification time is older than the cutoff of its queue (``findings/``: findings;
  ``bulk/``: the longest of transactions, flows, assets, since it mixes them). Inside
  ``sentinel run`` (the scheduler's retention job) the spool is the running Elasticsearch
  sink's: segments are expired through that sink's own ``Spool`` (under its mutex, the open
  segment closed first when it is that old). A spool another process holds is left alone
  and reported.
- **Audit log and re-identification table**: entry and row times.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import iso, parse_time
from sentinel.privacy.settings import PrivacySettings, privacy_settings
from sentinel.privacy.table import RevealTable

log = logging.getLogger(__name__)

OUTPUT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("findings*.jsonl*", "findings"),
    ("modbus*.jsonl*", "transactions"),
    ("eve*.json*", "transactions"),
    ("ot*.jsonl*", "transactions"),  # DNP3, IEC 104, S7comm, EtherNet/IP, BACnet messages
    ("dnp3*.jsonl*", "transactions"),
    ("flows*.jsonl*", "flows"),
    ("assets*.jsonl*", "assets"),
    ("sentinel-playbook-runs*.jsonl*", "audit"),  # the playbooks' JSONL document store
)
CAPTURE_PATTERNS = ("*.pcap", "*.pcapng", "*.cap", "*.pcap.gz", "*.pcapng.gz", "*.cap.gz")
RUN_STATS = "stats.json"
ES_DAILY = (
    ("findings", "sentinel-findings-"),
    ("transactions", "sentinel-modbus-"),
    ("flows", "sentinel-flows-"),
)
ES_ASSETS = "sentinel-assets"
ES_PLAYBOOK_RUNS = "sentinel-playbook-runs"  # playbooks.audit_index: its daily indices
ES_CASES = "sentinel-cases"  # actions.cases.index
CASE_TIME = "case.updated"
SCANNED_DEVICES = "scanned-devices*.jsonl*"
_SERVICE_OUTPUTS: list[Path] = []  # output directories of a running ``sentinel run``
_DAY = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})$")
DELETE_BATCH = 1000


@dataclass
class Action:
    """One deletion (done, or planned in a dry run)."""

    data_class: str
    store: str  # files, captures, elasticsearch, spool, audit, reveal_table
    target: str
    items: int | None = None  # documents, entries, rows (None for a whole file)

    def line(self, dry_run: bool) -> str:
        verb = "would delete" if dry_run else "deleted"
        what = f"{self.items:,} from " if self.items is not None else ""
        return f"{self.data_class}: {verb} {what}{self.store} {self.target}"


@dataclass
class RetentionReport:
    now: float
    dry_run: bool
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [a.line(self.dry_run) for a in self.actions]
        if not self.actions:
            out.append("nothing has expired")
        return out + [f"note: {n}" for n in self.notes]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.actions:
            out[a.data_class] = out.get(a.data_class, 0) + (1 if a.items is None else a.items)
        return out


def cutoffs(settings: PrivacySettings, now: float) -> dict[str, float | None]:
    """Per data class: data older than this (epoch seconds) has expired; None: never."""
    r = settings.retention
    out: dict[str, float | None] = {}
    for name in ("findings", "transactions", "flows", "assets", "captures", "audit"):
        seconds = r.seconds(name)
        out[name] = None if seconds is None else now - seconds
    seconds = r.seconds("reveal_table")
    out["reveal_table"] = None if seconds is None else now - seconds
    return out


def run_retention(
    config: Any,
    now: float | None = None,
    *,
    dry_run: bool = False,
    settings: PrivacySettings | None = None,
    es_client: Any = None,
    env: Mapping[str, str] | None = None,
) -> RetentionReport:
    """Delete what has expired at ``now`` (wall clock by default); see the module doc.

    ``settings`` replaces the config's ``privacy`` section; ``es_client`` the client built
    from ``sinks.elasticsearch`` and the ``SENTINEL_ES_*`` environment (tests).
    """
    now = time.time() if now is None else now
    settings = settings or privacy_settings(config)
    report = RetentionReport(now, dry_run)
    cut = cutoffs(settings, now)
    r = settings.retention
    cases = _setting(config, "actions", "cases", "index") or ES_CASES
    lines = {SCANNED_DEVICES: ("assets", "scanned_at", None), f"{cases}.jsonl": _CASES}
    for root in output_dirs(config, settings):
        expire_outputs(root, cut, dry_run, report, lines)
    audit_path = playbook_audit_path(config)
    if audit_path is not None and cut["audit"] is not None and audit_path.is_file():
        expire_lines(audit_path, "audit", cut["audit"], "@timestamp", None, dry_run, report)
    for root in capture_dirs(config, settings):
        expire_captures(root, cut["captures"], dry_run, report)
    if r.spool:
        path = _spool_path(config)
        if path is not None:
            expire_spool(path, cut, dry_run, report)
    if r.elasticsearch:
        client = es_client if es_client is not None else _es_client(config, env, report)
        if client is not None:
            runs = _setting(config, "playbooks", "audit_index") or ES_PLAYBOOK_RUNS
            expire_elasticsearch(client, cut, dry_run, report, runs + "-", cases)
    if cut["audit"] is not None:
        audit = AuditLog(settings.audit_path())
        if audit.path.exists():
            n = audit.expire(cut["audit"], dry_run=dry_run, now=now)
            if n:
                report.actions.append(Action("audit", "audit", str(audit.path), n))
    table_path = settings.pseudonymization.reveal_table
    if cut["reveal_table"] is not None and table_path and Path(table_path).exists():
        table = RevealTable(table_path)
        try:
            n = table.expired(cut["reveal_table"]) if dry_run else table.expire(cut["reveal_table"])
        finally:
            table.close()
        if n:
            report.actions.append(Action("reveal_table", "reveal_table", table_path, n))
    if not dry_run and report.actions:
        AuditLog(settings.audit_path()).append(
            "retention", now=now, deleted=report.counts(), cutoffs=_iso_cutoffs(cut)
        )
    return report


def _iso_cutoffs(cut: dict[str, float | None]) -> dict[str, str | None]:
    return {k: (None if v is None else iso(v)) for k, v in cut.items()}


# ---------------------------------------------------------------------------- files
def _data_class(name: str) -> str | None:
    for pattern, data_class in OUTPUT_PATTERNS:
        if fnmatch.fnmatchcase(name, pattern):
            return data_class
    return None


def register_service_output(path: str | os.PathLike[str]) -> None:
    """``sentinel run`` writes into ``path``: retention covers it (in this process)."""
    p = Path(path).absolute()
    if p not in _SERVICE_OUTPUTS:
        _SERVICE_OUTPUTS.append(p)


def unregister_service_output(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(ValueError):
        _SERVICE_OUTPUTS.remove(Path(path).absolute())


def _setting(config: Any, *names: str) -> Any:
    value = config
    for name in names:
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


def output_dirs(config: Any, settings: PrivacySettings) -> list[Path]:
    """Where retention looks for output files (see the module doc): ``output_dirs``, the
    service's output directory (registered by a running service, else ``sensor.out_dir``
    when it exists) and the playbooks' document folder when it exists."""
    dirs = [Path(d) for d in settings.retention.output_dirs] + list(_SERVICE_OUTPUTS)
    out_dir = _setting(config, "sensor", "out_dir")
    if out_dir and Path(out_dir).is_dir():
        dirs.append(Path(out_dir))
    documents = playbook_documents_dir(config)
    if documents is not None and documents.is_dir():
        dirs.append(documents)
    seen: dict[str, Path] = {}
    for d in dirs:
        seen.setdefault(os.path.realpath(d), d)
    return list(seen.values())


def playbook_documents_dir(config: Any) -> Path | None:
    """The JSONL document store of cases and playbook runs (``sentinel.respond.factory``)."""
    playbooks = getattr(config, "playbooks", None)
    cases_jsonl = _setting(config, "actions", "cases", "jsonl")
    if cases_jsonl:
        return Path(cases_jsonl).parent
    if playbooks is not None and hasattr(playbooks, "state"):
        return Path(playbooks.state()) / "documents"
    return None


def playbook_audit_path(config: Any) -> Path | None:
    playbooks = getattr(config, "playbooks", None)
    if playbooks is not None and hasattr(playbooks, "audit_path"):
        return Path(playbooks.audit_path())
    return None


LineRule = tuple[str, str | None, str | None]  # data class, time field, group-by field
_CASES: LineRule = ("findings", None, "_id")  # time: doc.case.updated, else doc.@timestamp


def expire_outputs(
    root: Path,
    cut: dict[str, float | None],
    dry_run: bool,
    report: RetentionReport,
    lines: Mapping[str, LineRule] | None = None,
) -> None:
    """JSONL/EVE files under ``root`` (see the module doc); symbolic links are not followed.
    ``lines``: file-name patterns whose files lose expired lines instead (``expire_lines``)."""
    if not root.is_dir():
        if root.exists() or root.is_symlink():
            report.notes.append(f"output directory {root} is not a directory: skipped")
        return
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        remaining = 0
        for name in filenames:
            path = here / name
            rule = next((v for k, v in (lines or {}).items() if fnmatch.fnmatchcase(name, k)), None)
            if rule is not None:
                cutoff = cut[rule[0]]
                if cutoff is not None and not path.is_symlink():
                    expire_lines(path, rule[0], cutoff, rule[1], rule[2], dry_run, report)
                continue
            data_class = _data_class(name)
            if data_class is None:
                continue
            cutoff = cut[data_class]
            if path.is_symlink() or cutoff is None or path.lstat().st_mtime >= cutoff:
                remaining += 1
                continue
            report.actions.append(Action(data_class, "file", str(path)))
            if not dry_run:
                path.unlink()
        stats = here / RUN_STATS
        had_data = any(_data_class(n) for n in filenames)
        run_gone = had_data and remaining == 0 and stats.is_file() and not stats.is_symlink()
        if run_gone and not dry_run:
            stats.unlink()
            if here != root:
                with contextlib.suppress(OSError):
                    here.rmdir()  # only if nothing else is in it


def _line_time(rec: Any, field_name: str | None) -> float | None:
    if not isinstance(rec, dict):
        return None
    if field_name is None:  # a case: {"_id", "_op", "doc": {"case": {"updated"}, "@timestamp"}}
        doc = rec.get("doc") if isinstance(rec.get("doc"), dict) else {}
        case = doc.get("case") if isinstance(doc.get("case"), dict) else {}
        value = case.get("updated") or doc.get("@timestamp")
    else:
        value = rec.get(field_name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_time(value)
        except SentinelError:
            return None
    return None


def expire_lines(
    path: Path,
    data_class: str,
    cutoff: float,
    time_field: str | None,
    group: str | None,
    dry_run: bool,
    report: RetentionReport,
) -> None:
    """Remove the expired lines of an append-only JSONL file (see the module doc): the
    leading run older than ``cutoff``, or with ``group``, every line of a group (a case)
    whose newest line is older. The file is rewritten and renamed over itself; if it grew
    meanwhile (a writer appended), the work is done again on the new content."""
    for _attempt in range(3):
        data = path.read_bytes()
        lines = data.splitlines(keepends=True)
        drop: set[int] = set()
        if group is None:
            for i, line in enumerate(lines):
                try:
                    ts = _line_time(json.loads(line), time_field)
                except ValueError:
                    ts = None
                if ts is None or ts >= cutoff:
                    break
                drop.add(i)
        else:
            newest: dict[str, float] = {}
            members: dict[str, list[int]] = {}
            for i, line in enumerate(lines):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                key = rec.get(group) if isinstance(rec, dict) else None
                if not isinstance(key, str):
                    continue
                ts = _line_time(rec, time_field)
                members.setdefault(key, []).append(i)
                newest[key] = max(newest.get(key, float("-inf")), ts if ts is not None else 1e300)
            for key, idx in members.items():
                if newest[key] < cutoff:
                    drop.update(idx)
        if not drop:
            return
        if dry_run:
            report.actions.append(Action(data_class, "lines of", str(path), len(drop)))
            return
        kept = b"".join(line for i, line in enumerate(lines) if i not in drop)
        tmp = path.with_name(path.name + ".retention.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, path.stat().st_mode & 0o777)
        with os.fdopen(fd, "wb") as out:
            out.write(kept)
            out.flush()
            os.fsync(out.fileno())
        if path.stat().st_size != len(data):  # appended meanwhile: again, with the new lines
            tmp.unlink()
            continue
        os.replace(tmp, path)
        report.actions.append(Action(data_class, "lines of", str(path), len(drop)))
        return
    report.notes.append(f"{path}: written to while expiring, left for the next run")


def capture_dirs(config: Any, settings: PrivacySettings) -> list[Path]:
    """``retention.capture_dirs`` and the playbooks' snapshot folder (``capture.snapshot``:
    ``actions.snapshot.dir``, default ``<playbooks state>/snapshots``) when it exists."""
    dirs = [Path(d) for d in settings.retention.capture_dirs]
    actions = getattr(config, "actions", None)
    playbooks = getattr(config, "playbooks", None)
    snapshot = getattr(getattr(actions, "snapshot", None), "dir", None)
    if snapshot:
        dirs.append(Path(snapshot))
    elif playbooks is not None and hasattr(playbooks, "state"):
        dirs.append(Path(playbooks.state()) / "snapshots")
    return list(dict.fromkeys(dirs))


def expire_captures(
    root: Path, cutoff: float | None, dry_run: bool, report: RetentionReport
) -> None:
    if cutoff is None or not root.is_dir():
        return
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if not any(fnmatch.fnmatchcase(name, p) for p in CAPTURE_PATTERNS):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() or path.lstat().st_mtime >= cutoff:
                continue
            report.actions.append(Action("captures", "file", str(path)))
            if not dry_run:
                path.unlink()


# ---------------------------------------------------------------------------- spool
def _spool_path(config: Any) -> Path | None:
    try:
        from sentinel.es.config import sink_section
        from sentinel.es.spool import default_spool_dir
    except ImportError:  # pragma: no cover - part of the install
        return None
    section = sink_section(config)
    if section is not None and section.spool.path:
        return Path(section.spool.path)
    path = default_spool_dir()
    return path if path.is_dir() else None


def expire_spool(
    path: Path, cut: dict[str, float | None], dry_run: bool, report: RetentionReport
) -> None:
    """Expired segments of the Elasticsearch spool, oldest first, under the spool's lock."""
    from sentinel.es.spool import BULK, FINDINGS, Spool, SpoolError

    if not path.is_dir():
        return
    bulk_classes = [cut["transactions"], cut["flows"], cut["assets"]]
    queue_cutoff = {
        FINDINGS: cut["findings"],
        BULK: None if None in bulk_classes else min(bulk_classes),  # type: ignore[type-var]
    }
    running = Spool.in_process(path)  # inside `sentinel run`: the sink's own spool
    if running is not None and not running.closed:
        spool, own = running, False
    else:
        try:
            spool, own = Spool(path), True
        except SpoolError as exc:
            report.notes.append(f"spool not expired: {exc.message}")
            return
    try:
        for queue, cutoff in queue_cutoff.items():
            if cutoff is None:
                continue
            segments, items = spool.expire(queue, cutoff, dry_run)
            if segments:
                data_class = "findings" if queue == FINDINGS else "transactions/flows/assets"
                target = f"{path / queue} ({segments} segments)"
                report.actions.append(Action(data_class, "spool", target, items))
    finally:
        if own:
            spool.close()


# ---------------------------------------------------------------------------- Elasticsearch
def _es_client(config: Any, env: Mapping[str, str] | None, report: RetentionReport) -> Any:
    from sentinel.es.client import connect
    from sentinel.es.config import ENV_PREFIX, resolve, sink_section

    section = sink_section(config)
    environ = os.environ if env is None else env
    if (section is None or not section.url) and not environ.get(ENV_PREFIX + "URL"):
        return None
    if section is not None and not section.enabled:
        return None
    try:
        return connect(resolve(section, None, environ))
    except SentinelError as exc:
        report.notes.append(f"Elasticsearch not expired: {exc.message}")
        return None


def _day_start(index: str) -> float | None:
    m = _DAY.search(index)
    if m is None:
        return None
    try:
        return datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC).timestamp()
    except ValueError:
        return None


def expire_elasticsearch(
    client: Any,
    cut: dict[str, float | None],
    dry_run: bool,
    report: RetentionReport,
    playbook_runs: str = ES_PLAYBOOK_RUNS + "-",
    cases: str = ES_CASES,
) -> None:
    """Daily indices, asset and case documents past their cutoff (see the module doc)."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    try:
        for data_class, prefix in (*ES_DAILY, ("audit", playbook_runs)):
            cutoff = cut[data_class]
            if cutoff is None:
                continue
            names = _indices(client, prefix + "*")
            for name in names:
                start = _day_start(name)
                if start is None or not name.startswith(prefix):
                    continue
                if start + 86400 <= cutoff:
                    n = _count(client, name, None)
                    report.actions.append(Action(data_class, "index", name, n))
                    if not dry_run:
                        client.indices.delete(index=name)
                elif start < cutoff:
                    _delete_older(client, name, cutoff, data_class, dry_run, report)
        if cut["assets"] is not None and _indices(client, ES_ASSETS):
            _delete_older(client, ES_ASSETS, cut["assets"], "assets", dry_run, report)
        if cut["findings"] is not None and _indices(client, cases):
            _delete_older(client, cases, cut["findings"], "findings", dry_run, report, CASE_TIME)
        _align_ilm(client, cut, dry_run, report)
    except (ApiError, TransportError) as exc:
        report.notes.append(f"Elasticsearch retention stopped: {_es_reason(exc)}")


def _indices(client: Any, pattern: str) -> list[str]:
    resp = client.options(ignore_status=404).indices.get(
        index=pattern, expand_wildcards="open,closed", ignore_unavailable=True
    )
    body = resp.body if hasattr(resp, "body") else resp
    return sorted(body) if isinstance(body, dict) and "error" not in body else []


def _count(client: Any, index: str, before: float | None, time_field: str = "@timestamp") -> int:
    query = {"match_all": {}} if before is None else _older(before, time_field)
    return int(client.count(index=index, query=query)["count"])


def _older(before: float, time_field: str = "@timestamp") -> dict[str, Any]:
    stamp = datetime.fromtimestamp(before, UTC).isoformat(timespec="microseconds")
    return {"range": {time_field: {"lt": stamp.replace("+00:00", "Z")}}}


def _delete_older(
    client: Any,
    index: str,
    before: float,
    data_class: str,
    dry_run: bool,
    report: RetentionReport,
    time_field: str = "@timestamp",
) -> None:
    total = _count(client, index, before, time_field)
    if not total:
        return
    report.actions.append(Action(data_class, "documents of", index, total))
    if dry_run:
        return
    client.indices.refresh(index=index)
    while True:
        hits = client.search(
            index=index,
            query=_older(before, time_field),
            size=DELETE_BATCH,
            source=False,
            sort=["_doc"],
        )["hits"]["hits"]
        if not hits:
            return
        ops = [{"delete": {"_index": h["_index"], "_id": h["_id"]}} for h in hits]
        resp = client.bulk(operations=ops, refresh="wait_for")
        if resp.get("errors"):
            failed = [i for i in resp["items"] if i["delete"].get("status", 200) >= 300]
            failed = [i for i in failed if i["delete"].get("status") != 404]
            if failed:
                reason = failed[0]["delete"].get("error", {})
                raise SentinelError(f"Elasticsearch refused deletions in {index}: {reason}")


def _align_ilm(
    client: Any, cut: dict[str, float | None], dry_run: bool, report: RetentionReport
) -> None:
    """Where the cluster has ILM, make its delete phases match the configured retention."""
    from sentinel.es import setup as es_setup

    if not es_setup.has_ilm(client):
        return
    findings = report.now - cut["findings"] if cut["findings"] is not None else None
    events = [cut["transactions"], cut["flows"]]
    events_age = None if None in events else report.now - min(events)  # type: ignore[type-var]
    if findings is None or events_age is None:
        report.notes.append(
            "a data class is kept forever: the ILM policies are left as they are (ILM cannot "
            "say 'never delete'); explicit deletion above applies"
        )
        return
    want = {"sentinel-findings": _es_age(findings), "sentinel-events": _es_age(events_age)}
    have = {}
    for name in want:
        resp = client.options(ignore_status=404).ilm.get_lifecycle(name=name)
        body = resp.body if hasattr(resp, "body") else resp
        policy = (body.get(name) or {}).get("policy", {}) if isinstance(body, dict) else {}
        have[name] = policy.get("phases", {}).get("delete", {}).get("min_age")
    if have == want:
        return
    if dry_run:
        report.notes.append(f"would set the ILM delete ages to {want} (now {have})")
        return
    es_setup.setup(
        client,
        findings_retention=want["sentinel-findings"],
        events_retention=want["sentinel-events"],
    )
    report.notes.append(f"ILM delete ages set to {want} (were {have})")


def _es_age(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 86400}d" if s % 86400 == 0 else f"{s}s"


def _es_reason(exc: Exception) -> str:
    meta = getattr(exc, "meta", None)
    status = getattr(meta, "status", None)
    return f"HTTP {status}: {getattr(exc, 'message', exc)}" if status else str(exc)[:200]
