"""The ``sentinel`` command.

Only this module installs log handlers and talks to the terminal. Errors a user can cause are
printed as one line (``sentinel: <what is wrong>``) with exit code 2; no traceback reaches the
user unless ``SENTINEL_DEBUG=1`` is set.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sentinel import __version__
from sentinel.capture.pcapfile import CaptureFile
from sentinel.config import load_config
from sentinel.errors import ConfigError, SentinelError

EXIT_USAGE = 2
err_console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sentinel")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Sentinel: cybersecurity monitoring for OT networks of critical infrastructure."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _output_dirs(captures: Sequence[str], out: str | None) -> list[Path]:
    """``--out DIR`` for one capture is DIR itself; otherwise DIR/<capture name>/ each."""
    base = Path(out) if out else Path("sentinel-out")
    if out and len(captures) == 1:
        return [base]
    names: list[Path] = []
    for capture in captures:
        name = Path(capture).name
        for suffix in (".gz", ".pcapng", ".pcap", ".cap"):
            name = name.removesuffix(suffix)
        candidate = base / name
        n = 2
        while candidate in names:  # two captures with the same name in different folders
            candidate = base / f"{name}-{n}"
            n += 1
        names.append(candidate)
    return names


@cli.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), help="Output directory.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def analyze(captures: tuple[str, ...], out: str | None, config_path: str | None,
            quiet: bool) -> None:
    """Analyse pcap/pcapng captures (gzip too) into JSONL logs, findings and stats."""
    from sentinel.pipeline import Pipeline

    config = load_config(config_path)
    for capture in captures:  # refuse bad input before doing any work
        CaptureFile(capture).close()
    console = Console()
    for capture, out_dir in zip(captures, _output_dirs(captures, out), strict=True):
        if quiet:
            result = Pipeline(config, out_dir).run(capture)
        else:
            with Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                TimeRemainingColumn(), console=err_console, transient=True,
            ) as bar:
                task = bar.add_task(Path(capture).name, total=None)
                result = Pipeline(
                    config, out_dir,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                ).run(capture)
            console.print(_summary(result.stats, result.out_dir))


def _summary(stats: dict[str, Any], out_dir: str) -> Table:
    table = Table(title=f"{stats['capture']} -> {out_dir}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    pps = stats["packets_per_second"]
    table.add_row("packets", f"{stats['packets']:,} in {stats['elapsed_seconds']:.2f} s"
                  + (f" ({pps:,} packets/s)" if pps else ""))
    table.add_row("flows", f"{stats['flows']:,}")
    table.add_row("modbus messages", f"{stats['modbus_messages']:,}")
    for func, n in list(stats["modbus_by_function"].items())[:12]:
        table.add_row(f"  {func}", f"{n:,}")
    table.add_row("devices seen", f"{stats['devices']:,}")
    anomalies = stats["anomalies"]
    table.add_row("anomalies", ", ".join(f"{k} {v:,}" for k, v in anomalies.items()) or "none")
    errors = stats["decode_errors"]
    if errors:
        table.add_row("decode errors", ", ".join(f"{k} {v:,}" for k, v in errors.items()))
    by_sev = stats["findings_by_severity"]
    detail = ", ".join(f"{k} {v}" for k, v in sorted(by_sev.items()))
    table.add_row("findings", f"{stats['findings']:,}" + (f" ({detail})" if detail else ""))
    return table


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="sentinel", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("sentinel: interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"sentinel: config: {problem}", err=True)
        sys.exit(EXIT_USAGE)
    except SentinelError as exc:
        click.echo(f"sentinel: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("sentinel: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("SENTINEL_DEBUG"):
            raise
        click.echo(f"sentinel: internal error: {type(exc).__name__}: {exc} "
                   "(set SENTINEL_DEBUG=1 for the traceback)", err=True)
        sys.exit(70)


if __name__ == "__main__":
    main()
