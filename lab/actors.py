"""The legitimate actors of a lab site: the HMI and the engineering workstation.

Both are scripts of ``sentinel.lab.ops`` operations, run by the synthetic generator and by
the live lab alike. Their traffic is what a policy built from the site file allows, and
nothing else: allowed masters only, function codes 1-4 to read, 6 (HMI setpoints) and 16
(engineering tuning) to write, values inside the registers' limits, no exceptions, no
diagnostics. So a normal-only capture must give zero findings.

The HMI keeps one connection per PLC and polls every PLC on a fixed period (the cycle starts
on the period grid; each start is delayed by a small random jitter, as a SCADA scan task
is), then occasionally an operator moves a setpoint by a small step. The workstation opens a
maintenance session now and then: reads a PLC's configuration block, sometimes retunes one
parameter with FC 16 and reads it back, then disconnects. Both write for the first time in
the first minutes of a run, so that detectors that learn a baseline of writers from the
first minutes of traffic know them.
"""

from __future__ import annotations

import math

from sentinel.lab import ops
from sentinel.lab.config import SiteDef
from sentinel.lab.ops import Actor, Script

RECONNECT_DELAY = 5.0


def hmi_script(site: SiteDef, actor: Actor) -> Script:
    hmi = site.lab.hmi
    rng = actor.rng
    plcs = list(dict.fromkeys(p.plc for p in hmi.polls))
    units = {p.asset: p.unit for p in site.lab.plcs}
    conns: dict[str, object] = {}
    known: dict[tuple[str, int], int] = {}  # (plc, holding address) -> last value read
    yield ops.Sleep(rng.uniform(0.05, 0.5))
    for plc in plcs:
        conns[plc] = yield ops.Connect(plc)
    start = actor.now()
    cycle = 0
    # The shift's first adjustment comes early (within a few minutes), so that a baseline
    # learnt from the first minutes of traffic knows the HMI as a writer.
    next_write = start + rng.uniform(20.0, min(180.0, hmi.setpoint_interval))
    while True:
        for poll in hmi.polls:
            conn = conns.get(poll.plc)
            if conn is None:
                continue
            pdu = ops.read(poll.fc, poll.address, poll.quantity)
            answer = yield ops.Request(conn, units[poll.plc], pdu, hmi.timeout)
            values = ops.registers_of(answer)
            if poll.table == "holding" and values is not None:
                for i, v in enumerate(values):
                    known[(poll.plc, poll.address + i)] = v
            yield ops.Sleep(rng.uniform(0.0002, 0.0012))  # the driver's turnaround
        if hmi.setpoints and actor.now() >= next_write:
            target = rng.choice(hmi.setpoints)
            tag = site.tags(target.plc)[target.tag]
            conn = conns.get(target.plc)
            if conn is not None and tag.min is not None and tag.max is not None:
                current = known.get((target.plc, tag.start), (tag.min + tag.max) // 2)
                step = max(1, (tag.max - tag.min) // rng.choice((20, 10, 8, 5)))
                value = current + rng.choice((-1, 1)) * step
                if not tag.min <= value <= tag.max:
                    value = current - (value - current)
                value = min(max(value, tag.min), tag.max)
                yield ops.Request(
                    conn, units[target.plc], ops.write_register(tag.start, value), hmi.timeout
                )
                known[(target.plc, tag.start)] = value
            next_write = actor.now() + rng.expovariate(1.0 / hmi.setpoint_interval)
        for plc in plcs:  # a connection refused or lost is retried on a later cycle
            if conns.get(plc) is None and cycle % int(RECONNECT_DELAY / hmi.period + 1) == 0:
                conns[plc] = yield ops.Connect(plc)
        cycle += 1
        jitter = abs(rng.gauss(0.0, hmi.jitter))
        if rng.random() < 0.01:  # the scan task now and then waits behind other work
            jitter += rng.uniform(0.005, 0.03)
        due = start + cycle * hmi.period + jitter
        now = actor.now()
        if due <= now:  # overran: skip to the next slot of the grid, as SCADA does
            cycle = math.floor((now - start) / hmi.period) + 1
            due = start + cycle * hmi.period + jitter
        yield ops.Sleep(due - now)


def engineering_script(site: SiteDef, actor: Actor) -> Script:
    eng = site.lab.engineering
    rng = actor.rng
    units = {p.asset: p.unit for p in site.lab.plcs}
    targets = eng.tuning or [None]
    # The first session comes early and retunes something: a baseline learnt from the first
    # minutes of traffic then knows the workstation as a writer.
    yield ops.Sleep(rng.uniform(60.0, min(300.0, eng.session_interval)))
    first = True
    while True:
        target = rng.choice(targets)
        plc = target.plc if target else rng.choice(site.lab.plcs).asset
        size = min(site.plc(plc).tables.holding, 16)
        conn = yield ops.Connect(plc)
        if conn is not None:
            for _ in range(rng.randint(1, 3)):
                yield ops.Request(conn, units[plc], ops.read(3, 0, size), 2.0)
                yield ops.Sleep(rng.uniform(0.5, 4.0))
            if target is not None and (first or rng.random() < 0.5):
                tag = site.tags(plc)[target.tag]
                assert tag.min is not None and tag.max is not None
                value = rng.randint(tag.min, tag.max)
                yield ops.Request(conn, units[plc], ops.write_registers(tag.start, [value]), 2.0)
                yield ops.Sleep(rng.uniform(0.3, 1.5))
                yield ops.Request(conn, units[plc], ops.read(3, tag.start, 1), 2.0)
            yield ops.Sleep(rng.uniform(0.5, 3.0))
            yield ops.Close(conn)
            first = False
        yield ops.Sleep(rng.expovariate(1.0 / eng.session_interval) + 30.0)
