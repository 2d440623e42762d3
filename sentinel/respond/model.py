"""Playbooks: the model, and loading with every problem located at file:line:col.

A playbook (``playbooks/*.yaml``) says which findings it answers (``trigger``), how often
(``throttle``) and what to do (``steps``)::

    id: unauthorized-ot-write
    name: Unauthorized write to an OT device
    trigger:
      rules: ["9000101", "9000105", "9000106"]   # rule ids, or patterns such as "90001*"
      severity: high                             # at least
      sectors: [hospital, energy]
    throttle: {key: [rule.id, source.ip, destination.ip], window: 600, max_runs: 1}
    steps:
      - id: chat
        action: notify.webhook
        timeout: 10
        retries: 2
        with: {target: soc-chat, text: "{{ rule.name }}: {{ source.ip }} -> {{ destination.ip }}"}
      - id: block
        action: firewall.block
        with: {address: "{{ source.ip }}"}

``load_playbooks`` collects the problems of every file (YAML syntax, unknown or wrong fields,
unknown actions, option errors, template syntax, duplicate ids) before giving up, which is
what ``sentinel playbook check`` prints. ``check_targets`` adds the problems that need the
config (a step naming a webhook the config does not define).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sentinel.errors import Location, PlaybookError, SentinelError
from sentinel.findings import SEVERITY
from sentinel.respond import template, yamlpos
from sentinel.respond.actions import Action, registry
from sentinel.respond.settings import ActionSettings

ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Severity = Literal["low", "medium", "high", "critical"]
Sector = Literal["hospital", "energy", "transport", "other"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Trigger(_Strict):
    """Which findings start the playbook; every given criterion must hold (lists: any of)."""

    rules: list[str] = []  # rule ids or fnmatch patterns ("90001*")
    exclude_rules: list[str] = []
    severity: Severity | None = None  # minimum
    techniques: list[str] = []  # ATT&CK ids or patterns ("T08*")
    detectors: list[str] = []
    datasets: list[str] = []
    sites: list[str] = []
    sectors: list[Sector] = []
    min_score: float | None = None  # sentinel.score or sentinel.evidence.score

    @field_validator("rules", "exclude_rules", "techniques", "detectors", "datasets", "sites")
    @classmethod
    def _not_empty(cls, v: list[str]) -> list[str]:
        for item in v:
            if not isinstance(item, str) or not item.strip():
                raise ValueError("empty pattern")
        return v


class Throttle(_Strict):
    """At most ``max_runs`` runs per ``window`` seconds for findings with the same key values."""

    key: list[str] = Field(["rule.id", "source.ip", "destination.ip"], min_length=1)
    window: float = Field(300.0, gt=0, le=30 * 86400)
    max_runs: int = Field(1, ge=1, le=10000)


class Step(_Strict):
    id: str = Field(pattern=ID)
    action: str
    with_: dict[str, Any] = Field({}, alias="with")
    timeout: float = Field(10.0, gt=0, le=600)
    retries: int = Field(0, ge=0, le=10)
    retry_delay: float = Field(1.0, ge=0, le=300)
    on_failure: Literal["continue", "stop"] = "continue"
    approval: bool | None = None  # None: the action's default (network changes: required)
    if_configured: bool = False  # skip (not fail) when the config lacks the step's target

    @field_validator("action")
    @classmethod
    def _known(cls, v: str) -> str:
        known = registry()
        if v not in known:
            raise ValueError(f"unknown action {v!r} (known: {', '.join(sorted(known))})")
        return v


class Playbook(_Strict):
    id: str = Field(pattern=ID)
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    enabled: bool = True
    dry_run: bool = False
    trigger: Trigger
    throttle: Throttle | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, v: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in v:
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} is used twice")
            seen.add(step.id)
        return v


@dataclass
class Loaded:
    """A playbook, its steps' actions, and where it was written (for located messages)."""

    playbook: Playbook
    actions: list[Action]
    path: str
    located: yamlpos.Located | None = None
    builtin: bool = False

    def where(self, *path: Any) -> Location:
        if self.located is None:
            return Location(self.path)
        return self.located.where(path)

    def needs_approval(self, index: int) -> bool:
        step, action = self.playbook.steps[index], self.actions[index]
        return action.changes_network or bool(step.approval)


