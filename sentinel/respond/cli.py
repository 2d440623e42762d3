"""``sentinel playbook ...`` and ``sentinel jobs ...``.

- ``sentinel playbook check [PATH...] [--config FILE]``: every problem of the playbooks (and,
  with a config, of their targets) as ``file:line:col: message``; exit 2 when there is one.
  Without PATH, the config's playbooks (or, without config, the shipped ones).
- ``sentinel playbook list``: the shipped playbooks.
- ``sentinel playbook test PLAYBOOK --finding FILE``: PLAYBOOK is a file or a shipped id; FILE
  holds one finding (JSON) or several (JSON Lines, ``-`` for standard input). Shows whether
  each finding triggers the playbook (and if not, why) and what every step would do; nothing
  is carried out and nothing is recorded.
- ``sentinel playbook pending [--all]``: actions waiting for approval.
- ``sentinel playbook approve RUN_ID [--step STEP] [--by NAME]``: approve them; the running
  service carries them out within a second.
- ``sentinel jobs list``: configured jobs, schedule, next and last run.
- ``sentinel jobs run NAME [--dry-run] [--address IP] [--out FILE]``: run a job now.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from sentinel.cli import EXIT_USAGE, cli
from sentinel.errors import SentinelError

CONFIG = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config."
)


def _config(path: str | None) -> Any:
    from sentinel.config import load_config

    return load_config(path)


@cli.group("playbook")
def playbook() -> None:
    """Check, test and approve response playbooks."""


@playbook.command("check")
@click.argument("paths", nargs=-1, type=click.Path(exists=False))
@CONFIG
def check(paths: tuple[str, ...], config_path: str | None) -> None:
    """Report every problem of playbook files (and of their targets, with --config)."""
    from sentinel.respond.factory import load_configured
    from sentinel.respond.model import check_targets, load_playbooks
    from sentinel.respond.settings import section

    config = _config(config_path) if config_path else None
    for p in paths:
        if not os.path.exists(p):
            raise SentinelError(f"{p}: no such file or folder")
    if paths:
        result = load_playbooks(paths)
        if config is not None:
            actions = section(config, "actions")
            for loaded in result.playbooks:
                result.problems += check_targets(loaded, actions)
    elif config is not None:
        result = load_configured(config)
    else:
        result = load_playbooks(builtin="all")
    for problem in result.problems:
        click.echo(str(problem))
    n = len(result.playbooks)
    if result.problems:
        click.echo(f"{len(result.problems)} problem(s) in {result.files} file(s)", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"{n} playbook(s) OK")


@playbook.command("list")
def list_playbooks() -> None:
    """The playbooks shipped with Sentinel (use them with playbooks.builtin in the config)."""
    from sentinel.respond.model import load_playbooks

    result = load_playbooks(builtin="all")
    for loaded in result.playbooks:
        pb = loaded.playbook
        steps = ", ".join(s.action for s in pb.steps)
        click.echo(f"{pb.id:24} {pb.name}  [{steps}]")


def _read_findings(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    except OSError as exc:
        raise SentinelError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SentinelError(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text)
        docs = data if isinstance(data, list) else [data]
    except ValueError:
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line))
            except ValueError as exc:
                raise SentinelError(f"{path}:{n}: not JSON: {exc}") from None
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            raise SentinelError(f"{path}: finding {i} is not a JSON object")
    if not docs:
        raise SentinelError(f"{path}: no finding in it")
    return docs


class _NoAudit:
    def write(self, record: dict[str, Any]) -> None:
        """``playbook test`` records nothing."""


@playbook.command("test")
@click.argument("playbook_ref")
@click.option("--finding", "finding_path", required=True, help="JSON or JSONL finding(s), or -.")
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding.")
def test(playbook_ref: str, finding_path: str, config_path: str | None, as_json: bool) -> None:
    """Show what PLAYBOOK (a file or a shipped id) would do for the finding(s)."""
    from sentinel.pipeline.engine import SiteLabels
    from sentinel.respond.actions import Services
    from sentinel.respond.factory import protected_networks
    from sentinel.respond.model import builtin_files, check_targets, load_file
    from sentinel.respond.runner import PlaybookRunner
    from sentinel.respond.settings import section

    config = _config(config_path)
    shipped = builtin_files()
    path = shipped.get(playbook_ref) if not os.path.exists(playbook_ref) else Path(playbook_ref)
    if path is None:
        raise SentinelError(f"{playbook_ref}: no such file, nor a shipped playbook")
    loaded, problems = load_file(path)
    actions = section(config, "actions")
    if loaded is not None and config_path:
        problems += check_targets(loaded, actions)
    if problems or loaded is None:
        for problem in problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_USAGE)
    jobs = section(config, "jobs")
    services = Services(
        settings=actions,
        observer=config.observer.name,
        scan_jobs=frozenset(n for n, j in jobs.items() if j.type == "modbus.inventory"),
        protected=protected_networks(config, actions),
        site_of=SiteLabels(config).lookup,
    )
    runner = PlaybookRunner(
        [loaded],
        services,
        _NoAudit(),
        None,
        synchronous=True,  # type: ignore[arg-type]
        approval_poll=None,
    )
    try:
        for doc in _read_findings(finding_path):
            reason = runner.matches(doc)[0][1] if loaded.playbook.enabled else "disabled"
            record = None if reason else runner.run(loaded, doc, dry_run=True)
            if as_json:
                out: dict[str, Any] = {
                    "playbook": loaded.playbook.id,
                    "finding": (doc.get("event") or {}).get("id"),
                    "matches": reason is None,
                    "reason": reason,
                }
                if record is not None:
                    out["steps"] = [s.__dict__ for s in record.steps]
                click.echo(json.dumps(out, default=str))
                continue
            fid = (doc.get("event") or {}).get("id") or "(no event.id)"
            rule = (doc.get("rule") or {}).get("id")
            if reason:
                click.echo(f"finding {fid} (rule {rule}): no match: {reason}")
                continue
            click.echo(f"finding {fid} (rule {rule}): playbook {loaded.playbook.id} would run:")
            for i, s in enumerate(record.steps, 1):  # type: ignore[union-attr]
                flag = " [needs approval]" if s.detail.get("needs_approval") else ""
                if s.status == "dry_run":
                    click.echo(f"  {i}. {s.step} ({s.action}): {s.summary}{flag}")
                else:
                    click.echo(f"  {i}. {s.step} ({s.action}): {s.status}: {s.error}")
    finally:
        runner.close()


def _store(config: Any) -> Any:
    from sentinel.respond.approvals import ApprovalStore
    from sentinel.respond.settings import section

    return ApprovalStore(section(config, "playbooks").approvals_path())


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@playbook.command("pending")
@CONFIG
@click.option("--all", "show_all", is_flag=True, help="Also approved, done and expired ones.")
@click.option("--json", "as_json", is_flag=True)
def pending(config_path: str | None, show_all: bool, as_json: bool) -> None:
    """Actions waiting for an operator's approval."""
    store = _store(_config(config_path))
    try:
        entries = store.list(None if show_all else "pending")
    finally:
        store.close()
    if as_json:
        for e in entries:
            click.echo(json.dumps(e.to_dict(), default=str))
        return
    if not entries:
        click.echo("no action waits for approval")
        return
    for e in entries:
        click.echo(
            f"{e.run_id}  {e.step_id:14} {e.playbook:22} {e.status:9} expires {_when(e.expires)}"
            f"\n    {e.summary}"
            + (
                f"\n    approved by {e.approved_by} at {_when(e.approved_at)}"
                if e.approved_by
                else ""
            )
        )


