"""Man in the middle by ARP spoofing between the HMI and a PLC, altering what the HMI reads."""

from __future__ import annotations

from sentinel.lab import ops
from sentinel.lab.ops import Script
from sentinel.lab.scenarios import ScenarioContext
from sentinel.lab.scenarios._common import pick_plc


def arp_spoof(ctx: ScenarioContext) -> Script:
    target = pick_plc(ctx)
    rng = ctx.rng
    factor = float(ctx.params.get("factor", 1.1))
    yield ops.Mitm(
        victim=ctx.site.lab.hmi.address,
        plc=target,
        duration=float(ctx.params.get("duration", 15.0)),
        factor=factor if rng.random() < 0.5 else 2.0 - factor,
        repoison=float(ctx.params.get("repoison", 2.0)),
    )
