#!/usr/bin/env python3
"""Benchmark the OT decoding paths: events per second for each protocol.

For DNP3, IEC 60870-5-104, S7comm, EtherNet/IP-CIP and BACnet a capture is built by repeating
the repository's real sample captures (tests/ot/data) with the IPv4 addresses shifted per copy
(so every copy is a distinct set of flows, not a retransmission) and time stamps 0.5 ms apart.
On each capture, in the same run, these commands are timed (wall clock and the child's CPU
time, from ``os.wait4``):

* ``fields``:  ``tshark -n -r F -Y FILTER -T fields -e frame.number -e <function field>``, the
  yardstick the issue asks for (flat fields, the least tshark can do for the protocol);
* ``ek``:      ``tshark ... -T ek -J LAYERS`` to /dev/null (tshark's cost of Elasticsearch JSON);
* ``json``:    ``tshark ... -T json --no-duplicate-keys -J LAYERS`` to /dev/null (the tree);
* ``json+parse``: the same JSON stream split into packets and parsed (orjson) in Python, the
  transport cost of the chosen path without normalisation (what pyshark's rows compare with);
* ``sentinel``: Sentinel's chosen path, the tshark worker (``python -m
  sentinel.decode.tshark_worker``): tshark's JSON stream split, parsed and normalised into
  ``OTEvent``s, pickled to the pipeline (here to /dev/null);
* ``pyshark``: ``pyshark.FileCapture(F, display_filter=FILTER)`` (PDML, its default) iterated,
  reading the function field of each packet (only with ``--pyshark``; pyshark must be
  installed; much slower, so run on ``--pyshark-packets`` packets only);
* ``pyshark-json``: the same with ``use_json=True``.

events/s is the number of OT events Sentinel produces from the capture (counted once, from
the sentinel run) divided by the command's wall time, so the rows compare how fast each path
gets through the same messages. ``ek`` and ``json`` ask tshark for the same layers as the
worker (``-J``): they are what tshark alone costs for the dissection Sentinel needs, the fair
yardstick of the worker's own overhead; ``fields`` asks for two flat fields only.

``--end-to-end`` instead times the whole ``sentinel analyze CAPTURE -q`` on generated
Modbus/TCP captures (``gen_modbus_capture.py``), alone and with DNP3 (and S7comm) packets
from the OT captures above interleaved, each with ``--no-ot``, with OT on (the default: the
prefilter hands tshark the OT packets only) and with OT on over the whole file
(``ot.prefilter: false``): wall time; CPU of the whole run, and apart the pipeline process's
own (``RUSAGE_SELF``) and that of the OT processes it waited for (``RUSAGE_CHILDREN``:
worker, prefilter, tshark). The Modbus message count of each run shows the Modbus path did
the same work.

Usage::

    python bench/bench_ot.py                     # 20,000 packets per protocol, best of 1
    python bench/bench_ot.py --packets 50000 --repeat 3 --pyshark
    python bench/bench_ot.py --json > ot-bench.json
    python bench/bench_ot.py --end-to-end --modbus-packets 200000 --packets 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "ot" / "data"
SOURCES = {
    "dnp3": [
        DATA / "zeek/dnp3/pcaps/dnp3.pcap",
        *sorted((DATA / "ics-samples/dnp3").glob("*.pcap")),
    ],
    "iec104": sorted((DATA / "ics-samples/iec104").glob("*.pcap")),
    "s7comm": [
        DATA / "ics-samples/s7comm/s7comm_clean.pcap",
        DATA / "ics-samples/s7comm/s7comm_reading_plc_status.pcap",
    ],
    "enip": sorted((DATA / "ics-samples/enip").glob("*.pcap")),
    "bacnet": sorted((DATA / "ics-samples/bacnet").glob("*.pcap")),
}
FUNCTION_FIELD = {
    "dnp3": "dnp3.al.func",
    "iec104": "iec60870_104.type",
    "s7comm": "s7comm.header.rosctr",
    "enip": "enip.command",
    "bacnet": "bvlc.function",
}


def read_pcap(path: Path) -> list[bytes]:
    """Ethernet frames of a classic pcap (the samples are all classic, Ethernet)."""
    data = path.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    frames, pos = [], 24
    while pos + 16 <= len(data):
        _, _, caplen, _ = struct.unpack_from(endian + "IIII", data, pos)
        frames.append(data[pos + 16 : pos + 16 + caplen])
        pos += 16 + caplen
    return frames


def build(protocol: str, packets: int, out: Path) -> Path:
    frames = [f for src in SOURCES[protocol] for f in read_pcap(src)]
    path = out / f"{protocol}-{packets}.pcap"
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(packets):
            frame = bytearray(frames[i % len(frames)])
            copy = i // len(frames)
            if frame[12:14] == b"\x08\x00":  # IPv4: shift both addresses per copy
                for off in (14 + 12, 14 + 16):
                    frame[off + 1] = (frame[off + 1] + (copy >> 8)) & 0xFF
                    frame[off + 2] = (frame[off + 2] + copy) & 0xFF
            us = i * 500
            f.write(
                struct.pack(
                    "<IIII", 1_600_000_000 + us // 1_000_000, us % 1_000_000, len(frame), len(frame)
                )
            )
            f.write(frame)
    return path


@dataclass
class Row:
    protocol: str
    path: str
    seconds: float
    cpu: float
    events: int
    packets: int
    status: str = "ok"
    runs: list[float] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def events_per_cpu_second(self) -> float:
        return self.events / self.cpu if self.cpu else 0.0


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, bytes]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    return seconds, usage.ru_utime + usage.ru_stime, proc.returncode, err


JSON_PARSE = """
import subprocess, sys, orjson
from sentinel.decode.tshark_worker import split_packets
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
n = sum(1 for raw in split_packets(proc.stdout) if orjson.loads(raw))
proc.wait()
print(n, file=sys.stderr)
"""
PYSHARK = """
import sys, pyshark
cap = pyshark.FileCapture(sys.argv[1], display_filter=sys.argv[2], use_json=sys.argv[4] == "json",
                          keep_packets=False)
