"""``sentinel rules check|test|keywords`` and the rule options of ``sentinel analyze``.

- ``sentinel rules check PATH...`` loads rule files (directories: their ``*.rules``) and
  prints every problem as ``file:line: severity: reason``; it exits 1 if any rule failed to
  load (with ``--strict``, also on warnings), 0 otherwise.
- ``sentinel rules test RULES CAPTURE`` runs only those rules over a capture and prints each
  alert (frame, time, sid, message, endpoints), unaggregated.
- ``sentinel analyze --rules PATH`` (repeatable; files or directories) adds rule sets to the
  shipped ones, ``--rule-vars FILE`` sets address/port variables, and ``--format eve`` also
  writes Suricata-EVE-compatible ``eve.json`` next to the JSONL files.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime
from typing import Any

import click

from sentinel.cli import ANALYZE_EXTENSIONS, AnalyzeExtension, cli
from sentinel.config import Config, load_config
from sentinel.errors import RuleError
from sentinel.rules import loader
from sentinel.rules.keywords import keyword_table
from sentinel.rules.parser import ParseContext, RuleSet, load_classification, load_rules

EXIT_PROBLEMS = 1


@cli.group("rules")
def rules_group() -> None:
    """Check and test Suricata-compatible rule files."""


def _context(config: Config, vars_file: str | None, classification: str | None) -> ParseContext:
    variables = loader.variables_for(config, vars_file)
    class_file = classification or str(loader.shipped_classification())
    classes, problems = load_classification(class_file)
    ctx = ParseContext(variables, classes)
    ctx.problems = problems  # type: ignore[attr-defined]
    return ctx


@rules_group.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--rule-vars",
    "vars_file",
    type=click.Path(dir_okay=False),
    help="YAML with address-groups / port-groups.",
)
@click.option(
    "--classification",
    type=click.Path(dir_okay=False),
    help="classification.config to use (default: the shipped one).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Sentinel config (HOME_NET from its site networks).",
)
@click.option("--strict", is_flag=True, help="Warnings fail the check too.")
def check(
    paths: tuple[str, ...],
    vars_file: str | None,
    classification: str | None,
    config_path: str | None,
    strict: bool,
) -> None:
    """Load rule files and list every problem (exit 1 if a rule does not load)."""
    config = load_config(config_path)
    ctx = _context(config, vars_file, classification)
    rs = load_rules(paths, ctx, RuleSet(problems=list(ctx.problems)))  # type: ignore[attr-defined]
    for problem in rs.problems:
        click.echo(str(problem))
    n_err, n_warn = len(rs.errors), len(rs.warnings)
    click.echo(
        f"{len(rs.files)} file(s), {rs.signatures} signature(s) loaded, "
        f"{n_err} error(s), {n_warn} warning(s)",
        err=True,
    )
    if n_err or (strict and n_warn):
        sys.exit(EXIT_PROBLEMS)


@rules_group.command("test")
@click.argument("rules", type=click.Path())
@click.argument("capture", type=click.Path(dir_okay=False))
@click.option(
    "--rule-vars",
    "vars_file",
    type=click.Path(dir_okay=False),
    help="YAML with address-groups / port-groups.",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--with-shipped", is_flag=True, help="Load the shipped rule sets too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per alert.")
def test(
    rules: str,
    capture: str,
    vars_file: str | None,
    config_path: str | None,
    with_shipped: bool,
    as_json: bool,
) -> None:
    """Run RULES (a file or directory) over CAPTURE and show which rules fire where."""
    from sentinel.detectors.suricata import RuleDetector
    from sentinel.pipeline import Pipeline

    config = load_config(config_path)
    rs = loader.load_ruleset(config, (rules,), with_shipped, vars_file)
    for problem in rs.problems:
        click.echo(str(problem), err=True)
    detector = RuleDetector(config, rs)
    alerts: list[Any] = []
    detector.listeners.append(alerts.append)
    with tempfile.TemporaryDirectory(prefix="sentinel-rules-test-") as out:
        Pipeline(config, out, [detector]).run(capture)
    for a in alerts:
        c = a.conn
        src, dst = (c.orig_h, c.orig_p), (c.resp_h, c.resp_p)
        if not a.is_orig:
            src, dst = dst, src
        row = {
            "frame": a.frame,
            "time": datetime.fromtimestamp(a.ts, UTC).isoformat(timespec="microseconds"),
            "sid": a.rule.sid,
            "rev": a.rule.rev,
            "msg": a.rule.msg,
            "src": f"{src[0]}:{src[1]}",
            "dst": f"{dst[0]}:{dst[1]}",
            "direction": "to_server" if a.is_orig else "to_client",
            "file": f"{a.rule.location}",
        }
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"frame {row['frame']:>7}  {row['time']}  sid {row['sid']:<8} "
                f"{row['src']} -> {row['dst']}  {row['msg']}"
            )
    by_sid: dict[int, int] = {}
    for a in alerts:
        by_sid[a.rule.sid] = by_sid.get(a.rule.sid, 0) + 1
    summary = ", ".join(f"{sid}: {n}" for sid, n in sorted(by_sid.items())) or "no alerts"
    click.echo(f"{len(alerts)} alert(s) from {rs.signatures} signature(s): {summary}", err=True)
    if rs.errors:
        sys.exit(EXIT_PROBLEMS)


@rules_group.command("keywords")
def keywords() -> None:
    """List the rule keywords Sentinel understands."""
    for name, aliases, description in keyword_table():
        extra = f" (aliases: {aliases})" if aliases else ""
        click.echo(f"{name:<18} {description}{extra}")


# --------------------------------------------------------------------------- analyze options
def _apply(params: dict[str, Any], config: Config, out_dir: str) -> tuple[list, list]:
    """``--rules``, ``--rule-vars``, ``--format eve``: the run's rule detector replaces the
    default one (shipped sets only); rule files are parsed once per process (cached)."""
    paths = tuple(params.get("rules") or ())
    vars_file = params.get("rule_vars")
    eve = None
    if "eve" in set(params.get("output_format") or ()):
        from sentinel.privacy.settings import privacy_settings
        from sentinel.sinks.eve import EveSink

        eve = EveSink(out_dir, privacy_settings(config).minimization)
    if not paths and vars_file is None and eve is None:
        return [], []
    from sentinel.detectors.suricata import RuleDetector

    detector = RuleDetector(config, paths=paths, vars_file=vars_file, eve=eve)
    return [detector], [eve] if eve is not None else []


ANALYZE_EXTENSIONS.append(
    AnalyzeExtension(
        "rules",
        [
            click.Option(
                ["--rules", "rules"],
                multiple=True,
                type=click.Path(),
                help="Extra rule file or directory of *.rules (repeatable); added to the "
                "shipped rule sets.",
            ),
            click.Option(
                ["--rule-vars", "rule_vars"],
                type=click.Path(dir_okay=False),
                help="YAML with rule variables (address-groups, port-groups).",
            ),
            click.Option(
                ["--format", "output_format"],
                multiple=True,
                type=click.Choice(["jsonl", "eve"]),
                help="Output formats (repeatable); jsonl is always written, eve adds "
                "eve.json (Suricata EVE alerts and modbus records).",
            ),
        ],
        _apply,
    )
)

__all__ = ["RuleError", "rules_group"]
