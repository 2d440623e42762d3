"""YAML with positions: every value and key of a document located at file:line:column.

Playbooks and the service's config sections are validated with pydantic; a validation error
names a path (``steps.2.with.url``) that is mapped back to where it is written, so that every
problem is reported as ``file:line:col: message``. Duplicate keys, which PyYAML silently
resolves to the last one, are problems too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from sentinel.errors import Location, SentinelError

Path_ = tuple[Any, ...]


@dataclass
class Located:
    """A parsed YAML document and where each of its parts starts."""

    name: str
    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[SentinelError] = field(default_factory=list)

    def where(self, path: Path_, *, key: bool = False) -> Location:
        """The location of the value at ``path`` (or of its key), else of its closest parent."""
        table = self.keys if key and path in self.keys else self.values
        loc = tuple(path)
        while loc not in table and loc:
            loc = loc[:-1]
        line, col = table.get(loc, self.values.get((), (1, 1)))
        return Location(self.name, line, col)

    def errors(
        self, exc: ValidationError, prefix: Path_ = (), error: type[SentinelError] = SentinelError
    ) -> list[SentinelError]:
        """One located error per pydantic problem; ``prefix`` is where the validated part sits."""
        out: list[SentinelError] = []
        for err in exc.errors():
            loc = (*prefix, *err["loc"])
            where = self.where(loc, key=err["type"] == "extra_forbidden")
            dotted = ".".join(str(p) for p in loc) or "(top)"
            msg = err["msg"].removeprefix("Value error, ")
            out.append(error(f"{dotted}: {msg}", where))
        return out


def parse(text: str, name: str, error: type[SentinelError] = SentinelError) -> Located:
    """Parse ``text``; a syntax error raises ``error`` located at the offending character."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        reason = getattr(exc, "problem", None) or str(exc)
        raise error(f"YAML syntax: {reason}", where) from None
    located = Located(name, data)
    _walk(root, (), located, error)
    return located


def read(path: str, error: type[SentinelError] = SentinelError) -> Located:
    """Read and parse a YAML file; unreadable files raise ``error`` located at the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", Location(path)) from None
    except UnicodeDecodeError:
        raise error("not UTF-8 text", Location(path)) from None
    return parse(text, path, error)


def _walk(node: Any, path: Path_, out: Located, error: type[SentinelError]) -> None:
    if node is None:
        return
    out.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            where = (key.start_mark.line + 1, key.start_mark.column + 1)
            if key.value in seen:
                dotted = ".".join(str(p) for p in (*path, key.value))
                out.duplicates.append(error(f"{dotted}: duplicate key", Location(out.name, *where)))
            seen.add(key.value)
            out.keys[(*path, key.value)] = where
            _walk(value, (*path, key.value), out, error)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), out, error)
