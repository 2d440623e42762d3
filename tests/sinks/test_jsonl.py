"""The JSONL sink: fresh files per ``analyze`` run; appended to and rotated daily by a live run.

The wall clock of rotation is injected (no sleeping): a list holds "now".
"""

from __future__ import annotations

import calendar
import json
import os
import time
from pathlib import Path

from sentinel.sinks.jsonl import JsonlSink, utc_day


def _ts(text: str) -> float:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) as a Unix time."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_analyze_writes_fresh_files(tmp_path: Path) -> None:
    for run in (1, 2):
        sink = JsonlSink(tmp_path)
        sink.finding({"run": run})
        sink.close()
    assert _lines(tmp_path / "findings.jsonl") == [{"run": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "findings.jsonl",
        "flows.jsonl",
        "modbus.jsonl",
    ]


def test_live_runs_append(tmp_path: Path) -> None:
    clock = Clock(_ts("2026-11-25T10:00:00"))
    for run in (1, 2):
        sink = JsonlSink(tmp_path, live=True, clock=clock)
        sink.finding({"run": run})
        sink.flow({"run": run})
        sink.close()
        clock.now += 60
    assert _lines(tmp_path / "findings.jsonl") == [{"run": 1}, {"run": 2}]
    assert _lines(tmp_path / "flows.jsonl") == [{"run": 1}, {"run": 2}]


def test_live_rotation_at_the_utc_day_boundary(tmp_path: Path) -> None:
    clock = Clock(_ts("2026-11-25T23:59:58"))
    sink = JsonlSink(tmp_path, live=True, clock=clock)
    sink.finding({"n": 1})
    sink.ot({"n": 1})
    sink.flush()
    clock.now += 1.5  # 23:59:59.5: same day, nothing moves
    sink.finding({"n": 2})
    sink.flush()
    assert sink.rotated == []
    assert _lines(tmp_path / "findings.jsonl") == [{"n": 1}, {"n": 2}]

    clock.now += 1.0  # 00:00:00.5 next day: the flush rotates
    sink.flush()
    assert sorted(Path(p).name for p in sink.rotated) == [
        "findings.2026-11-25.jsonl",
        "ot.2026-11-25.jsonl",
    ]  # modbus.jsonl and flows.jsonl are empty: left as they are
    assert _lines(tmp_path / "findings.2026-11-25.jsonl") == [{"n": 1}, {"n": 2}]
    assert _lines(tmp_path / "ot.2026-11-25.jsonl") == [{"n": 1}]
    assert (tmp_path / "findings.jsonl").read_bytes() == b""
    sink.finding({"n": 3})
    sink.ot({"n": 2})
    sink.flush()
    sink.close()
    assert _lines(tmp_path / "findings.jsonl") == [{"n": 3}]
    assert _lines(tmp_path / "ot.jsonl") == [{"n": 2}]
    assert not (tmp_path / "modbus.2026-11-25.jsonl").exists()
    # Every file of the findings log matches the base name as a prefix (retention's glob).
    assert sorted(p.name for p in tmp_path.glob("findings*.jsonl*")) == [
        "findings.2026-11-25.jsonl",
        "findings.jsonl",
    ]


def test_a_clock_set_back_does_not_rotate(tmp_path: Path) -> None:
    clock = Clock(_ts("2026-11-26T00:00:05"))
    sink = JsonlSink(tmp_path, live=True, clock=clock)
    sink.finding({"n": 1})
    clock.now -= 10  # NTP steps the clock back over midnight
    sink.flush()
    sink.close()
    assert sink.rotated == []
    assert _lines(tmp_path / "findings.jsonl") == [{"n": 1}]


def test_a_file_left_on_an_earlier_day_is_rotated_at_start(tmp_path: Path) -> None:
    old = tmp_path / "findings.jsonl"
    old.write_text('{"n": 0}\n')
    yesterday = _ts("2026-11-24T22:00:00")
    os.utime(old, (yesterday, yesterday))
    taken = tmp_path / "findings.2026-11-24.jsonl"  # e.g. rotated by a run that day
    taken.write_text('{"n": -1}\n')
    sink = JsonlSink(tmp_path, live=True, clock=Clock(_ts("2026-11-25T08:00:00")))
    sink.finding({"n": 1})
    sink.close()
    assert _lines(taken) == [{"n": -1}]  # never overwritten
    assert _lines(tmp_path / "findings.2026-11-24.1.jsonl") == [{"n": 0}]
    assert _lines(old) == [{"n": 1}]


def test_utc_day() -> None:
    assert utc_day(_ts("2026-11-25T23:59:59")) == "2026-11-25"
    assert utc_day(_ts("2026-11-26T00:00:00")) == "2026-11-26"
