"""Attack scenarios: one YAML file each (what, which ATT&CK for ICS technique, parameters)
and the Python script that performs it (``run: module:function`` in this package).

A scenario's script is a generator of ``sentinel.lab.ops`` operations, so the same scenario
runs in the synthetic generator and in the live lab. Parameters are randomised from the
scenario's seeded generator: a parameter written ``{uniform: [a, b]}``, ``{randint: [a, b]}``
or ``{choice: [...]}`` is drawn at each run; any other value is used as it is.

Every run of a scenario is one attack and gives one ground-truth label (see
``sentinel.lab.labels``): the scenario name, start and end (epoch seconds), attacker and
target addresses, and the technique id.
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sentinel.lab.config import SiteDef
from sentinel.lab.ops import Actor, Script

TECHNIQUE = re.compile(r"^T0\d{3}$")


class ScenarioDef(BaseModel):
    """A scenario file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    technique: str
    technique_name: str
    description: str
    run: str = Field(pattern=r"^[a-z_]+:[a-z_]+$")
    params: dict[str, Any] = {}

    @field_validator("technique")
    @classmethod
    def _check_technique(cls, v: str) -> str:
        if not TECHNIQUE.match(v):
            raise ValueError(f"not an ATT&CK for ICS technique id: {v!r}")
        return v

    def function(self) -> Callable[[ScenarioContext], Script]:
        module, func = self.run.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), func)  # type: ignore[no-any-return]


@dataclass
class ScenarioContext:
    """What a scenario's script gets: the site, the attacker, the drawn parameters; the
    script sets ``target`` (the address it attacks) before its first operation."""

    scenario: ScenarioDef
    site: SiteDef
    actor: Actor
    params: dict[str, Any]
    target: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rng(self) -> random.Random:
        return self.actor.rng


def draw(value: Any, rng: random.Random) -> Any:
    """A parameter's value for one run (see the module docstring)."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "uniform":
            return rng.uniform(float(arg[0]), float(arg[1]))
        if kind == "randint":
            return rng.randint(int(arg[0]), int(arg[1]))
        if kind == "choice":
            return rng.choice(list(arg))
    return value


def scenarios_dir() -> Path:
    return Path(str(resources.files(__name__)))


@cache
def load_scenarios() -> dict[str, ScenarioDef]:
    """Every scenario shipped with the lab, by name (sorted)."""
    import yaml

    from sentinel.errors import Location, SentinelError

    found: dict[str, ScenarioDef] = {}
    for path in sorted(scenarios_dir().glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            scenario = ScenarioDef.model_validate(data)
            scenario.function()
        except Exception as exc:  # a broken scenario file is a located error
            raise SentinelError(f"bad scenario: {exc}", Location(str(path))) from None
        if scenario.name in found:
            raise SentinelError(f"duplicate scenario {scenario.name!r}", Location(str(path)))
        found[scenario.name] = scenario
    return dict(sorted(found.items()))


def get_scenarios(names: list[str] | tuple[str, ...]) -> list[ScenarioDef]:
    from sentinel.errors import SentinelError

    known = load_scenarios()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SentinelError(f"unknown scenario {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[n] for n in names]


def make_context(scenario: ScenarioDef, site: SiteDef, actor: Actor) -> ScenarioContext:
    params = {k: draw(v, actor.rng) for k, v in scenario.params.items()}
    return ScenarioContext(scenario, site, actor, params)
