#!/usr/bin/env python3
"""Benchmark ``sentinel analyze`` against ``tshark`` on the same Modbus/TCP capture.

Both tools read the same file in the same run of this script:

* sentinel: ``sentinel analyze CAPTURE --out TMPDIR`` (a fresh output directory per run);
* tshark:   ``tshark -r CAPTURE -Y mbtcp -T fields -e mbtcp.trans_id -e modbus.func_code``
  with its output sent to /dev/null (a full Modbus dissection of every frame).

Each command is started with ``subprocess.Popen`` and reaped with ``os.wait4``, which gives
that child's own resource usage: wall time (``time.perf_counter`` around start and reap),
CPU time and peak RSS (``ru_maxrss``; the largest of the child and any descendants it
waited for). The packet count is taken once, by walking the record headers of the file,
and packets/s is that count divided by wall time. With ``--repeat K`` the best (lowest)
wall time of K runs is reported, and the highest peak RSS.

Without ``--capture`` a capture of ``--packets`` packets is generated first with
``gen_modbus_capture.py`` into a temporary directory; generation is not timed, and the
packet-count walk that follows it also warms the page cache for both tools.

Usage::

    python bench/bench_analyze.py                       # 1,000,000 generated packets
    python bench/bench_analyze.py --packets 20000 --repeat 3
    python bench/bench_analyze.py --capture site.pcap --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",  # microseconds, little-endian
    b"\x4d\x3c\xb2\xa1": "<",  # nanoseconds, little-endian
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
PCAPNG_PACKET_BLOCKS = {2, 3, 6}  # obsolete packet, simple packet, enhanced packet
CHUNK = 1 << 22
TSHARK_ARGS = ("-Y", "mbtcp", "-T", "fields", "-e", "mbtcp.trans_id", "-e", "modbus.func_code")


class BenchError(Exception):
    """A problem that ends the benchmark with a message rather than a traceback."""


@dataclass
class Run:
    """One measured execution of a command."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    exit_code: int


@dataclass
class ToolResult:
    """All runs of one tool, and the summary figures reported for it."""

    tool: str
    command: list[str]
    status: str = "ok"  # ok | missing | failed
    message: str = ""
    runs: list[Run] = field(default_factory=list)
    seconds: float | None = None
    packets_per_second: float | None = None
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None

    def summarise(self, packets: int) -> None:
        ok = [r for r in self.runs if r.exit_code == 0]
        if not ok:
            return
        best = min(ok, key=lambda r: r.seconds)
        self.seconds = best.seconds
        self.cpu_seconds = best.cpu_seconds
        self.packets_per_second = packets / best.seconds if best.seconds > 0 else None
        self.peak_rss_mb = max(r.peak_rss_mb for r in ok)


# --------------------------------------------------------------------------- packet count


def _open_capture(path: Path) -> BinaryIO:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def count_packets(path: Path) -> int:
    """Count the packets of a pcap or pcapng file (optionally gzip-compressed)."""
    with _open_capture(path) as fh:
        head = fh.read(24)
        if head[:4] in PCAP_MAGICS and len(head) == 24:
            return _walk(fh, struct.Struct(PCAP_MAGICS[head[:4]] + "IIII"), 2, 16, None, path)
        if head[:4] == PCAPNG_SHB and len(head) >= 12:
            endian = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
            return _walk(fh, struct.Struct(endian + "II"), 1, 0, PCAPNG_PACKET_BLOCKS, path, head)
    raise BenchError(f"{path}: not a pcap or pcapng file")


