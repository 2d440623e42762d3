"""Live-lab commands, added to ``sentinel lab`` by ``sentinel.lab.cli``: ``up``, ``down``,
``status``, ``run``, ``record``, ``replay`` (see ``sentinel.lab.live``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from sentinel.lab.cli import _scenario_names, lab


def _sites(sites: str | None) -> list[str]:
    from sentinel.lab.config import site_names

    return [s.strip() for s in sites.split(",") if s.strip()] if sites else site_names()


@lab.command("up")
@click.option("--sites", help="Comma-separated sites (default: all).")
@click.option(
    "--out",
    default="sentinel-lab-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The sensor's output directory.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--no-sensor", is_flag=True, help="Do not start the sensor.")
@click.option("--bpf", help="Kernel BPF filter of the sensor (tcpdump syntax).")
def up_cmd(sites: str | None, out: str, seed: int, no_sensor: bool, bpf: str | None) -> None:
    """Build the sites as network namespaces and start PLCs, HMIs and the sensor (root)."""
    from sentinel.lab.live import up

    state = up(_sites(sites), out, seed, sensor=not no_sensor, bpf=bpf)
    click.echo(f"lab up: {', '.join(state['sites'])}; {len(state['processes'])} processes")
    if state["out"]:
        click.echo(f"sensor output: {state['out']}")


@lab.command("down")
def down_cmd() -> None:
    """Stop every lab process and remove every lab namespace, link and bridge."""
    from sentinel.lab.live import down

    removed = down()
    click.echo(f"lab down: {len(removed)} namespaces removed")


@lab.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(as_json: bool) -> None:
    """What runs in the lab."""
    from sentinel.lab.live import status

    st = status()
    if as_json:
        click.echo(json.dumps(st))
        return
    if not st["up"] and not st["namespaces"]:
        click.echo("lab is down")
        return
    click.echo(f"lab {'up' if st['up'] else 'partly up'}: sites {', '.join(st['sites'])}")
    for name, proc in st["processes"].items():
        click.echo(
            f"  {name:18s} pid {proc['pid']:>7}  {'running' if proc['alive'] else 'STOPPED'}"
        )
    click.echo(f"  namespaces: {len(st['namespaces'])}; sensor output: {st['out']}")


@lab.command("run")
@click.argument("scenarios", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every scenario.")
@click.option("--sites", help="Sites to attack, in turn (default: every site that is up).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False),
    help="Labels file to append to (default: the sensor's OUT/labels.jsonl).",
)
@click.option("--gap", type=float, default=3.0, show_default=True, help="Seconds between attacks.")
def run_cmd(
    scenarios: tuple[str, ...],
    all_: bool,
    sites: str | None,
    seed: int,
    labels: str | None,
    gap: float,
) -> None:
    """Run attack scenarios from the attacker namespace and write their labels."""
    from sentinel.errors import SentinelError
    from sentinel.lab.live import read_state, run_attacks
    from sentinel.lab.scenarios import get_scenarios

    names = _scenario_names(",".join(scenarios), all_)
    if not names:
        raise SentinelError("name scenarios to run, or --all")
    get_scenarios(names)
    if labels is None:
        out = read_state().get("out")
        if not out:
            raise SentinelError("no sensor output directory: give --labels")
        labels = str(Path(out) / "labels.jsonl")
    done = run_attacks(_sites(sites) if sites else None, names, seed, labels, gap)
    for label in done:
        click.echo(
            f"{label['scenario']:30s} {label['target']:16s} {label['end'] - label['start']:7.2f} s"
        )
    click.echo(f"labels: {labels}")


@lab.command("record")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--seconds", type=float, default=60.0, show_default=True)
@click.option("--scenarios", help="Comma-separated scenarios to run meanwhile, or 'all'.")
@click.option("--seed", type=int, default=1, show_default=True)
def record_cmd(out: str, seconds: float, scenarios: str | None, seed: int) -> None:
    """Save a live run as OUT/capture.pcap + OUT/labels.jsonl (the lab must be up)."""
    from sentinel.lab.live import record

    info = record(out, seconds, _scenario_names(scenarios, False), seed)
    click.echo(f"{info['capture']}: {info['packets']:,} packets, {len(info['labels'])} attacks")


@lab.command("replay")
@click.argument("capture", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory of the sensor watching the replay.",
)
@click.option("--speed", type=float, help="tcpreplay --multiplier (default: as captured).")
@click.option("--bridge", help="Replay into this lab bridge (default: a dedicated one).")
def replay_cmd(capture: str, out: str, speed: float | None, bridge: str | None) -> None:
    """Replay a capture into a lab bridge with tcpreplay while the sensor watches it."""
    from sentinel.lab.live import replay

    started = time.time()
    stats = replay(capture, out, speed, bridge)
    click.echo(
        f"replayed {capture}: sensor saw {stats['packets']:,} packets "
        f"({stats['live']['kernel_drops']} dropped by the kernel), "
        f"{stats['findings']} findings, in {time.time() - started:.1f} s -> {out}"
    )
