"""``sentinel privacy ...`` and ``sentinel analyze --pseudonymize KEYFILE``.

- ``keygen PATH [--ring]``: a new key file (mode 600), or a key-ring directory with its first
  key; never overwrites.
- ``rotate KEYDIR [--at TIME] [--if-older DURATION]``: add a key to a ring.
- ``keys KEYSPEC``: the keys of a file, ring or ``env:NAME`` (ids, validity, IPv6 prefix;
  never the secret).
- ``reveal PSEUDONYM --reason TEXT [--at TIME]``: re-identify (key holders only), audited;
  ``--at`` (the record's ``@timestamp``) limits the keys tried to those a record of that time
  can carry.
- ``retention [--dry-run]``: delete what has expired (``run_retention``).
- ``check PATH...``: list addresses in clear outside the inventory in output files (exit 1).
- ``audit [--verify]``: print the audit log, or check its hash chain (exit 1 if broken).

``--pseudonymize KEYFILE`` (a key file, a key-ring directory or ``env:NAME``) turns
pseudonymization on for an analysis, as ``privacy.pseudonymization.enabled`` does.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from sentinel.cli import ANALYZE_EXTENSIONS, AnalyzeExtension, cli
from sentinel.config import Config
from sentinel.errors import SentinelError
from sentinel.privacy import runtime
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import Key, KeyRing, load_ring, parse_time, write_key_file
from sentinel.privacy.settings import PrivacySettings, parse_duration

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config."
)
audit_option = click.option(
    "--audit-log",
    "audit_log",
    type=click.Path(dir_okay=False),
    help="Audit log (default: privacy.audit_log, else $SENTINEL_STATE/privacy-audit.jsonl).",
)


def _audit(settings: PrivacySettings, override: str | None) -> AuditLog:
    return AuditLog(override) if override else AuditLog(settings.audit_path())


def _time(value: str | None) -> float | None:
    return None if value is None else parse_time(value)


@click.group("privacy")
def privacy_group() -> None:
    """Pseudonymization keys, re-identification, retention and output checks (GDPR)."""


# ---------------------------------------------------------------------------- keys
@privacy_group.command("keygen")
@click.argument("path", type=click.Path())
@click.option("--ring", is_flag=True, help="Make PATH a key-ring directory (for rotation).")
@click.option("--valid-from", metavar="TIME", help="ISO-8601 time the key starts (default now).")
@config_option
@audit_option
def keygen(
    path: str, ring: bool, valid_from: str | None, config_path: str | None, audit_log: str | None
) -> None:
    """Create a pseudonymization key (never overwrites one)."""
    _, settings = runtime.load(config_path)
    target = Path(path)
    start = _time(valid_from)
    if ring or target.is_dir():
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = KeyRing([], target, str(target)).add(start)
        written = key.path
    else:
        key = Key.generate(start)
        written = str(write_key_file(target, key))
    _audit(settings, audit_log).append("keygen", key_id=key.id, path=written)
    click.echo(f"{key.id}\t{written}")


@privacy_group.command("rotate")
@click.argument("keydir", type=click.Path(file_okay=False, exists=True))
@click.option("--at", "at", metavar="TIME", help="ISO-8601 time the new key starts (default now).")
@click.option(
    "--if-older", metavar="DURATION", help="Only if the active key is older (30d, 2w...)."
)
@config_option
@audit_option
def rotate(
    keydir: str,
    at: str | None,
    if_older: str | None,
    config_path: str | None,
    audit_log: str | None,
) -> None:
    """Add a key to a key ring; the previous keys stay for reveal."""
    _, settings = runtime.load(config_path)
    ring = load_ring(keydir)
    if if_older:
        try:
            period = parse_duration(if_older)
        except ValueError as exc:
            raise SentinelError(f"--if-older: {exc}") from None
        key = ring.rotate_if_due(period, _time(at))
        if key is None:
            click.echo(f"not due: {ring.active(_time(at)).id} is younger than {if_older}")
            return
    else:
        key = ring.add(_time(at))
    _audit(settings, audit_log).append("rotate", key_id=key.id, ring=keydir)
    click.echo(f"{key.id}\t{key.path}")


@privacy_group.command("keys")
@click.argument("keyspec")
def keys_cmd(keyspec: str) -> None:
    """List the keys of a key file, key ring or env:NAME (never the secrets)."""
    from sentinel.privacy.keys import iso
    from sentinel.privacy.pseudonymizer import Pseudonymizer

    ring = load_ring(keyspec)
    active = ring.active().id if any(k.valid_from <= time.time() for k in ring.keys) else None
    for key in ring.keys:
        prefix = Pseudonymizer(key).ipv6_prefix
        mark = "active" if key.id == active else ""
        click.echo(f"{key.id}\t{iso(key.valid_from)}\t{prefix}\t{key.path or keyspec}\t{mark}")


# ---------------------------------------------------------------------------- reveal
@privacy_group.command("reveal")
@click.argument("pseudonym")
@click.option("--reason", required=True, help="Why (incident, ticket): written to the audit log.")
@click.option("--key", "keyspec", metavar="KEYSPEC", help="Key file, key ring or env:NAME.")
@click.option(
    "--within",
    multiple=True,
    metavar="CIDR",
    help="Networks to search (repeatable; default: the declared network of the pseudonym).",
)
@click.option(
    "--table",
    type=click.Path(dir_okay=False),
    help="Re-identification table (default: privacy.pseudonymization.reveal_table).",
)
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="The record's time (ISO-8601, its @timestamp): only the keys in force then or "
    "before are tried (default: every key of the ring).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_option
@audit_option
def reveal_cmd(
    pseudonym: str,
    reason: str,
    keyspec: str | None,
    within: tuple[str, ...],
    table: str | None,
    at: str | None,
    as_json: bool,
    config_path: str | None,
    audit_log: str | None,
) -> None:
    """Re-identify a pseudonym (needs the key; every use is audited)."""
    import ipaddress

    from sentinel.privacy.reveal import reveal
    from sentinel.privacy.table import RevealTable

    config, settings = runtime.load(config_path)
    for w in within:
        try:
            ipaddress.ip_network(w, strict=False)
        except ValueError:
            raise SentinelError(f"--within: not a network: {w!r}") from None
    ring = runtime.load_keys(settings, keyspec, rotate=False)
    table_path = table or settings.pseudonymization.reveal_table
    if table and not Path(table).is_file():
        raise SentinelError(f"re-identification table not found: {table}")
    opened = RevealTable(table_path) if table_path and Path(table_path).is_file() else None
    try:
        result = reveal(
            pseudonym,
            ring,
            _audit(settings, audit_log),
            reason,
            networks=runtime.declared_networks(config),
            settings=settings.pseudonymization,
            within=list(within),
            table=opened,
            at=_time(at),
        )
    finally:
        if opened is not None:
            opened.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "pseudonym": result.pseudonym,
                    "kind": result.kind,
                    "outcome": result.outcome,
                    "matches": [vars(m) for m in result.matches],
                    "notes": result.notes,
                }
            )
        )
    else:
        for m in result.matches:
            click.echo(f"{result.pseudonym}\t{m.value}\t{m.key_id}\t{m.method}\t{m.key_valid}")
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
    if not result.matches:
        sys.exit(1)


# ---------------------------------------------------------------------------- retention
@privacy_group.command("retention")
@config_option
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--now", "now", metavar="TIME", help="Pretend it is TIME (ISO-8601).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def retention_cmd(config_path: str | None, dry_run: bool, now: str | None, as_json: bool) -> None:
    """Delete the data whose retention period has passed (privacy.retention)."""
    from sentinel.privacy.retention import run_retention

    config, settings = runtime.load(config_path)
    report = run_retention(config, _time(now), dry_run=dry_run, settings=settings)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "actions": [vars(a) for a in report.actions],
                    "counts": report.counts(),
                    "notes": report.notes,
                }
            )
        )
        return
    for line in report.lines():
        click.echo(line)


# ---------------------------------------------------------------------------- checks
@privacy_group.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@config_option
def check_cmd(paths: tuple[str, ...], config_path: str | None) -> None:
    """List addresses in clear outside the declared inventory in output files (exit 1)."""
    import ipaddress

    from sentinel.privacy.leaks import find_leaks

    config, settings = runtime.load(config_path)
    hosts: set[str] = set()
    nets = []
    for item in [*runtime.clear_addresses(config), *settings.pseudonymization.clear]:
        net = ipaddress.ip_network(item, strict=False)
        if net.num_addresses == 1:
            hosts.add(str(net.network_address))
        else:
            nets.append(net)

    def allowed(text: str) -> bool:
        return text in hosts or any(ipaddress.ip_address(text) in n for n in nets)

    leaks = find_leaks(paths, allowed)
    for leak in leaks:
        click.echo(str(leak))
    if leaks:
        click.echo(f"{len(leaks)} address(es) in clear outside the inventory", err=True)
        sys.exit(1)
    click.echo("no address in clear outside the inventory")


@privacy_group.command("audit")
@click.option("--verify", is_flag=True, help="Check the hash chain (exit 1 if broken).")
@config_option
@audit_option
def audit_cmd(verify: bool, config_path: str | None, audit_log: str | None) -> None:
    """Print the privacy audit log, or verify it."""
    _, settings = runtime.load(config_path)
    log = _audit(settings, audit_log)
    if verify:
        problems = log.verify()
        for p in problems:
            click.echo(f"{log.path}: {p}")
        if problems:
            sys.exit(1)
        click.echo(f"{log.path}: {len(log.entries())} entries, chain intact")
        return
    for entry in log.entries():
        click.echo(json.dumps(entry))


# ---------------------------------------------------------------------------- analyze
def _apply(params: dict[str, Any], config: Config, out_dir: str) -> tuple[list[Any], list[Any]]:
    """``--pseudonymize KEYFILE``: check the key and build the run's pseudonymizer now, so a
    bad key stops the command before any capture is read."""
    spec = params.get("pseudonymize")
    runtime.run_pseudonymizer(config, spec)
    return [], []


cli.add_command(privacy_group)
ANALYZE_EXTENSIONS.append(
    AnalyzeExtension(
        "privacy",
        [
            click.Option(
                ["--pseudonymize", "pseudonymize"],
                metavar="KEYFILE",
                help="Pseudonymize addresses and identifiers outside the declared inventory "
                "with this key (a key file, a key-ring directory, or env:NAME).",
            )
        ],
        _apply,
    )
)