def _walk(
    fh: BinaryIO,
    hdr: struct.Struct,
    len_field: int,
    extra: int,
    kinds: set[int] | None,
    path: Path,
    pending: bytes = b"",
) -> int:
    """Walk length-prefixed records: pcap (len at field 2, +16) or pcapng blocks (field 1)."""
    count = 0
    buf = pending
    pos = 0
    size = hdr.size
    unpack = hdr.unpack_from
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            break
        buf = buf[pos:] + chunk
        pos = 0
        end = len(buf)
        while pos + size <= end:
            fields = unpack(buf, pos)
            step = fields[len_field] + extra
            if step < size:
                raise BenchError(f"{path}: corrupt record at byte offset ~{pos}")
            if pos + step > end:
                break
            if kinds is None or fields[0] in kinds:
                count += 1
            pos += step
    if pos != len(buf):
        print(f"warning: {path} ends with a truncated record", file=sys.stderr)
    return count


# --------------------------------------------------------------------------- running


def run_measured(
    cmd: list[str], stdout: int | BinaryIO, stderr_path: Path, timeout: float | None
) -> Run:
    """Run cmd to completion and return its own wall time, CPU time and peak RSS."""
    with open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    rss_bytes = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return Run(
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=rss_bytes / 1e6,
        exit_code=proc.returncode,
    )


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()
    text = [t for t in text if "This could be dangerous" not in t]  # tshark as root
    return "\n".join("    " + t for t in text[-lines:])


def bench_tool(
    result: ToolResult,
    make_cmd: list[str],
    out_dirs: Path | None,
    workdir: Path,
    timeout: float | None,
    keep: bool,
) -> None:
    """One run of a tool; appends to result.runs or marks it failed."""
    cmd = list(make_cmd)
    out_dir: Path | None = None
    if out_dirs is not None:
        out_dir = Path(tempfile.mkdtemp(prefix="out-", dir=out_dirs))
        cmd += ["--out", str(out_dir)]
    result.command = cmd
    stderr_path = workdir / f"{result.tool}.stderr"
    try:
        run = run_measured(cmd, subprocess.DEVNULL, stderr_path, timeout)
    except OSError as exc:
        result.status, result.message = "failed", f"could not start {cmd[0]}: {exc}"
        return
    result.runs.append(run)
    if run.exit_code != 0:
        result.status = "failed"
        reason = "killed (timeout?)" if run.exit_code < 0 else f"exit code {run.exit_code}"
        result.message = f"{shlex.join(cmd)} failed: {reason}\n{_tail(stderr_path)}"
    if out_dir is not None and not keep:
        shutil.rmtree(out_dir, ignore_errors=True)


# --------------------------------------------------------------------------- report


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(
    capture: Path, packets: int, results: list[ToolResult], ratio: float | None, repeat: int
) -> None:
    size_mb = capture.stat().st_size / 1e6
    print(f"capture: {capture} ({packets:,} packets, {size_mb:.1f} MB on disk)")
    print(f"best of {repeat} run(s); peak RSS is the highest of those runs\n")
    head = f"{'tool':<10}{'seconds':>10}{'packets/s':>14}{'peak RSS MB':>13}{'CPU s':>9}  status"
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.tool:<10}{_fmt(r.seconds, '.2f'):>10}{_fmt(r.packets_per_second, ',.0f'):>14}"
            f"{_fmt(r.peak_rss_mb, '.1f'):>13}{_fmt(r.cpu_seconds, '.2f'):>9}  {r.status}"
        )
    print()
    if ratio is None:
        print("sentinel/tshark packets/s: n/a")
    else:
        word = "faster" if ratio >= 1 else "slower"
        print(f"sentinel/tshark packets/s: {ratio:.2f}x (sentinel is {word} than tshark)")
    for r in results:
        if r.message:
            print(f"\n{r.tool}: {r.message}", file=sys.stderr)