@dataclass
class LoadResult:
    playbooks: list[Loaded] = field(default_factory=list)
    problems: list[SentinelError] = field(default_factory=list)
    files: int = 0


def _template_problems(
    value: Any, path: tuple[Any, ...], located: yamlpos.Located
) -> list[SentinelError]:
    out: list[SentinelError] = []
    if isinstance(value, str):
        problem = template.check(value)
        if problem:
            where = located.where(path)
            out.append(PlaybookError(f"{'.'.join(map(str, path))}: {problem}", where))
    elif isinstance(value, dict):
        for k, v in value.items():
            out += _template_problems(v, (*path, k), located)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _template_problems(v, (*path, i), located)
    return out


def parse_playbook(located: yamlpos.Located, builtin: bool = False) -> tuple[Loaded | None, list]:
    """Validate one parsed playbook file; returns it (or None) and its problems."""
    problems: list[SentinelError] = list(located.duplicates)
    data = located.data
    if not isinstance(data, dict):
        problems.append(PlaybookError("a playbook must be a mapping", located.where(())))
        return None, problems
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        problems += located.errors(exc, error=PlaybookError)
        # Validate the steps that are fine on their own too, to report everything at once.
        steps = data.get("steps")
        if isinstance(steps, list):
            for i, raw in enumerate(steps):
                try:
                    step = Step.model_validate(raw)
                except ValidationError:
                    continue
                _, more = _step_action(step, i, located)
                problems += more
        return None, problems
    actions: list[Action] = []
    for i, step in enumerate(playbook.steps):
        action, more = _step_action(step, i, located)
        problems += more
        if action is not None:
            actions.append(action)
    if problems:
        return None, problems
    return Loaded(playbook, actions, located.name, located, builtin), problems


def _step_action(
    step: Step, i: int, located: yamlpos.Located
) -> tuple[Action | None, list[SentinelError]]:
    cls = registry()[step.action]
    problems: list[SentinelError] = []
    prefix = ("steps", i, "with")
    try:
        options = cls.Options.model_validate(step.with_)
    except ValidationError as exc:
        return None, located.errors(exc, prefix, PlaybookError)
    for name in cls.templates:
        problems += _template_problems(step.with_.get(name), (*prefix, name), located)
    if cls.changes_network and step.approval is False:
        problems.append(
            PlaybookError(
                f"steps.{i}.approval: {step.action} changes the network and always needs an "
                "operator's approval",
                located.where(("steps", i, "approval")),
            )
        )
    return (None if problems else cls(options)), problems


def load_file(path: str | os.PathLike[str], builtin: bool = False) -> tuple[Loaded | None, list]:
    name = os.fspath(path)
    try:
        located = yamlpos.read(name, PlaybookError)
    except PlaybookError as exc:
        return None, [exc]
    return parse_playbook(located, builtin)


def builtin_dir() -> Path:
    return Path(str(resources.files("sentinel.playbooks")))


def builtin_files() -> dict[str, Path]:
    """The shipped playbooks by file stem (which is their id)."""
    return {p.stem: p for p in sorted(builtin_dir().glob("*.yaml"))}


def _expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files += sorted(q for q in path.iterdir() if q.suffix in (".yaml", ".yml"))
        else:
            files.append(path)
    return files


