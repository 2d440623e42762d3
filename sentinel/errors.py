"""The exception root. Every error a user can cause carries where it happened.

Like pySigma's ``SigmaError``, the location (file, line, column) is appended to the message, so
that a CLI can print ``str(error)`` and the user knows exactly what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where a problem is: a file, and optionally a line and column (1-based)."""

    path: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        text = self.path
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text


class SentinelError(Exception):
    """Root of every error Sentinel reports to a user."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class ConfigError(SentinelError):
    """A configuration file that is wrong; ``problems`` lists every problem found."""

    def __init__(self, problems: list[SentinelError]) -> None:
        self.problems = problems
        first = problems[0] if problems else SentinelError("invalid configuration")
        super().__init__("; ".join(str(p) for p in problems) or first.message)


class CaptureError(SentinelError):
    """Input that is not a readable capture (wrong format, unreadable file)."""


class RuleError(SentinelError):
    """A detection rule that cannot be loaded."""


class PlaybookError(SentinelError):
    """A playbook that cannot be loaded."""