@playbook.command("approve")
@click.argument("run_id")
@click.option("--step", "step_id", help="Approve only this step of the run.")
@click.option("--by", "by", help="Who approves (default: the login name).")
@CONFIG
def approve(run_id: str, step_id: str | None, by: str | None, config_path: str | None) -> None:
    """Approve the pending actions of RUN_ID (the service carries them out)."""
    who = by or os.environ.get("SUDO_USER") or getpass.getuser()
    store = _store(_config(config_path))
    try:
        approved = store.approve(run_id, who, step_id)
    finally:
        store.close()
    for a in approved:
        click.echo(f"approved {a.run_id} {a.step_id} by {who}: {a.summary}")


# -- jobs
@cli.group("jobs")
def jobs() -> None:
    """Scheduled jobs: inventory, integrity checks, retraining, retention."""
    import logging

    # pymodbus logs every refused connection as an error; for a scan that is an answer.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@jobs.command("list")
@CONFIG
@click.option("--json", "as_json", is_flag=True)
def jobs_list(config_path: str | None, as_json: bool) -> None:
    """Configured jobs with their schedule, next run and last result."""
    from sentinel.schedule.service import SchedulerService

    rows = SchedulerService(_config(config_path)).list_jobs()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no job in the config")
        return
    for r in rows:
        state = "" if r["enabled"] else " (disabled)"
        last = (
            f"last {r['last_run']} {r['last_status']} ({r['last_findings']} findings)"
            if r["last_run"]
            else "never run"
        )
        click.echo(
            f"{r['name']:24} {r['type']:17} {r['schedule']:16} next {r['next_run'] or '-'}"
            f"  {last}{state}"
        )


@jobs.command("run")
@click.argument("name")
@CONFIG
@click.option("--dry-run", is_flag=True, help="Show the requests, send nothing.")
@click.option("--address", help="Only this device (it must be inside the job's scopes).")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Append findings (JSONL).")
@click.option("--json", "as_json", is_flag=True, help="The result as JSON.")
def jobs_run(
    name: str,
    config_path: str | None,
    dry_run: bool,
    address: str | None,
    out: str | None,
    as_json: bool,
) -> None:
    """Run job NAME now (exit 2 when it refuses to run, 1 when it fails)."""
    from sentinel.schedule.service import SchedulerService

    findings: list[dict[str, Any]] = []
    service = SchedulerService(_config(config_path), emit=findings.append)
    result = service.run_now(name, dry_run=dry_run, only_address=address)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            for doc in findings:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    if as_json:
        data = result.to_dict()
        data["findings"] = findings
        click.echo(json.dumps(data, default=str))
    else:
        click.echo(f"job {name} ({result.type}): {result.status}, {result.requests} requests")
        for line in result.planned:
            click.echo(f"  would send: {line}")
        for dev in result.devices:
            ident = dev.get("identity") or {}
            what = " ".join(str(v) for v in ident.values()) or dev.get("server_id") or ""
            points = dev.get("points")
            extra = (
                ", ".join(f"{k}={v.get('value', v.get('error'))}" for k, v in points.items())
                if points
                else what
            )
            click.echo(f"  {dev['address']}:{dev['port']} unit {dev['unit']}: {extra}")
        for key, value in result.detail.items():  # retention and model.retrain: what they did
            if key != "notes" and value not in ({}, [], None):
                shown = value if isinstance(value, str | int | float) else json.dumps(value)
                click.echo(f"  {key}: {shown}")
        for doc in findings:
            click.echo(
                f"  finding [{doc['sentinel']['severity_label']}] {doc['rule']['id']}: "
                f"{doc['message']}"
            )
        for message in result.messages:
            click.echo(f"  note: {message}", err=True)
    if result.status == "refused":
        sys.exit(EXIT_USAGE)
    if result.status == "failed":
        sys.exit(1)
