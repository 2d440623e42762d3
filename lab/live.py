"""The live lab: sites as Linux network namespaces, real PLCs, HMIs, attacks and a sensor.

Layout (``sentinel lab up``), all of it inside namespaces, nothing in the host's own:

- ``sl-sw``, the switch: one bridge per site (the site file's ``lab.bridge``), the sensor
  and, for ``lab replay``, the replay bridge ``sl-replay``;
- one namespace per host: ``<bridge>-hmi``, ``<bridge>-eng``, ``<bridge>-p<last octet>``
  per PLC, each with ``eth0`` joined by a veth pair to its site's bridge;
- ``sl-att``, the attacker, with one interface per site (``a-<bridge suffix>``) on the
  site's bridge, at the site file's attacker address.

Addresses come from the site files (documentation range 198.51.100.0/24); there is no
default route anywhere, IPv6 is off in every lab namespace (no stray router or multicast
traffic), and ``up`` refuses to start when a site's subnet overlaps a route of the host.
Processes (one pymodbus server per PLC, the HMI, the engineering workstation, the sensor)
are started in their own session and recorded in ``state.json`` of the state directory
(``/run/sentinel-lab``, or ``$SENTINEL_LAB_STATE``). ``down`` stops every process in a lab
namespace and deletes the namespaces, which deletes every veth and bridge with them: it
works from the namespaces alone, so also after a crash that lost the state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from sentinel.errors import SentinelError
from sentinel.lab.config import SiteDef, load_site, merged_config

log = logging.getLogger(__name__)
PREFIX = "sl-"
SWITCH = "sl-sw"
ATTACKER = "sl-att"
REPLAY_BRIDGE = "sl-replay"
STOP_WAIT = 8.0


# ---------------------------------------------------------------------------- helpers
def state_dir() -> Path:
    return Path(os.environ.get("SENTINEL_LAB_STATE", "/run/sentinel-lab"))


def _ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SentinelError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def _require_root() -> None:
    if os.geteuid() != 0:
        raise SentinelError("the live lab needs root (network namespaces, raw sockets)")
    if shutil.which("ip") is None:
        raise SentinelError("the live lab needs iproute2's 'ip' command")


def lab_namespaces() -> list[str]:
    out = _ip("netns", "list", check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(PREFIX))


def _suffix(site: SiteDef) -> str:
    return site.lab.bridge.removeprefix(PREFIX)


def host_namespaces(site: SiteDef) -> dict[str, tuple[str, str, str]]:
    """Namespace -> (address, MAC, role) of every host of a site but the attacker."""
    b = site.lab.bridge
    lab = site.lab
    hosts = {
        f"{b}-hmi": (lab.hmi.address, lab.hmi.mac, "hmi"),
        f"{b}-eng": (lab.engineering.address, lab.engineering.mac, "engineering"),
    }
    for plc in lab.plcs:
        hosts[f"{b}-p{plc.asset.rsplit('.', 1)[1]}"] = (plc.asset, plc.mac, "plc")
    return hosts


def check_routes(sites: list[SiteDef]) -> None:
    """Refuse subnets that overlap a route of the host (other than a default route)."""
    out = _ip("-j", "route", "show", "table", "all", check=False)
    try:
        routes = json.loads(out or "[]")
    except ValueError:
        routes = []
    for site in sites:
        subnet = ipaddress.ip_network(site.lab.subnet)
        for route in routes:
            dst = route.get("dst", "")
            if dst in ("default", "") or ":" in dst:
                continue
            try:
                net = ipaddress.ip_network(dst, strict=False)
            except ValueError:
                continue
            if net.prefixlen and net.overlaps(subnet):
                raise SentinelError(
                    f"site {site.name}: lab subnet {subnet} overlaps the host's route {dst} "
                    f"(dev {route.get('dev', '?')}); refusing to start"
                )


def _sysctl_quiet(ns: str) -> None:
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.ip_forward=0",
        ],
        capture_output=True,
        check=False,
    )


def _add_ns(ns: str) -> None:
    _ip("netns", "add", ns)
    _sysctl_quiet(ns)
    _ip("link", "set", "lo", "up", ns=ns)


def _veth(ns: str, inner: str, port: str, bridge: str, address: str, mac: str, prefix: int) -> None:
    _ip("link", "add", port, "netns", SWITCH, "type", "veth", "peer", "name", inner, "netns", ns)
    _ip("link", "set", inner, "address", mac, ns=ns)
    _ip("addr", "add", f"{address}/{prefix}", "dev", inner, ns=ns)
    _ip("link", "set", inner, "up", ns=ns)
    _ip("link", "set", port, "master", bridge, "up", ns=SWITCH)


def _python() -> list[str]:
    return [sys.executable]


def _spawn(ns: str, args: list[str], name: str) -> int:
    logs = state_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *_python(), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _signal(pid: int, sig: int) -> None:
    """Signal a process we started and the session it leads."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, sig)


