#!/usr/bin/env python3
"""Check a generated capture against its ``--truth`` JSON using tshark as the reference.

Checks that:

* the packet count walked from the file equals ``packets`` in the truth file;
* tshark's ``modbus.func_code`` values, per function code, equal requests + responses
  (exception responses are reported by tshark under the function code without 0x80);
* tshark reports as many ``modbus.exception_code`` values as the truth file has exceptions;
* no frame has a TCP analysis flag, is malformed, has an expert item of severity warning
  or above, or has a bad IPv4 or TCP checksum.

Usage::

    python bench/gen_modbus_capture.py /tmp/m.pcap --packets 20000 --truth /tmp/m.json
    python bench/check_capture.py /tmp/m.pcap /tmp/m.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import count_packets

PROBLEMS = (
    "tcp.analysis.flags || _ws.malformed || _ws.expert.severity >= warning"
    " || tcp.checksum.status != 1 || ip.checksum.status != 1"
)


def _tshark(tshark: str, capture: Path, *args: str) -> list[str]:
    cmd = [
        tshark,
        "-r",
        str(capture),
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        *args,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def _values(lines: list[str], column: int = 0) -> Counter[int]:
    c: Counter[int] = Counter()
    for line in lines:
        cell = line.split("\t")[column]
        for v in filter(None, cell.split(",")):
            c[int(v)] += 1
    return c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("capture", type=Path)
    p.add_argument("truth", type=Path)
    p.add_argument("--tshark", default="tshark")
    args = p.parse_args(argv)
    if shutil.which(args.tshark) is None:
        print(f"error: {args.tshark} not found on PATH", file=sys.stderr)
        return 2
    truth = json.loads(args.truth.read_text())
    failures = []

    packets = count_packets(args.capture)
    if packets != truth["packets"]:
        failures.append(f"packets: file has {packets}, truth says {truth['packets']}")

    lines = _tshark(
        args.tshark,
        args.capture,
        "-Y",
        "mbtcp",
        "-T",
        "fields",
        "-e",
        "modbus.func_code",
        "-e",
        "modbus.exception_code",
    )
    got = _values(lines, 0)
    want = Counter({int(k): v for k, v in truth["requests"].items()})
    want.update({int(k): v for k, v in truth["responses"].items()})
    for fc in sorted(set(got) | set(want)):
        if got[fc] != want[fc]:
            failures.append(f"function code {fc}: tshark {got[fc]}, truth {want[fc]}")
    exc = sum(_values(lines, 1).values())
    if exc != truth["exceptions_total"]:
        failures.append(f"exceptions: tshark {exc}, truth {truth['exceptions_total']}")

    bad = _tshark(args.tshark, args.capture, "-Y", PROBLEMS)
    if bad:
        failures.append(f"{len(bad)} frame(s) flagged by tshark, e.g.:")
        failures.extend("  " + line.strip() for line in bad[:10])

    print(
        f"packets {packets}, modbus PDUs per tshark {got.total()} "
        f"(truth {truth['modbus_pdus']}), exceptions {exc}"
    )
    for f in failures:
        print("FAIL " + f)
    if not failures:
        print("OK: tshark agrees with the truth file and flags nothing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