def load_playbooks(
    paths: Iterable[str | os.PathLike[str]] = (), builtin: Iterable[str] | str = ()
) -> LoadResult:
    """Load playbook files and folders and shipped playbooks by id; collect every problem."""
    result = LoadResult()
    shipped = builtin_files()
    chosen: list[tuple[Path, bool]] = []
    names = list(shipped) if builtin == "all" else list(builtin)
    for name in names:
        if name not in shipped:
            result.problems.append(
                PlaybookError(
                    f"no shipped playbook {name!r} (shipped: {', '.join(shipped) or 'none'})"
                )
            )
            continue
        chosen.append((shipped[name], True))
    for path in _expand(paths):
        chosen.append((path, False))
    seen: dict[str, str] = {}
    for path, is_builtin in chosen:
        result.files += 1
        loaded, problems = load_file(path, is_builtin)
        result.problems += problems
        if loaded is None:
            continue
        pid = loaded.playbook.id
        if pid in seen:
            result.problems.append(
                PlaybookError(
                    f"id: playbook id {pid!r} is also used by {seen[pid]}", loaded.where("id")
                )
            )
            continue
        seen[pid] = loaded.path
        result.playbooks.append(loaded)
    return result


def check_targets(loaded: Loaded, settings: ActionSettings) -> list[SentinelError]:
    """Steps naming a target (webhook, mail server, syslog collector) the config lacks."""
    problems: list[SentinelError] = []
    for i, (step, action) in enumerate(zip(loaded.playbook.steps, loaded.actions, strict=True)):
        kind = action.targets
        target = getattr(action.options, "target", None)
        if kind is None or target is None or step.if_configured:
            continue
        defined = getattr(settings, kind)
        if target not in defined:
            problems.append(
                PlaybookError(
                    f"steps.{i}.with.target: no {kind} target {target!r} in the config's "
                    f"actions.{kind} (defined: {', '.join(defined) or 'none'})",
                    loaded.where("steps", i, "with", "target"),
                )
            )
    return problems


# -- matching
def _matches(value: Any, patterns: list[str]) -> bool:
    values = value if isinstance(value, list) else [value]
    texts = [str(v) for v in values if v is not None]
    return any(fnmatch.fnmatchcase(t, p) for t in texts for p in patterns)


def score_of(doc: dict[str, Any]) -> float | None:
    s = doc.get("sentinel")
    if not isinstance(s, dict):
        return None
    for value in (s.get("score"), (s.get("evidence") or {}).get("score")):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def why_not(trigger: Trigger, doc: dict[str, Any]) -> str | None:
    """``None`` when ``doc`` matches ``trigger``, else the first criterion that failed."""
    from sentinel.respond.actions import dig

    rule_id = dig(doc, "rule.id")
    if trigger.rules and not _matches(rule_id, trigger.rules):
        return f"rule.id {rule_id!r} is not in {trigger.rules}"
    if trigger.exclude_rules and _matches(rule_id, trigger.exclude_rules):
        return f"rule.id {rule_id!r} is excluded"
    if trigger.severity is not None:
        sev = dig(doc, "event.severity")
        if not isinstance(sev, int | float) or sev < SEVERITY[trigger.severity]:
            return f"event.severity {sev!r} is below {trigger.severity}"
    if trigger.techniques and not _matches(dig(doc, "threat.technique.id"), trigger.techniques):
        return f"threat.technique.id {dig(doc, 'threat.technique.id')!r} not in the trigger's"
    if trigger.detectors and not _matches(dig(doc, "sentinel.detector"), trigger.detectors):
        return f"sentinel.detector {dig(doc, 'sentinel.detector')!r} not in the trigger's"
    if trigger.datasets and not _matches(dig(doc, "event.dataset"), trigger.datasets):
        return f"event.dataset {dig(doc, 'event.dataset')!r} not in the trigger's"
    if trigger.sites and not _matches(dig(doc, "labels.site"), trigger.sites):
        return f"labels.site {dig(doc, 'labels.site')!r} not in {trigger.sites}"
    if trigger.sectors and dig(doc, "labels.sector") not in trigger.sectors:
        return f"labels.sector {dig(doc, 'labels.sector')!r} not in {trigger.sectors}"
    if trigger.min_score is not None:
        score = score_of(doc)
        if score is None or score < trigger.min_score:
            return f"score {score!r} is below {trigger.min_score}"
    return None