def _stop_pids(pids: list[int], wait: float = STOP_WAIT) -> None:
    """SIGTERM each process (and its session), wait, then SIGKILL what is left."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        _reap()
        if not any(_alive(p) for p in pids):
            return
        time.sleep(0.1)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    _reap()


def ns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def read_state() -> dict[str, Any]:
    path = state_dir() / "state.json"
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _write_state(state: dict[str, Any]) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    (state_dir() / "state.json").write_text(json.dumps(state, indent=2) + "\n")


# ---------------------------------------------------------------------------- up / down
def up(
    site_names: list[str], out: str, seed: int = 1, sensor: bool = True, bpf: str | None = None
) -> dict[str, Any]:
    """Build the lab and start its processes; returns the state."""
    _require_root()
    sites = [load_site(n) for n in site_names]
    if SWITCH in lab_namespaces():
        raise SentinelError("the lab is already up ('sentinel lab down' first)")
    check_routes(sites)
    state: dict[str, Any] = {
        "sites": [s.name for s in sites],
        "seed": seed,
        "started": time.time(),
        "processes": {},
        "out": None,
    }
    try:
        _add_ns(SWITCH)
        _add_ns(ATTACKER)
        for site in sites:
            bridge = site.lab.bridge
            prefix = ipaddress.ip_network(site.lab.subnet).prefixlen
            _ip("link", "add", bridge, "type", "bridge", "stp_state", "0", ns=SWITCH)
            _ip("link", "set", bridge, "up", ns=SWITCH)
            for ns, (address, mac, _role) in host_namespaces(site).items():
                _add_ns(ns)
                _veth(ns, "eth0", ns.removeprefix(PREFIX)[:15], bridge, address, mac, prefix)
            att = site.lab.attacker
            _veth(
                ATTACKER,
                f"a-{_suffix(site)}"[:15],
                f"{_suffix(site)}-att"[:15],
                bridge,
                att.address,
                att.mac,
                prefix,
            )
        _write_state(state)
        procs = state["processes"]
        for site in sites:
            for ns, (address, _mac, role) in host_namespaces(site).items():
                if role == "plc":
                    procs[ns] = _spawn(
                        ns,
                        [
                            "-m",
                            "sentinel.lab.plc",
                            "--site",
                            site.path,
                            "--plc",
                            address,
                            "--seed",
                            str(seed),
                        ],
                        ns,
                    )
        _wait_for_plcs(sites)
        if sensor:  # before the HMIs connect, so that it sees their handshakes
            state["out"] = str(Path(out).resolve())
            procs["sensor"] = start_sensor(sites, [s.lab.bridge for s in sites], state["out"], bpf)
            _write_state(state)
        for site in sites:
            for ns, (_address, _mac, role) in host_namespaces(site).items():
                if role != "plc":
                    procs[ns] = _spawn(
                        ns,
                        [
                            "-m",
                            "sentinel.lab.live",
                            "actor",
                            "--site",
                            site.path,
                            "--role",
                            role,
                            "--seed",
                            str(seed),
                        ],
                        ns,
                    )
        _write_state(state)
    except BaseException:
        down()
        raise
    return state


def _wait_for_plcs(sites: list[SiteDef], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for site in sites:
        for ns, (address, _mac, role) in host_namespaces(site).items():
            if role != "plc":
                continue
            while True:
                probe = subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        *_python(),
                        "-c",
                        f"import socket; socket.create_connection(({address!r}, 502), 0.5).close()",
                    ],
                    capture_output=True,
                )
                if probe.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise SentinelError(f"PLC {address} did not start (see {state_dir()}/logs)")
                time.sleep(0.2)


def start_sensor(
    sites: list[SiteDef], interfaces: list[str], out: str, bpf: str | None = None
) -> int:
    """Start the sensor in the switch namespace and wait until it captures."""
    Path(out).mkdir(parents=True, exist_ok=True)
    state_dir().mkdir(parents=True, exist_ok=True)
    config = state_dir() / "sensor-config.yaml"
    data = merged_config(sites).model_dump(exclude={"lab"}, exclude_defaults=True)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    ready = Path(out) / ".ready"
    ready.unlink(missing_ok=True)
    args = [
        "-m",
        "sentinel.lab.live",
        "sensor",
        "--config",
        str(config),
        "--out",
        out,
        "--ready",
        str(ready),
        *[a for i in interfaces for a in ("--interface", i)],
    ]
    if bpf:
        args += ["--bpf", bpf]
    pid = _spawn(SWITCH, args, "sensor")
    deadline = time.monotonic() + 30
    while not ready.exists():
        if not _alive(pid) or time.monotonic() > deadline:
            raise SentinelError(f"the sensor did not start (see {state_dir()}/logs/sensor.log)")
        time.sleep(0.05)
    return pid


def stop_sensor(pid: int) -> None:
    _stop_pids([pid], wait=30.0)


def down() -> list[str]:
    """Stop every lab process and delete every lab namespace; returns what was removed."""
    _require_root()
    state = read_state()
    pids = [p for p in state.get("processes", {}).values() if isinstance(p, int)]
    sensor = state.get("processes", {}).get("sensor")
    if isinstance(sensor, int) and _alive(sensor):
        stop_sensor(sensor)  # first, so that it flushes its outputs
    namespaces = lab_namespaces()
    for ns in namespaces:
        pids += ns_pids(ns)
    _stop_pids(sorted(set(p for p in pids if _alive(p))))
    for ns in namespaces:
        _ip("netns", "del", ns, check=False)
    (state_dir() / "state.json").unlink(missing_ok=True)
    return namespaces


def status() -> dict[str, Any]:
    state = read_state()
    namespaces = lab_namespaces()
    procs = {
        name: {"pid": pid, "alive": _alive(pid)} for name, pid in state.get("processes", {}).items()
    }
    stray = {ns: ns_pids(ns) for ns in namespaces}
    return {
        "up": SWITCH in namespaces,
        "sites": state.get("sites", []),
        "namespaces": namespaces,
        "processes": procs,
        "pids_in_namespaces": stray,
        "out": state.get("out"),
    }


# ---------------------------------------------------------------------------- attacks
def run_attacks(
    site_names: list[str] | None,
    scenario_names: list[str],
    seed: int,
    labels: str,
    gap: float = 3.0,
    warmup: float = 0.0,
    plan: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run scenarios from the attacker namespace and append their labels to ``labels``.

    Without a ``plan`` the scenarios run one after the other, ``gap`` seconds apart, against
    the given sites in turn. A plan is a list of ``{"site", "scenario"}`` items with optional
    ``"target"`` (a PLC address), ``"lane"`` (items of one lane run one after the other, lanes
    run at the same time) and ``"spacing"`` (least seconds from the start of an item to the
    start of the next in its lane)."""
    _require_root()
    state = read_state()
    if SWITCH not in lab_namespaces() or not state:
        raise SentinelError("the lab is not up ('sentinel lab up' first)")
    sites = site_names or state["sites"]
    if plan is None:
        plan = [
            {"site": sites[i % len(sites)], "scenario": name}
            for i, name in enumerate(scenario_names)
        ]
    missing = sorted({item["site"] for item in plan} - set(state["sites"]))
    if missing:
        raise SentinelError(f"site {', '.join(missing)} is not up")
    Path(labels).parent.mkdir(parents=True, exist_ok=True)
    before = Path(labels).read_text().splitlines() if Path(labels).exists() else []
    plan_file = state_dir() / "plan.json"
    plan_file.write_text(json.dumps(plan))
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ATTACKER,
            *_python(),
            "-m",
            "sentinel.lab.live",
            "attack",
            "--plan",
            str(plan_file),
            "--seed",
            str(seed),
            "--labels",
            str(Path(labels).resolve()),
            "--gap",
            str(gap),
            "--warmup",
            str(warmup),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SentinelError(f"attack run failed: {proc.stderr.strip()[-2000:]}")
    after = Path(labels).read_text().splitlines()
    return [json.loads(line) for line in after[len(before) :]]


