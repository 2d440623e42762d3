"""The on-disk spool: order, acknowledgement, restart, torn writes, the size limit, the lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.es.spool import BULK, FINDINGS, Spool, SpoolError, inspect


def _lines(prefix: str, n: int, start: int = 0) -> list[bytes]:
    return [
        f'{{"index":{{"_id":"{prefix}{i}"}}}}\t{{"n":{i}}}\n'.encode()
        for i in range(start, start + n)
    ]


def _drain(spool: Spool, queue: str, batch: int = 7) -> list[bytes]:
    out = []
    while (b := spool.read(queue, batch)) is not None:
        out += b.lines
        spool.ack(b)
    return out


def test_order_ack_and_segments(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=200) as spool:
        for line in _lines("f", 30):
            spool.append(FINDINGS, [line], sync=False)
        spool.sync()
        assert len(list((tmp_path / FINDINGS).glob("*.seg"))) > 3  # rolled over
        first = spool.read(FINDINGS, 5)
        assert first is not None and first.lines == _lines("f", 5)
        assert spool.read(FINDINGS, 5).lines == _lines("f", 5)  # not acknowledged: same again
        spool.ack(first)
        assert spool.depth(FINDINGS) == 25
        assert _drain(spool, FINDINGS) == _lines("f", 25, 5)
        assert spool.depth() == 0
    assert len(list((tmp_path / FINDINGS).glob("*.seg"))) <= 1  # acknowledged segments deleted


def test_restart_resumes_where_the_cursor_stands(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=256) as spool:
        spool.append(FINDINGS, _lines("f", 20))
        spool.append(BULK, _lines("b", 10))
        batch = spool.read(FINDINGS, 8)
        spool.ack(batch)
    with Spool(tmp_path, segment_bytes=256) as spool:  # a restarted sensor
        assert spool.depth(FINDINGS) == 12 and spool.depth(BULK) == 10
        spool.append(FINDINGS, _lines("f", 3, 20))
        assert _drain(spool, FINDINGS) == _lines("f", 15, 8)
        assert _drain(spool, BULK) == _lines("b", 10)
    info = inspect(tmp_path)
    assert (info["findings"], info["bulk"]) == (0, 0)


def test_torn_last_line_is_cut(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(FINDINGS, _lines("f", 3))
    seg = sorted((tmp_path / FINDINGS).glob("*.seg"))[-1]
    with open(seg, "ab") as f:
        f.write(b'{"index":{"_id":"half')  # a crash in the middle of an append
    with Spool(tmp_path) as spool:
        assert spool.depth(FINDINGS) == 3
        spool.append(FINDINGS, _lines("f", 1, 3))
        assert _drain(spool, FINDINGS) == _lines("f", 4)


def test_limit_drops_oldest_bulk_never_findings(tmp_path: Path) -> None:
    line = len(_lines("b", 1)[0])
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=50 * line) as spool:
        spool.max_bytes = 120 * line  # the model allows >= 1 MiB; tests use a tiny limit
        spool.append(FINDINGS, _lines("f", 100))
        for i in range(10):
            spool.append(BULK, _lines("b", 20, 20 * i))
        assert spool.depth(FINDINGS) == 100  # all findings kept although over the limit
        dropped = spool.state["dropped"]
        assert dropped > 0
        kept = _drain(spool, BULK)
        assert len(kept) + dropped == 200
        assert kept == _lines("b", 200)[200 - len(kept) :]  # the oldest went
        assert len(_drain(spool, FINDINGS)) == 100
    assert inspect(tmp_path)["state"]["dropped"] == dropped


def test_one_process_at_a_time(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolError, match="in use by pid"):
        Spool(tmp_path)
    Spool(tmp_path).close()  # free again


def test_append_after_a_restarted_spool_was_drained_is_not_lost(tmp_path: Path) -> None:
    """Regression: a restarted sensor drains its spool, then spools again; the new finding
    went to a segment numbered like the cursor's and was skipped by the cursor's offset."""
    line = [b'{"index":{}}\t{"n":1}\n'] * 20
    with Spool(tmp_path / "s", segment_bytes=4096) as spool:
        for _ in range(20):
            spool.append(FINDINGS, line)
    with Spool(tmp_path / "s") as spool:
        batch = spool.read(FINDINGS, 10**5)
        assert batch is not None
        spool.ack(batch)
        spool.append(FINDINGS, [b'{"index":{}}\t{"n":2}\n'])
        again = spool.read(FINDINGS, 10)
        assert again is not None and len(again.lines) == 1
