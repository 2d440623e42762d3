"""``sentinel model train|eval|show`` and the ``--model`` option of ``sentinel analyze``.

Imported by ``sentinel.cli`` on every start, so numpy, scikit-learn and skops are imported
only inside the commands that need them.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sentinel.cli import ANALYZE_EXTENSIONS, AnalyzeExtension, cli
from sentinel.config import Config, load_config
from sentinel.errors import SentinelError


@click.group("model")
def model() -> None:
    """Learned baselines: train, evaluate and inspect ML anomaly models (docs/ml.md)."""


@model.command("train")
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Model file.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config: safe limits of registers, detectors.ml.train settings.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no report.")
def train_cmd(
    captures: tuple[str, ...], out: str, config_path: str | None, as_json: bool, quiet: bool
) -> None:
    """Train a model on clean CAPTURES (time-ordered: the last part calibrates) into OUT."""
    from sentinel.capture.pcapfile import CaptureFile
    from sentinel.ml.persist import save_model
    from sentinel.ml.settings import ml_settings
    from sentinel.ml.train import train_model

    config = load_config(config_path)
    for capture in captures:  # refuse bad input before doing any work
        CaptureFile(capture).close()
    err = Console(stderr=True)
    progress = None if quiet or as_json else (lambda msg: err.print(f"[dim]{msg}[/]"))
    trained = train_model(list(captures), config, ml_settings(config), progress)
    save_model(trained, out)
    if as_json:
        click.echo(json.dumps(trained.report))
    elif not quiet:
        _print_summary(trained.report, out)
        _console().print(report_table(trained.report, "data sufficiency per channel"))
        _print_warnings(trained.report)


def _print_summary(report: dict[str, Any], path: str) -> None:
    scorers = sum(1 for r in report["channels"] if r["scorer"])
    click.echo(
        f"{path}: {report['training_hours']:.2f} h training, "
        f"{report['calibration_hours']:.2f} h calibration; {len(report['channels'])} channels, "
        f"{scorers} with a tier-2 scorer"
    )


def _console() -> Console:
    """Wide enough for channel keys when the output is not a terminal (logs, pipes)."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def report_table(report: dict[str, Any], title: str) -> Table:
    """The data-sufficiency report: one row per channel."""
    table = Table(title=title, title_justify="left")
    for col in ("channel (client|server|unit)", "requests", "windows", "tier 2", "armed checks"):
        table.add_column(col)
    table.add_column("not armed")
    for row in report["channels"]:
        armed = [k for k, v in row["armed"].items() if v]
        notes = "; ".join(f"{k}: {v}" for k, v in row["notes"].items())
        tier2 = "scorer" if row["scorer"] else "[yellow]insufficient[/]"
        table.add_row(
            row["channel"],
            f"{row['requests']:,}",
            f"{row['training_windows']:,}" + ("" if row["enough_windows"] else " (too few)"),
            tier2,
            ", ".join(armed) or "-",
            notes or "-",
        )
    return table


def _print_warnings(report: dict[str, Any]) -> None:
    console = _console()
    regs = ", ".join(f"{k} {v}" for k, v in report["registers"].items())
    console.print(f"registers: {regs or 'none'}")
    for d in report["disarmed"]:
        console.print(f"[yellow]{d['key']} {d['check']}: {d['note']}[/]")
    for w in report["warnings"]:
        console.print(f"[yellow]warning: {w}[/]")


@model.command("eval")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False))
@click.argument("capture", type=click.Path(dir_okay=False))
@click.option("--labels", required=True, type=click.Path(dir_okay=False), help="Lab labels.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds after an attack in which its alerts still count.",
)
@click.option(
    "--out", "out", type=click.Path(file_okay=False), help="Keep the run's output directory."
)
def eval_cmd(
    model_path: str,
    capture: str,
    labels: str,
    config_path: str | None,
    as_json: bool,
    grace: float,
    out: str | None,
) -> None:
    """Evaluate MODEL on a labelled CAPTURE: recall per attack type, time to detect, false
    alarms per hour of normal traffic, precision (the ml_anomaly detector's findings only)."""
    from sentinel.capture.pcapfile import CaptureFile
    from sentinel.ml.evaluate import evaluate
    from sentinel.ml.persist import load_model
    from sentinel.ml.settings import ml_settings

    config = load_config(config_path)
    CaptureFile(capture).close()
    trained = load_model(model_path)
    report = evaluate(trained, capture, labels, config, ml_settings(config), out, grace)
    if as_json:
        click.echo(json.dumps(report))
        return
    console = _console()
    table = Table(title=f"{capture} against {labels}", title_justify="left")
    for col in ("scenario", "types", "detected", "time to detect", "checks"):
        table.add_column(col)
    for a in report["attacks"]:
        ttd = a["time_to_detect_s"]
        table.add_row(
            a["scenario"],
            ", ".join(a["types"]),
            "yes" if a["detected"] else "[bold red]no[/]",
            "-" if ttd is None else f"{ttd:.3f} s",
            ", ".join(a["checks"]) or "-",
        )
    console.print(table)
    recall = Table(title="recall per attack type", title_justify="left")
    recall.add_column("type")
    recall.add_column("recall", justify="right")
    for t, r in report["recall"].items():
        recall.add_row(t, f"{100 * r:.1f} %")
    console.print(recall)
    console.print(
        f"false alarms: {report['false_alarms']} in {report['normal_hours']:.3f} h of normal "
        f"traffic ({report['false_alarms_per_hour']} per hour); precision "
        f"{report['precision']}; median time to detect {report['median_time_to_detect_s']} s"
    )


@model.command("show")
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Metadata, report and baseline as JSON.")
def show_cmd(model_path: str, as_json: bool) -> None:
    """Check a model file and print what it holds: versions, windows, the per-channel report."""
    from sentinel.ml.persist import load_model

    trained = load_model(model_path)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "metadata": trained.metadata,
                    "report": trained.report,
                    "baseline": trained.baseline,
                }
            )
        )
        return
    meta = trained.metadata
    console = _console()
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    console.print(f"model {model_path}: {versions}")
    console.print(
        f"feature schema v{meta['feature_schema']['version']}; estimator "
        f"{meta['settings']['estimator']}; data sha256 {meta['data_sha256'][:16]}..."
    )
    _print_summary(trained.report, model_path)
    console.print(report_table(trained.report, "data sufficiency per channel"))
    _print_warnings(trained.report)


def _apply(params: dict[str, Any], config: Config, out_dir: str) -> tuple[list, list]:
    path = params.get("model")
    if not path:
        return [], []
    from sentinel.ml.detector import MLDetector
    from sentinel.ml.persist import load_model
    from sentinel.ml.settings import ml_settings

    settings = ml_settings(config)
    if settings.model:
        raise SentinelError(
            "--model and the config's detectors.ml.model both name a model; give only one"
        )
    return [MLDetector(config, model=load_model(path), settings=settings)], []


ANALYZE_EXTENSIONS.append(
    AnalyzeExtension(
        "ml",
        [
            click.Option(
                ["--model"],
                type=click.Path(dir_okay=False),
                help="Score with a trained ML model (sentinel model train).",
            )
        ],
        _apply,
    )
)
cli.add_command(model)
