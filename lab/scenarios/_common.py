"""Helpers shared by the scenario scripts: choosing a target and its registers."""

from __future__ import annotations

from sentinel.lab.config import Tag
from sentinel.lab.scenarios import ScenarioContext


def pick_plc(ctx: ScenarioContext, needs: str | None = None) -> str:
    """A PLC of the site (the ``target`` parameter if given); ``needs`` = "coils" or
    "setpoints" restricts the choice to PLCs with writable coils or limited registers."""
    if ctx.params.get("target"):
        ctx.target = str(ctx.params["target"])
        return ctx.target
    plcs = [p.asset for p in ctx.site.lab.plcs]
    if needs == "coils":
        plcs = [p for p in plcs if coil_tags(ctx, p)] or plcs
    elif needs == "setpoints":
        plcs = [p for p in plcs if limited_tags(ctx, p)] or plcs
    ctx.target = ctx.rng.choice(plcs)
    return ctx.target


def unit_of(ctx: ScenarioContext, plc: str) -> int:
    return ctx.site.plc(plc).unit


def coil_tags(ctx: ScenarioContext, plc: str) -> list[Tag]:
    return [t for t in ctx.site.tags(plc).values() if t.table == "coils" and t.writable]


def limited_tags(ctx: ScenarioContext, plc: str) -> list[Tag]:
    return [
        t
        for t in ctx.site.tags(plc).values()
        if t.table == "holding" and t.writable and t.min is not None and t.max is not None
    ]
