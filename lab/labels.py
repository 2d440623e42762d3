"""Ground-truth labels: one JSON object per attack, one per line (``labels.jsonl``).

``{"scenario", "start", "end", "attacker", "target", "technique"}``: the scenario's name,
when the attack began and ended (epoch seconds, packet time), the attacker's and the
target's IPv4 addresses as strings, and the MITRE ATT&CK for ICS technique id (``T0855``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from sentinel.errors import Location, SentinelError

FIELDS = ("scenario", "start", "end", "attacker", "target", "technique")


@dataclass(frozen=True)
class Label:
    scenario: str
    start: float
    end: float
    attacker: str
    target: str
    technique: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(", ", ": "))


def write_labels(path: str | os.PathLike[str], labels: list[Label]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for label in labels:
            f.write(label.to_json() + "\n")


def read_labels(path: str | os.PathLike[str]) -> list[Label]:
    """Read a labels file; a line that is not a label is a located error."""
    name = os.fspath(path)
    labels = []
    try:
        with open(name, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as exc:
        raise SentinelError(f"cannot read labels: {exc.strerror}", Location(name)) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or set(data) != set(FIELDS):
                raise ValueError(f"a label has exactly the fields {', '.join(FIELDS)}")
            label = Label(
                str(data["scenario"]),
                float(data["start"]),
                float(data["end"]),
                str(data["attacker"]),
                str(data["target"]),
                str(data["technique"]),
            )
            if label.end < label.start:
                raise ValueError("end before start")
        except (ValueError, TypeError) as exc:
            raise SentinelError(f"not a label: {exc}", Location(name, n)) from None
        labels.append(label)
    return labels