# ---------------------------------------------------------------------------- record
def record(out: str, seconds: float, scenario_names: list[str], seed: int) -> dict[str, Any]:
    """Capture the lab's bridges into ``out/capture.pcap`` for ``seconds`` while running
    scenarios (after a quarter of the time as warm-up); write labels and ``run.json``."""
    _require_root()
    state = read_state()
    if SWITCH not in lab_namespaces() or not state:
        raise SentinelError("the lab is not up ('sentinel lab up' first)")
    sites = [load_site(n) for n in state["sites"]]
    path = Path(out).resolve()
    path.mkdir(parents=True, exist_ok=True)
    (path / "labels.jsonl").write_text("")
    ready = path / ".ready"
    ready.unlink(missing_ok=True)
    args = [
        "-m",
        "sentinel.lab.live",
        "record",
        "--out",
        str(path / "capture.pcap"),
        "--ready",
        str(ready),
        *[a for s in sites for a in ("--interface", s.lab.bridge)],
    ]
    pid = _spawn(SWITCH, args, "record")
    deadline = time.monotonic() + 30
    while not ready.exists():
        if not _alive(pid) or time.monotonic() > deadline:
            raise SentinelError("the recorder did not start")
        time.sleep(0.05)
    start = time.time()
    labels: list[dict[str, Any]] = []
    try:
        if scenario_names:
            labels = run_attacks(
                None, scenario_names, seed, str(path / "labels.jsonl"), warmup=seconds / 4
            )
        remaining = start + seconds - time.time()
        if remaining > 0:
            time.sleep(remaining)
    finally:
        _stop_pids([pid], wait=30.0)
        ready.unlink(missing_ok=True)
    from sentinel.capture.pcapfile import CaptureFile

    with CaptureFile(path / "capture.pcap") as cap:
        packets = sum(1 for _ in cap)
    info = {
        "sites": state["sites"],
        "seed": seed,
        "start": start,
        "end": time.time(),
        "scenarios": scenario_names,
        "packets": packets,
        "capture": "capture.pcap",
        "labels": "labels.jsonl",
    }
    (path / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return {**info, "capture": str(path / "capture.pcap"), "labels": labels}


# ---------------------------------------------------------------------------- replay
def replay(
    capture: str, out: str, speed: float | None = None, bridge: str | None = None
) -> dict[str, Any]:
    """Replay a capture with tcpreplay into a lab bridge (the dedicated replay bridge by
    default) while a sensor watches that bridge; returns the sensor's stats."""
    _require_root()
    if shutil.which("tcpreplay") is None:
        raise SentinelError("lab replay needs tcpreplay (apt-get install tcpreplay)")
    capture = str(Path(capture).resolve())
    from sentinel.capture.pcapfile import CaptureFile

    CaptureFile(capture).close()  # refuse what is not a capture before building anything
    standalone = SWITCH not in lab_namespaces()
    state = read_state()
    sites = [load_site(n) for n in state.get("sites", [])] if not standalone else []
    if standalone:
        _add_ns(SWITCH)
    try:
        target = bridge or REPLAY_BRIDGE
        created = False
        if target == REPLAY_BRIDGE and REPLAY_BRIDGE not in _ip("link", "show", ns=SWITCH):
            _ip("link", "add", REPLAY_BRIDGE, "type", "bridge", "stp_state", "0", ns=SWITCH)
            _ip("link", "add", "rp-in", "type", "veth", "peer", "name", "rp-port", ns=SWITCH)
            _ip("link", "set", "rp-port", "master", REPLAY_BRIDGE, "up", ns=SWITCH)
            for link in ("rp-in", REPLAY_BRIDGE):
                _ip("link", "set", link, "up", ns=SWITCH)
            created = True
        inject = "rp-in"
        if target != REPLAY_BRIDGE:  # into a site's bridge: through a port of its own
            inject = f"{target[:9]}-rpi"
            _ip(
                "link",
                "add",
                inject,
                "type",
                "veth",
                "peer",
                "name",
                f"{target[:9]}-rpp",
                ns=SWITCH,
            )
            _ip("link", "set", f"{target[:9]}-rpp", "master", target, "up", ns=SWITCH)
            _ip("link", "set", inject, "up", ns=SWITCH)
        if not sites:
            sites = [load_site(n) for n in ("hospital", "energy", "transport")]
        pid = start_sensor(sites, [target], out)
        args = ["tcpreplay", "-q", "-i", inject]
        args += [f"--multiplier={speed}"] if speed else []
        proc = subprocess.run(
            ["ip", "netns", "exec", SWITCH, *args, capture], capture_output=True, text=True
        )
        time.sleep(1.0)  # the last frames through the bridge
        stop_sensor(pid)
        if proc.returncode != 0:
            raise SentinelError(f"tcpreplay failed: {proc.stderr.strip() or proc.stdout.strip()}")
        if target != REPLAY_BRIDGE:
            _ip("link", "del", inject, ns=SWITCH, check=False)
        elif created and not standalone:
            _ip("link", "del", "rp-in", ns=SWITCH, check=False)
            _ip("link", "del", REPLAY_BRIDGE, ns=SWITCH, check=False)
    finally:
        if standalone:
            for p in ns_pids(SWITCH):
                _stop_pids([p])
            _ip("netns", "del", SWITCH, check=False)
    return json.loads((Path(out) / "stats.json").read_text())  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- processes
def _actor_main(args: argparse.Namespace) -> None:
    from sentinel.lab.actors import engineering_script, hmi_script
    from sentinel.lab.liveops import LiveRuntime

    site = load_site(args.site)
    host = site.lab.hmi if args.role == "hmi" else site.lab.engineering
    script_of = hmi_script if args.role == "hmi" else engineering_script
    rng = random.Random(f"{args.seed}:{site.name}:actor:{args.role}")
    runtime = LiveRuntime()
    actor = runtime.actor(args.role, host.address, rng)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.ensure_future(runtime.run(script_of(site, actor), stop))
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def _attack_main(args: argparse.Namespace) -> None:
    from sentinel.lab.labels import Label
    from sentinel.lab.liveops import LiveRuntime
    from sentinel.lab.scenarios import get_scenarios, make_context
    from sentinel.lab.synth import LABEL_MARGIN

    if args.plan:
        plan: list[dict[str, Any]] = json.loads(Path(args.plan).read_text())
    else:
        from sentinel.lab.scenarios import load_scenarios

        names = list(load_scenarios()) if args.scenarios == "all" else args.scenarios.split(",")
        site_list = args.sites.split(",")
        plan = [{"site": site_list[i % len(site_list)], "scenario": n} for i, n in enumerate(names)]
    sites = {n: load_site(n) for n in dict.fromkeys(item["site"] for item in plan)}
    scenarios = {s.name: s for s in get_scenarios(list({i["scenario"] for i in plan}))}
    subnets = {n: ipaddress.ip_network(s.lab.subnet) for n, s in sites.items()}

    def iface_for(address: str) -> str:
        for name, site in sites.items():
            if ipaddress.ip_address(address) in subnets[name]:
                return f"a-{_suffix(site)}"[:15]
        return "eth0"

    runtime = LiveRuntime(iface_for)
    lanes: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for index, item in enumerate(plan):
        lanes.setdefault(int(item.get("lane", 0)), []).append((index, item))

    async def lane(items: list[tuple[int, dict[str, Any]]]) -> None:
        previous_start = None
        for n, (index, item) in enumerate(items):
            if previous_start is not None:
                due = previous_start + float(item.get("spacing", 0.0))
                await asyncio.sleep(max(due - time.monotonic(), args.gap if n else 0.0))
            previous_start = time.monotonic()
            site = sites[item["site"]]
            scenario = scenarios[item["scenario"]]
            rng = random.Random(f"{args.seed}:{site.name}:scenario:{index}:{scenario.name}")
            actor = runtime.actor(scenario.name, site.lab.attacker.address, rng)
            ctx = make_context(scenario, site, actor)
            if item.get("target"):
                ctx.params["target"] = item["target"]
            began = time.time()
            await runtime.run(scenario.function()(ctx))
            label = Label(
                scenario.name,
                round(began, 6),
                round(time.time() + LABEL_MARGIN, 6),
                site.lab.attacker.address,
                ctx.target or "",
                scenario.technique,
            )
            with open(args.labels, "a", encoding="utf-8") as f:
                f.write(label.to_json() + "\n")

    async def main() -> None:
        if args.warmup:
            await asyncio.sleep(args.warmup)
        await asyncio.gather(*(lane(items) for items in lanes.values()))

    asyncio.run(main())


def _sensor_main(args: argparse.Namespace) -> None:
    """The live collector: frames from the bridges through the same pipeline as analyze."""
    import click
    import orjson

    from sentinel.capture.live import LiveSource
    from sentinel.cli import ANALYZE_EXTENSIONS, _register_extensions, run_components
    from sentinel.config import load_config
    from sentinel.pipeline import Pipeline
    from sentinel.privacy.runtime import run_pseudonymizer

    _register_extensions()
    if args.config:
        config = load_config(args.config)
    else:
        config = merged_config([load_site(n) for n in args.sites.split(",")])
    # analyze's extensions, with the values their options take when not given, but for
    # those set with --param NAME=VALUE (es_url=http://...)
    options = [o for ext in ANALYZE_EXTENSIONS for o in ext.options]
    params = click.Command("analyze", params=options).make_context("analyze", []).params
    for item in args.param or []:
        name, _, value = item.partition("=")
        params[name] = value
    detectors, sinks = run_components(config, params, args.out)
    source = LiveSource(args.interface, bpf=args.bpf)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: source.stop())
    Path(args.ready).write_text(str(os.getpid()))
    started = time.time()
    pipeline = Pipeline(
        config, args.out, detectors, sinks, pseudonymizer=run_pseudonymizer(config, None)
    )
    stats = pipeline.run_packets(source)
    stats = {"capture": "live:" + ",".join(args.interface), "format": "live", **stats}
    stats["live"] = {**source.stats(), "started": started, "stopped": time.time()}
    source.close()
    with open(Path(args.out) / "stats.json", "wb") as f:
        f.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    Path(args.ready).unlink(missing_ok=True)


