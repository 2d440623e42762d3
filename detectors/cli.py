"""Command-line pieces of the built-in detectors (imported by ``sentinel.cli`` if present).

- ``sentinel analyze --yara PATH`` (repeatable): more YARA rule files, or directories of
  ``*.yar``/``*.yara`` files, scanned in addition to the starter set and the config's
  ``detectors.yara.rules``. The rules are compiled before any capture is read; a rule that
  does not compile stops the command with one located line (``file:line: YARA: ...``).
- ``sentinel yara check [PATH...]``: compile rule files (the starter set when no path is given)
  and list the rules with their ids, severities and techniques; exit code 2 on an error.
"""

from __future__ import annotations

from typing import Any

import click

from sentinel.cli import ANALYZE_EXTENSIONS, AnalyzeExtension, cli
from sentinel.config import Config
from sentinel.pipeline.detector import Detector
from sentinel.sinks.base import Sink

from .yara_scan import YaraScanner, builtin_rule_files, compile_rules, rule_files


def _apply_yara(
    params: dict[str, Any], config: Config, out_dir: str
) -> tuple[list[Detector], list[Sink]]:
    paths = params.get("yara") or ()
    if not paths:
        return [], []
    # Replaces the registered scanner: the starter set and the config's rules, plus the
    # command line's (compiled now, so a bad rule fails before any work).
    return [YaraScanner(config, paths=list(paths))], []


ANALYZE_EXTENSIONS.append(
    AnalyzeExtension(
        "yara",
        [
            click.Option(
                ["--yara", "yara"],
                multiple=True,
                type=click.Path(),
                metavar="PATH",
                help="YARA rule file or directory of *.yar files (repeatable), scanned over "
                "payload streams and rebuilt files in addition to the built-in set.",
            )
        ],
        _apply_yara,
    )
)


@click.group("yara")
def yara_group() -> None:
    """YARA rules: check rule files."""


@yara_group.command("check")
@click.argument("paths", nargs=-1, type=click.Path())
def check(paths: tuple[str, ...]) -> None:
    """Compile YARA rule files (the built-in set if no PATH) and list their rules."""
    files = rule_files(paths) if paths else builtin_rule_files()
    _rules, infos = compile_rules(files)
    for info in infos.values():
        click.echo(
            f"{info.rule_id}\t{info.severity}\t{info.technique.id}\t"
            f"{info.namespace}.{info.identifier}"
        )
    click.echo(f"{len(infos)} rules in {len(files)} files: OK")


cli.add_command(yara_group)
