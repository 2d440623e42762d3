"""The ``Action`` interface, its registry, and what actions may use (``Services``).

An action works in two phases, like a change request:

1. ``plan(ctx)`` renders the step's templates against the finding and validates every value
   that came from the wire (addresses parsed with ``ipaddress``, commands built as argument
   lists). It does no I/O. What it returns (``Plan``) is plain JSON: what ``playbook test``
   shows, what dry-run records, and what an operator approves.
2. ``execute(params, services)`` carries out a plan. For actions that need an approval it runs
   later, from the approval store, with exactly the parameters the operator approved.

A value that must not be acted on (an address that does not parse, a declared PLC to block)
raises ``Refused`` in ``plan``; anything that goes wrong when carrying out raises
``ActionError``. Both become a failed outcome, an audit record and a finding of their own.

Privacy (``Services.privacy``, set when pseudonymization is on): findings name hosts outside
the inventory by pseudonym. Actions that act on a host (``firewall.block``, ``scan.device``,
``capture.snapshot``) resolve it at execution through ``private_target`` (an audited
re-identification by the sensor, ``sentinel.privacy.sensor``); their plans, results and error
messages keep the pseudonym (``Target.hide``), so no record or notification shows the clear
address. Without privacy, an address in 240.0.0.0/4 (pseudonym space, never a host) is
refused.

Built-in actions: ``notify.webhook``, ``notify.email``, ``notify.syslog`` (``notify``);
``case.open``, ``asset.tag`` (``records``); ``capture.snapshot``, ``firewall.block``,
``scan.device`` (``network``). Each declares its id, its option model and which of its
options are templates; duplicates are an error at registration.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from sentinel.respond import template
from sentinel.respond.settings import ActionSettings

if TYPE_CHECKING:
    from sentinel.respond.model import Playbook, Step
    from sentinel.respond.records import DocumentStore
    from sentinel.respond.ring import PacketRing


class ActionError(Exception):
    """Carrying out an action failed; the message says why and holds no secret."""


class Refused(ActionError):
    """The finding's data must not be acted on (invalid, hostile, or protected)."""


class Skip(Exception):
    """The step does not apply here (no packet ring, an optional target not configured)."""


class Options(BaseModel):
    """Base of every action's option model (the step's ``with:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Plan:
    """What a step will do: a summary for people and the parameters ``execute`` takes."""

    action: str
    summary: str
    params: dict[str, Any]
    changes_network: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "summary": self.summary,
            "params": self.params,
            "changes_network": self.changes_network,
        }


class CommandRunner:
    """Runs a command given as an argument list (never through a shell)."""

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, shell=False, check=False
        )


ScanQueue = Callable[[str, str], str]  # (job name, address) -> what was queued
PSEUDONYM_SPACE = ipaddress.ip_network("240.0.0.0/4")  # sentinel.privacy.pseudonymizer


class Privacy(Protocol):
    """What actions use of the sensor's privacy settings (``sentinel.privacy.sensor``)."""

    def is_pseudonym(self, text: str) -> bool: ...

    def resolve(
        self, pseudonym: str, *, action: str, context: dict[str, Any], at: float | None
    ) -> str: ...

    def snapshot_policy(self, directory: Path) -> Any: ...

    def record_snapshot(self, **fields: Any) -> None: ...