def _record_main(args: argparse.Namespace) -> None:
    """Write what the bridges carry into a pcap until stopped."""
    from sentinel.capture.live import LiveSource
    from sentinel.lab.pcapwriter import PcapWriter

    source = LiveSource(args.interface, bpf=args.bpf)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: source.stop())
    Path(args.ready).write_text(str(os.getpid()))
    with open(args.out, "wb") as fh:
        writer = PcapWriter(fh)
        last = 0
        for ts, _lt, frame in source:
            us = max(round(ts * 1e6), last)  # two interfaces may interleave by a few us
            writer.write(us, frame)
            last = us
        writer.flush()
    source.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sentinel.lab.live")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("actor")
    p.add_argument("--site", required=True)
    p.add_argument("--role", choices=("hmi", "engineering"), required=True)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("attack")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--plan", help="JSON plan (see run_attacks)")
    which.add_argument("--scenarios", help="comma-separated scenarios ('all'), with --sites")
    p.add_argument("--sites", default="hospital", help="sites attacked in turn")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--labels", required=True)
    p.add_argument("--gap", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.0)
    for name in ("sensor", "record"):
        p = sub.add_parser(name)
        p.add_argument("--interface", action="append", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--ready", required=True)
        p.add_argument("--bpf")
        if name == "sensor":
            which = p.add_mutually_exclusive_group(required=True)
            which.add_argument("--config", help="a Sentinel config file")
            which.add_argument("--sites", help="comma-separated lab sites to watch")
            p.add_argument("--param", action="append", help="analyze option NAME=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    {"actor": _actor_main, "attack": _attack_main, "sensor": _sensor_main, "record": _record_main}[
        args.command
    ](args)


if __name__ == "__main__":
    main()
