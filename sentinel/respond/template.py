"""Templates in playbooks: Jinja2 in a sandbox, where values from the wire stay data.

A playbook's text (``"{{ rule.name }} from {{ source.ip }}"``) is written by an operator and
compiled once, at load time, in Jinja2's ``SandboxedEnvironment`` (no attribute access to
Python internals, bounded ``range``). Values come from the finding, which an attacker can
shape (a rule name quoting a register, a hostile file name in evidence). Three rules keep them
data:

- a rendered value is never rendered again, so ``{{ 7*7 }}`` inside a field stays literal;
- every ``{{ expression }}`` output passes through ``finalize``: it is capped in length
  (``MAX_VALUE``), its control characters (CR and LF included: no header or log-line
  injection) become spaces, and it is escaped for where the text goes — Slack's ``&<>``
  entities, Markdown and ``@mention`` neutralising for Teams and Mattermost;
- the whole output is capped (``MAX_OUTPUT``).

Missing fields render as empty strings (``ChainableUndefined``): findings differ in shape and a
notification must not fail because one has no ``source``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

MAX_VALUE = 2048  # characters of one rendered value
MAX_OUTPUT = 64 * 1024  # characters of one rendered template
Mode = Literal["text", "slack", "markdown"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


class RenderError(Exception):
    """A template failed at render time (a sandbox violation, a filter error)."""


def clean(value: Any, limit: int = MAX_VALUE) -> str:
    """A value as one safe line: capped, control characters replaced by spaces."""
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return _CONTROL.sub(" ", text)


def escape_slack(text: str) -> str:
    """Slack's three control characters (api.slack.com "Escaping text")."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_markdown(text: str) -> str:
    """Backslash-escape Markdown syntax and break ``@channel``-style mentions."""
    return _MARKDOWN.sub(r"\\\1", text).replace("@", "@\u200b")


_ESCAPES: dict[str, Callable[[str], str]] = {
    "text": lambda s: s,
    "slack": escape_slack,
    "markdown": escape_markdown,
}


def _finalizer(mode: str) -> Callable[[Any], str]:
    escape = _ESCAPES[mode]

    def finalize(value: Any) -> str:
        if isinstance(value, ChainableUndefined):
            return ""
        return escape(clean(value))

    return finalize


@lru_cache(maxsize=8)
def environment(mode: Mode = "text") -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=ChainableUndefined,
        autoescape=False,
        finalize=_finalizer(mode),
        keep_trailing_newline=False,
    )
    env.globals.clear()  # no range, dict, lipsum, cycler...: only the finding's fields
    return env


def check(source: str) -> str | None:
    """``None`` if ``source`` compiles, else the syntax error (with its line in the text)."""
    try:
        environment("text").parse(source)
    except TemplateSyntaxError as exc:
        return f"template line {exc.lineno}: {exc.message}"
    return None


@lru_cache(maxsize=1024)
def _compiled(source: str, mode: Mode) -> Any:
    return environment(mode).from_string(source)


def render(source: str, context: dict[str, Any], mode: Mode = "text") -> str:
    """Render ``source`` with ``context``; the output is capped at ``MAX_OUTPUT``."""
    try:
        out = _compiled(source, mode).render(context)
    except TemplateError as exc:
        raise RenderError(f"template: {exc}") from None
    except Exception as exc:  # a sandbox violation or a filter on an odd value
        raise RenderError(f"template: {type(exc).__name__}: {exc}") from None
    if len(out) > MAX_OUTPUT:
        out = out[:MAX_OUTPUT] + "…"
    return out


def context_for(finding: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a template sees: the finding's top-level fields, ``finding`` itself, and extras."""
    ctx: dict[str, Any] = {
        k: v for k, v in finding.items() if isinstance(k, str) and k.isidentifier()
    }
    ctx["finding"] = finding
    ctx["timestamp"] = finding.get("@timestamp", "")
    sentinel = finding.get("sentinel")
    ctx["severity"] = sentinel.get("severity_label", "") if isinstance(sentinel, dict) else ""
    ctx["now"] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    ctx.update(extra)
    return ctx