n = 0
for pkt in cap:
    layer = pkt[sys.argv[2]]
    getattr(layer, sys.argv[3].split(".", 1)[1].replace(".", "_"), None)
    n += 1
cap.close()
print(n, file=sys.stderr)
"""


def commands(protocol: str, capture: Path, tshark: str, which: list[str]) -> dict[str, list[str]]:
    sys.path.insert(0, str(REPO))
    from sentinel.decode.ot import MODULES
    from sentinel.decode.ot_settings import OTSettings
    from sentinel.decode.tshark import OTInput, tshark_command, worker_spec

    module = MODULES[protocol]
    layers = " ".join(["frame", "ip", "ipv6", "tcp", "udp", *module.LAYERS])
    base = [tshark, "-n", "-r", str(capture), "-Y", module.FILTER]
    settings = OTSettings(**{p: {"enabled": p == protocol} for p in MODULES})
    source = OTInput(file=str(capture))
    spec = worker_spec(tshark_command(tshark, settings, source), settings, source)
    out = {
        "fields": [*base, "-T", "fields", "-e", "frame.number", "-e", FUNCTION_FIELD[protocol]],
        "ek": [*base, "-T", "ek", "-J", layers],
        "json": [*base, "-T", "json", "--no-duplicate-keys", "-J", layers],
        "json+parse": [
            sys.executable,
            "-c",
            JSON_PARSE,
            *base,
            "-T",
            "json",
            "--no-duplicate-keys",
            "-J",
            layers,
        ],
        "sentinel": [sys.executable, "-m", "sentinel.decode.tshark_worker", json.dumps(spec)],
        "pyshark": [
            sys.executable,
            "-c",
            PYSHARK,
            str(capture),
            module.FILTER,
            FUNCTION_FIELD[protocol],
            "pdml",
        ],
        "pyshark-json": [
            sys.executable,
            "-c",
            PYSHARK,
            str(capture),
            module.FILTER,
            FUNCTION_FIELD[protocol],
            "json",
        ],
    }
    return {k: v for k, v in out.items() if k in which}


def count_events(protocol: str, capture: Path, tshark: str) -> int:
    """Events Sentinel's worker produces (from its last message)."""
    import pickle

    cmd = commands(protocol, capture, tshark, ["sentinel"])["sentinel"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    pos, events = 0, 0
    while pos < len(raw):
        (size,) = struct.unpack_from(">I", raw, pos)
        msg = pickle.loads(raw[pos + 4 : pos + 4 + size])
        pos += 4 + size
        if isinstance(msg, list):
            events += len(msg)
    return events


ANALYZE = """
import json, os, resource, sys
from sentinel.cli import main
try:
    main(sys.argv[1:])
finally:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.environ["BENCH_OT_RUSAGE"], "w") as f:
        cpu = {"pipeline": me.ru_utime + me.ru_stime, "ot": kids.ru_utime + kids.ru_stime}
        json.dump(cpu, f)
"""


def interleave(out: Path, *captures: Path) -> Path:
    """One classic pcap of the captures' frames, spread evenly in one time line (0.05 ms
    apart), each capture's frames in their own order."""
    lists = [read_pcap(c) for c in captures]
    total = sum(len(x) for x in lists)
    taken = [0] * len(lists)
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(total):
            # the list furthest behind its share of the time line goes next
            k = min(
                (j for j in range(len(lists)) if taken[j] < len(lists[j])),
                key=lambda j: (taken[j] + 1) / len(lists[j]),
            )
            frame = lists[k][taken[k]]
            taken[k] += 1
            us = i * 50
            sec, usec = 1_600_000_000 + us // 1_000_000, us % 1_000_000
            f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    return out


def end_to_end(args: argparse.Namespace, tshark: str, tmp: Path) -> list[dict]:
    """``sentinel analyze`` with OT off, on (prefilter) and on over the whole file."""
    sys.path.insert(0, str(REPO / "bench"))
    from gen_modbus_capture import generate

    modbus = tmp / "modbus.pcap"
    generate(modbus, packets=args.modbus_packets)
    dnp3, s7 = build("dnp3", args.packets, tmp), build("s7comm", args.packets, tmp)
    captures = {
        f"{args.modbus_packets:,} Modbus": modbus,
        f"{args.modbus_packets:,} Modbus + {args.packets:,} DNP3": interleave(
            tmp / "modbus-dnp3.pcap", modbus, dnp3
        ),
        f"{args.modbus_packets:,} Modbus + {args.packets:,} DNP3 + {args.packets:,} S7": (
            interleave(tmp / "modbus-dnp3-s7.pcap", modbus, dnp3, s7)
        ),
    }
    whole = tmp / "whole-file.yaml"
    whole.write_text("ot:\n  prefilter: false\n")
    modes = {
        "OT off": ["--no-ot"],
        "OT on": ["--ot", "--tshark", tshark],
        "OT on, whole file": ["--ot", "--tshark", tshark, "--config", str(whole)],
    }
    sentinel = [sys.executable, "-c", ANALYZE]
    usage = tmp / "rusage.json"
    env = {**os.environ, "BENCH_OT_RUSAGE": str(usage)}
    rows = []
    for label, capture in captures.items():
        for mode, extra in modes.items():
            best: dict | None = None
            for n in range(args.repeat):
                out = tmp / f"out-{len(rows)}-{n}"
                cmd = [*sentinel, "analyze", str(capture), "-q", "--out", str(out), *extra]
                seconds, cpu, rc, err = timed(cmd, env)
                if rc != 0:
                    raise SystemExit(f"bench_ot: {' '.join(cmd)} failed: {err.decode()[-300:]}")
                stats = json.loads((out / "stats.json").read_text())
                cpus = json.loads(usage.read_text())
                shutil.rmtree(out, ignore_errors=True)
                ot = stats.get("ot", {})
                row = {
                    "capture": label,
                    "mode": mode,
                    "seconds": round(seconds, 2),
                    "cpu": round(cpu, 2),
                    "pipeline_cpu": round(cpus["pipeline"], 2),
                    "ot_cpu": round(cpus["ot"], 2),
                    "modbus_messages": stats["modbus_messages"],
                    "ot_events": ot.get("events", 0),
                    "ot_status": ot.get("status"),
                    "worker_seconds": (ot.get("worker") or {}).get("seconds"),
                }
                if best is None or row["seconds"] < best["seconds"]:
                    best = row
            assert best is not None
            rows.append(best)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=20000, help="packets per protocol capture")
    ap.add_argument("--repeat", type=int, default=1, help="runs per command (best is kept)")
    ap.add_argument("--protocols", default=",".join(SOURCES), help="comma list")
    ap.add_argument("--pyshark", action="store_true", help="also time pyshark (slow)")
    ap.add_argument("--pyshark-packets", type=int, default=5000)
    ap.add_argument("--tshark", default="tshark")
    ap.add_argument("--keep", action="store_true", help="keep the generated captures")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument(
        "--end-to-end",
        action="store_true",
        help="time sentinel analyze with OT off/on on Modbus captures with OT packets mixed in",
    )
    ap.add_argument(
        "--modbus-packets", type=int, default=200_000, help="Modbus packets (--end-to-end)"
    )
    args = ap.parse_args(argv)
    tshark = shutil.which(args.tshark)
    if tshark is None:
        print("bench_ot: tshark not found (apt-get install tshark)", file=sys.stderr)
        return 2
    if args.end_to_end:
        tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-ot-e2e-"))
        try:
            e2e = end_to_end(args, tshark, tmp)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        if args.json:
            print(json.dumps(e2e, indent=2))
            return 0
        print(f"sentinel analyze -q; tshark {tshark}; best of {args.repeat} run(s)")
        print(
            f"{'capture':44} {'mode':18} {'seconds':>8} {'CPU s':>7} {'pipe CPU':>8} "
            f"{'OT CPU':>7} {'modbus':>8} {'OT events':>9}  OT status"
        )
        for r in e2e:
            print(
                f"{r['capture']:44} {r['mode']:18} {r['seconds']:8.2f} {r['cpu']:7.2f} "
                f"{r['pipeline_cpu']:8.2f} {r['ot_cpu']:7.2f} {r['modbus_messages']:8,} "
                f"{r['ot_events']:9,}  {r['ot_status']}"
            )
        return 0
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-ot-"))
    rows: list[Row] = []
    paths = ["fields", "ek", "json", "json+parse", "sentinel"]
    for protocol in args.protocols.split(","):
        capture = build(protocol, args.packets, tmp)
        events = count_events(protocol, capture, tshark)
        todo = [(capture, args.packets, p) for p in paths]
        if args.pyshark:
            small = build(protocol, args.pyshark_packets, tmp)
            small_events = count_events(protocol, small, tshark)
            todo += [(small, args.pyshark_packets, p) for p in ("pyshark", "pyshark-json")]
        for cap, n, name in todo:
            cmd = commands(protocol, cap, tshark, [name])[name]
            n_events = events if cap == capture else small_events
            row = Row(protocol, name, float("inf"), 0.0, n_events, n)
            for _ in range(args.repeat):
                seconds, cpu, rc, err = timed(cmd, env)
                row.runs.append(round(seconds, 3))
                if rc != 0:
                    row.status = f"failed ({rc}): {err.decode(errors='replace').strip()[-200:]}"
                if seconds < row.seconds:
                    row.seconds, row.cpu = seconds, cpu
            rows.append(row)
    if args.json:
        print(
            json.dumps(
                [asdict(r) | {"events_per_second": round(r.events_per_second)} for r in rows],
                indent=2,
            )
        )
    else:
        print(f"tshark {tshark}; best of {args.repeat} run(s); captures in {tmp}")
        head = (
            f"{'protocol':9} {'path':13} {'packets':>8} {'events':>8} {'seconds':>8} {'CPU s':>7}"
        )
        print(head + f" {'events/s':>10} {'ev/CPU s':>10}  status")
        for r in rows:
            print(
                f"{r.protocol:9} {r.path:13} {r.packets:8,} {r.events:8,} {r.seconds:8.2f} "
                f"{r.cpu:7.2f} {r.events_per_second:10,.0f} {r.events_per_cpu_second:10,.0f}"
                f"  {r.status}"
            )
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(r.status == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
