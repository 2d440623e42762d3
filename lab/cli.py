"""``sentinel lab``: the attack lab's commands.

- ``synth``: a synthetic capture and its labels, in simulated time (``sentinel.lab.synth``);
- ``score``: findings against labels (``sentinel.lab.score``);
- ``up``, ``down``, ``status``, ``run``, ``record``, ``replay``: the live lab in network
  namespaces (``sentinel.lab.live``), which needs root.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from sentinel.cli import cli


@click.group("lab")
def lab() -> None:
    """The attack lab: simulated sites, attack scenarios, captures, replay and scoring."""


def _scenario_names(scenarios: str | None, all_: bool) -> list[str]:
    from sentinel.lab.scenarios import load_scenarios

    if all_ or scenarios == "all":
        return list(load_scenarios())
    if not scenarios:
        return []
    return [s.strip() for s in scenarios.split(",") if s.strip()]


@lab.command("synth")
@click.option(
    "--site", "site_name", required=True, help="Site name (hospital, energy, transport) or file."
)
@click.option("--minutes", type=float, required=True, help="Minutes of packet time.")
@click.option("--scenarios", help="Comma-separated scenario names, or 'all'.")
@click.option("--all", "all_", is_flag=True, help="Every scenario.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Output directory."
)
@click.option(
    "--start", type=int, help="Epoch second the capture starts at (default 2024-05-06 08:00 UTC)."
)
def synth_cmd(
    site_name: str,
    minutes: float,
    scenarios: str | None,
    all_: bool,
    seed: int,
    out: str,
    start: int | None,
) -> None:
    """Write OUT/capture.pcap and OUT/labels.jsonl: a site's traffic with attacks, computed
    in simulated time (an hour takes seconds). The same seed gives the same bytes."""
    from sentinel.lab.config import load_site
    from sentinel.lab.scenarios import get_scenarios
    from sentinel.lab.synth import DEFAULT_START, synthesize

    site = load_site(site_name)
    chosen = get_scenarios(_scenario_names(scenarios, all_))
    result = synthesize(site, minutes, chosen, seed, out, start or DEFAULT_START)
    click.echo(
        f"{result.out_dir}/capture.pcap: {result.packets:,} packets, {result.bytes:,} bytes, "
        f"{(result.end - result.start) / 60:.1f} minutes of traffic, "
        f"{len(result.labels)} attacks labelled, in {result.seconds:.2f} s"
    )


@lab.command("score")
@click.argument("results", type=click.Path(exists=True))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option("--span", nargs=2, type=float, help="Observed time START END (epoch seconds).")
@click.option(
    "--grace",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds after an attack in which its findings still count.",
)
def score_cmd(
    results: str, labels: str, as_json: bool, span: tuple[float, float] | None, grace: float
) -> None:
    """Score findings (RESULTS: an output directory or findings.jsonl) against LABELS:
    per scenario detected or not and time to detect; false positives per hour."""
    from sentinel.lab.labels import read_labels
    from sentinel.lab.score import observed_span, read_findings, score

    found = read_findings(results)
    truth = read_labels(labels)
    observed = tuple(span) if span else observed_span(results, labels)
    report = score(found, truth, observed, grace)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(report))
        return
    table = Table(title=f"{results} against {labels}", title_justify="left")
    table.add_column("scenario")
    table.add_column("detected")
    table.add_column("time to detect", justify="right")
    for s in report["scenarios"]:
        ttd = s["time_to_detect_s"]
        table.add_row(
            s["name"],
            "yes" if s["detected"] else "[bold red]no[/]",
            "-" if ttd is None else f"{ttd:.3f} s",
        )
    console = Console()
    console.print(table)
    hours = report["normal_hours"]
    per_hour = report["false_positives_per_hour"]
    console.print(
        f"false positives: {report['false_positives']}"
        + (f" in {hours:.3f} normal hours ({per_hour} per hour)" if hours else "")
    )


from sentinel.lab import livecli  # noqa: E402, F401 - adds up/down/status/run/record/replay

cli.add_command(lab)