@dataclass
class Services:
    """What actions may use; the runner builds it once from the config."""

    settings: ActionSettings = field(default_factory=ActionSettings)
    observer: str = "sentinel"
    state: Path = Path(".")
    documents: DocumentStore | None = None
    ring: PacketRing | None = None
    scans: ScanQueue | None = None
    scan_jobs: frozenset[str] = frozenset()
    command: CommandRunner = field(default_factory=CommandRunner)
    protected: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    site_of: Callable[[str], dict[str, str] | None] | None = None
    privacy: Privacy | None = None  # pseudonymization is on: resolve pseudonyms to act

    def protected_reason(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        for net in self.protected:
            if addr in net:
                return f"{addr} is protected ({net}): declared assets and never_block networks"
        return None


@dataclass
class StepContext:
    """One step of one run: the finding, the run and what the templates see."""

    finding: dict[str, Any]
    run_id: str
    playbook: Playbook
    step: Step
    services: Services
    variables: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.variables = template.context_for(
            self.finding,
            run_id=self.run_id,
            playbook={"id": self.playbook.id, "name": self.playbook.name},
            step={"id": self.step.id, "action": self.step.action},
        )

    def render(self, source: str, mode: template.Mode = "text") -> str:
        try:
            return template.render(source, self.variables, mode)
        except template.RenderError as exc:
            raise ActionError(str(exc)) from None

    def render_tree(self, value: Any, mode: template.Mode = "text") -> Any:
        """Render every string of a nested dict/list (a JSON body template)."""
        if isinstance(value, str):
            return self.render(value, mode)
        if isinstance(value, dict):
            return {k: self.render_tree(v, mode) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render_tree(v, mode) for v in value]
        return value


class Action:
    """Base class: set ``id``, ``Options`` and ``templates``; implement ``plan``/``execute``."""

    id: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    templates: ClassVar[tuple[str, ...]] = ()  # option fields holding templates
    targets: ClassVar[str | None] = None  # ActionSettings field that ``target`` names
    changes_network: ClassVar[bool] = False  # always needs an operator's approval
    summary: ClassVar[str] = ""

    def __init__(self, options: Options) -> None:
        self.options = options

    def plan(self, ctx: StepContext) -> Plan:
        raise NotImplementedError

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        raise NotImplementedError


REGISTRY: dict[str, type[Action]] = {}


def register(cls: type[Action]) -> type[Action]:
    if not cls.id:
        raise ValueError(f"{cls.__name__} has no id")
    if cls.id in REGISTRY and REGISTRY[cls.id] is not cls:
        raise ValueError(f"action {cls.id!r} is registered twice")
    REGISTRY[cls.id] = cls
    return cls


def registry() -> dict[str, type[Action]]:
    """Every registered action (importing the built-in modules on first use)."""
    from sentinel.respond import network, notify, records  # noqa: F401 - they register

    return REGISTRY


def parse_address(
    value: Any, what: str = "address"
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A finding's address, parsed; anything else is refused (never passed on as text)."""
    text = value if isinstance(value, str) else ""
    if not text or len(text) > 64:
        raise Refused(f"{what} {template.clean(value, 80)!r} is not an IP address")
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise Refused(f"{what} {template.clean(value, 80)!r} is not an IP address") from None
    if addr.version == 6 and addr.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d
        return addr.ipv4_mapped
    return addr


def privacy_context(ctx: StepContext, at: float | None) -> dict[str, Any]:
    """What a plan keeps so that ``execute`` can re-identify a pseudonym and audit it (the
    playbook, step, run and the finding's time); empty without privacy."""
    if ctx.services.privacy is None:
        return {}
    return {
        "reidentify": {
            "playbook": ctx.playbook.id,
            "step": ctx.step.id,
            "run_id": ctx.run_id,
            "at": at,
        }
    }


@dataclass(frozen=True)
class Target:
    """The address an action acts on, and how records show it (its pseudonym, if any)."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    shown: str

    @property
    def private(self) -> bool:
        return self.shown != str(self.address)

    def hide(self, text: str) -> str:
        """``text`` with the clear address written as the pseudonym (command output)."""
        if not self.private:
            return text
        for form in {str(self.address), self.address.exploded}:
            text = text.replace(form, self.shown)
        return text


def private_target(
    value: Any, services: Services, params: dict[str, Any], action: str, what: str = "address"
) -> Target:
    """The host to act on for ``value`` (a parsed address): a pseudonym is re-identified
    through ``services.privacy`` (audited) or refused; see the module docstring."""
    addr = parse_address(value, what)
    privacy = services.privacy
    if privacy is None or not privacy.is_pseudonym(str(addr)):
        if addr in PSEUDONYM_SPACE and addr.version == 4:
            raise Refused(f"{addr} is a pseudonym (240.0.0.0/4): no host to act on here")
        return Target(addr, str(addr))
    context = params.get("reidentify") or {}
    at = context.get("at")
    try:
        clear = privacy.resolve(
            str(addr),
            action=action,
            context=context,
            at=float(at) if isinstance(at, int | float) else None,
        )
    except Exception as exc:  # ReidentificationError, AuditError: never act on a guess
        raise Refused(str(getattr(exc, "message", None) or exc)) from None
    real = parse_address(clear, what)
    if real == addr or real in PSEUDONYM_SPACE:
        raise Refused(f"{addr} did not resolve to a host address")
    return Target(real, str(addr))


def dig(doc: dict[str, Any], dotted: str) -> Any:
    """``doc["a"]["b"]`` for ``"a.b"`` (also a literal ``"a.b"`` key, as ECS allows)."""
    if dotted in doc:
        return doc[dotted]
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur
