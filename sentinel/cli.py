"""The ``sentinel`` command.

Only this module installs log handlers and talks to the terminal. Errors a user can cause are
printed as one line (``sentinel: <what is wrong>``) with exit code 2; no traceback reaches the
user unless ``SENTINEL_DEBUG=1`` is set.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sentinel import __version__
from sentinel.capture.pcapfile import CaptureFile
from sentinel.config import Config, load_config
from sentinel.errors import ConfigError, SentinelError

if TYPE_CHECKING:
    from sentinel.pipeline.detector import Detector
    from sentinel.sinks.base import Sink

EXIT_USAGE = 2
err_console = Console(stderr=True)

# Modules that add sub-commands or analyze options; each is imported if it exists, and
# registers itself with ``cli.add_command`` / ``ANALYZE_EXTENSIONS``.
COMMAND_MODULES = (
    "sentinel.rules.cli",
    "sentinel.decode.cli",
    "sentinel.detectors.cli",
    "sentinel.es.cli",
    "sentinel.lab.cli",
    "sentinel.ml.cli",
    "sentinel.respond.cli",
    "sentinel.privacy.cli",
    "sentinel.service",
)


@dataclass
class AnalyzeExtension:
    """Options that a feature adds to ``sentinel analyze`` and what they turn on.

    ``apply(params, config, out_dir)`` is called for each capture before it is read, with
    every parsed option by name and the capture's output directory; it returns the detectors
    (each replaces the built-in detector of the same id) and the extra sinks of that run, or
    raises ``SentinelError`` for a bad value (then nothing has been analysed yet).
    """

    name: str
    options: list[click.Option]
    apply: Callable[[dict[str, Any], Config, str], tuple[list[Detector], list[Sink]]]


ANALYZE_EXTENSIONS: list[AnalyzeExtension] = []


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


@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), help="Output directory.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option(
    "--decode-only",
    is_flag=True,
    help="Decode and log only: no detectors, no findings (bulk log extraction, benchmarks).",
)
def analyze(
    captures: tuple[str, ...],
    out: str | None,
    config_path: str | None,
    quiet: bool,
    decode_only: bool,
    **extension_params: Any,
) -> None:
    """Analyse pcap/pcapng captures (gzip too) into JSONL logs, findings and stats.

    With --out DIR and one capture, the results go into DIR; otherwise each capture gets
    DIR/<capture name>/ (DIR defaults to ./sentinel-out).
    """
    from sentinel.pipeline import Pipeline
    from sentinel.privacy.runtime import run_pseudonymizer

    config = load_config(config_path)
    for capture in captures:  # refuse bad input before doing any work
        CaptureFile(capture).close()
    # None unless --pseudonymize or privacy.pseudonymization.enabled; one for all captures
    pseudonymizer = run_pseudonymizer(config, extension_params.get("pseudonymize"))
    console = Console()
    for capture, out_dir in zip(captures, _output_dirs(captures, out), strict=True):
        # Fresh detectors and sinks per capture: detectors keep state, sinks write per run.
        detectors, sinks = run_components(config, extension_params, str(out_dir), decode_only)
        progress = None
        bar = None
        if not quiet:
            bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            task = bar.add_task(Path(capture).name, total=None)
            progress = _progress_callback(bar, task)
            bar.start()
        try:
            result = Pipeline(
                config, out_dir, detectors, sinks, progress, pseudonymizer=pseudonymizer
            ).run(capture)
        finally:
            if bar is not None:
                bar.stop()
        if not quiet:
            console.print(_summary(result.stats, result.out_dir))


def run_components(
    config: Config, params: dict[str, Any], out_dir: str, decode_only: bool = False
) -> tuple[list[Detector], list[Sink]]:
    """The detectors and extra sinks of one run: the built-in detectors, then what the
    analyze extensions add for ``params`` (an extension's detector replaces the built-in one
    of the same id). ``decode_only`` keeps the sinks and drops every detector."""
    import sentinel.detectors  # noqa: F401 - registers the built-in detectors
    from sentinel.pipeline.detector import REGISTRY

    detectors: dict[str, Detector] = {}
    if not decode_only:
        detectors = {cls.id: cls(config) for cls in REGISTRY.values()}
    sinks: list[Sink] = []
    for ext in ANALYZE_EXTENSIONS:
        ext_detectors, ext_sinks = ext.apply(params, config, out_dir)
        sinks += ext_sinks
        if not decode_only:
            for det in ext_detectors:
                detectors[det.id] = det
    return list(detectors.values()), sinks


def _progress_callback(bar: Progress, task: Any) -> Callable[[int, int], None]:
    return lambda done, total: bar.update(task, completed=done, total=total)


def _register_extensions() -> None:
    import importlib
    import importlib.util

    for name in COMMAND_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package does not exist (yet)
            found = False
        if found:
            importlib.import_module(name)
    params = list(analyze.__click_params__) if hasattr(analyze, "__click_params__") else []
    for ext in ANALYZE_EXTENSIONS:
        params += ext.options
    cli.add_command(click.Command("analyze", callback=analyze, params=params, help=analyze.__doc__))


def _summary(stats: dict[str, Any], out_dir: str) -> Table:
    table = Table(title=f"{stats['capture']} -> {out_dir}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    pps = stats["packets_per_second"]
    table.add_row(
        "packets",
        f"{stats['packets']:,} in {stats['elapsed_seconds']:.2f} s"
        + (f" ({pps:,} packets/s)" if pps else ""),
    )
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
    ot = _ot_summary(stats.get("ot"))
    if ot:
        table.add_row("OT (tshark)", ot)
    by_sev = stats["findings_by_severity"]
    detail = ", ".join(f"{k} {v}" for k, v in sorted(by_sev.items()))
    table.add_row("findings", f"{stats['findings']:,}" + (f" ({detail})" if detail else ""))
    return table


def _ot_summary(ot: dict[str, Any] | None) -> str | None:
    """One line on the OT decoding (DNP3, IEC 104, S7comm, CIP, BACnet through tshark)."""
    if not ot:
        return None
    status = ot.get("status")
    if status == "off":
        return "off"
    if status == "idle":
        return "no OT flow (tshark not started)"
    if status == "tshark-missing":
        return "tshark not found (apt-get install tshark)"
    by_protocol = ", ".join(f"{k} {v:,}" for k, v in ot.get("events_by_protocol", {}).items())
    line = f"{ot.get('events', 0):,} events" + (f" ({by_protocol})" if by_protocol else "")
    version = (ot.get("tshark") or {}).get("version")
    if version:
        line += f", tshark {version}"
    return line if status == "ok" else f"{line}, {status}"


def main(argv: Sequence[str] | None = None) -> None:
    try:
        if "analyze" not in cli.commands:
            _register_extensions()
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
        click.echo(
            f"sentinel: internal error: {type(exc).__name__}: {exc} "
            "(set SENTINEL_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(70)


if __name__ == "__main__":
    # Run as ``python -m sentinel.cli``, this file is ``__main__``; the command modules register
    # on the ``sentinel.cli`` module's group, so that is the one to run.
    from sentinel.cli import main as _main

    _main()