# --------------------------------------------------------------------------- main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--capture", type=Path, help="existing pcap/pcapng(.gz) to benchmark on")
    p.add_argument(
        "--packets",
        type=int,
        default=1_000_000,
        help="packets to generate when --capture is not given (default 1000000)",
    )
    p.add_argument("--connections", type=int, default=300, help="connections to generate")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument("--repeat", type=int, default=1, help="runs per tool, best is kept")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    p.add_argument(
        "--sentinel-args",
        default="",
        help="extra arguments for sentinel analyze (e.g. '--decode-only')",
    )
    p.add_argument(
        "--sentinel",
        default="sentinel",
        help="sentinel command (default 'sentinel'; e.g. 'python -m sentinel')",
    )
    p.add_argument("--tshark", default="tshark", help="tshark command (default 'tshark')")
    p.add_argument("--timeout", type=float, default=None, help="kill a run after N seconds")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated capture and sentinel output directories",
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    log = sys.stderr if args.json else sys.stdout
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    generated: dict[str, object] | None = None
    try:
        if args.capture is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from gen_modbus_capture import generate

            capture = workdir / f"modbus-{args.packets}-seed{args.seed}.pcap"
            print(f"generating {args.packets:,} packets into {capture} ...", file=log, flush=True)
            stats = generate(capture, args.packets, args.connections, args.seed)
            generated = {
                "seconds": round(stats.seconds, 3),
                "modbus_pdus": stats.pdus,
                "connections": stats.connections,
                "seed": args.seed,
            }
            print(
                f"generated in {stats.seconds:.1f} s (not part of any timing)\n",
                file=log,
                flush=True,
            )
        else:
            capture = args.capture
            if not capture.is_file():
                raise BenchError(f"{capture}: no such file")
        packets = count_packets(capture)  # also warms the page cache for both tools
        if packets == 0:
            raise BenchError(f"{capture}: contains no packets")

        sentinel_cmd = [
            *shlex.split(args.sentinel),
            "analyze",
            str(capture),
            *shlex.split(args.sentinel_args),
        ]
        tshark_cmd = [*shlex.split(args.tshark), "-r", str(capture), *TSHARK_ARGS]
        sentinel = ToolResult("sentinel", sentinel_cmd)
        tshark = ToolResult("tshark", tshark_cmd)
        if shutil.which(sentinel_cmd[0]) is None:
            sentinel.status = "missing"
            sentinel.message = (
                f"'{sentinel_cmd[0]}' was not found on PATH, so sentinel was not measured. "
                "Install the project first (pip install -e .) or point --sentinel at it, "
                "e.g. --sentinel 'python -m sentinel'."
            )
        if shutil.which(tshark_cmd[0]) is None:
            tshark.status = "missing"
            tshark.message = (
                f"'{tshark_cmd[0]}' was not found on PATH "
                "(apt-get install tshark), so tshark was not measured."
            )

        out_root = workdir / "sentinel-out"
        out_root.mkdir()
        for i in range(args.repeat):
            for res, outs in ((sentinel, out_root), (tshark, None)):
                if res.status != "ok":
                    continue
                print(f"run {i + 1}/{args.repeat}: {res.tool} ...", file=log, flush=True)
                bench_tool(res, res.command, outs, workdir, args.timeout, args.keep)
        results = [sentinel, tshark]
        for r in results:
            r.summarise(packets)
        ratio = None
        if sentinel.packets_per_second and tshark.packets_per_second:
            ratio = sentinel.packets_per_second / tshark.packets_per_second

        if args.json:
            doc = {
                "capture": str(capture),
                "packets": packets,
                "capture_bytes": capture.stat().st_size,
                "repeat": args.repeat,
                "generated": generated,
                "tools": {r.tool: asdict(r) for r in results},
                "ratio_sentinel_to_tshark_pps": ratio,
            }
            print(json.dumps(doc, indent=2))
            for r in results:
                if r.message:
                    print(f"{r.tool}: {r.message}", file=sys.stderr)
        else:
            print(file=log)
            print_table(capture, packets, results, ratio, args.repeat)
        if args.keep:
            print(f"\nkept: {workdir}", file=sys.stderr)
        if any(r.status == "failed" for r in results):
            return 1
        return 2 if any(r.status == "missing" for r in results) else 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
