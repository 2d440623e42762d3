"""Which rules a run uses: the shipped sets, ``--rules`` additions, variables, classification.

- Shipped content lives in the ``sentinel.signatures`` package (``signatures/`` in the
  source tree): every ``*.rules`` there, and ``classification.config``.
- Variables: Suricata's defaults, with ``HOME_NET`` = the config's site networks when any
  are declared, ``MODBUS_PORTS`` = ``decode.modbus_ports`` and ``DNP3_PORTS`` =
  ``ot.dnp3.ports``; a YAML file (``--rule-vars``)
  overrides them, in Suricata's layout (``vars: {address-groups: ..., port-groups: ...}``,
  or the two groups at the top level).

Loading is cached by file identity (path, size, mtime), so one process that runs several
captures parses each rule file once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sentinel.config import Config
from sentinel.errors import Location, RuleError
from sentinel.rules.addresses import Variables, check_variables, default_variables
from sentinel.rules.parser import (
    Classification,
    ParseContext,
    RuleSet,
    load_classification,
    load_rules,
    rule_files,
)

log = logging.getLogger(__name__)


def shipped_dir() -> Path:
    """The directory of the shipped rule content (installed ``sentinel.signatures``)."""
    return Path(str(resources.files("sentinel.signatures")))


def shipped_classification() -> Path:
    return shipped_dir() / "classification.config"


@dataclass
class RuleSettings:
    """What to load: ``paths`` add to the shipped sets unless ``include_default`` is off."""

    paths: tuple[str, ...] = ()
    include_default: bool = True
    vars_file: str | None = None
    classification: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- variables
def load_vars_file(path: str, base: Variables) -> Variables:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleError(f"cannot read rule variables: {exc.strerror}", Location(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        raise RuleError(f"YAML syntax: {getattr(exc, 'problem', exc)}", where) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RuleError("rule variables must be a mapping", Location(path))
    if "vars" in data:
        data = data["vars"] or {}
    unknown = set(data) - {"address-groups", "port-groups"}
    if unknown:
        raise RuleError(
            f"unknown section(s) {', '.join(sorted(unknown))}: expected address-groups and "
            "port-groups",
            Location(path),
        )
    addresses = dict(base.addresses)
    ports = dict(base.ports)
    for section, target in (("address-groups", addresses), ("port-groups", ports)):
        groups = data.get(section) or {}
        if not isinstance(groups, dict):
            raise RuleError(f"{section} must be a mapping of NAME: value", Location(path))
        for name, value in groups.items():
            if isinstance(value, list):
                value = "[" + ",".join(str(v) for v in value) + "]"
            target[str(name)] = str(value)
    variables = Variables(addresses, ports)
    problems = check_variables(variables)
    if problems:
        raise RuleError("; ".join(problems), Location(path))
    return variables


def variables_for(config: Config, vars_file: str | None = None) -> Variables:
    networks = [n for site in config.sites for n in site.networks]
    ot = getattr(config, "ot", None)
    dnp3_ports = list(ot.dnp3.ports) if ot is not None else None
    base = default_variables(networks or None, list(config.decode.modbus_ports), dnp3_ports)
    return load_vars_file(vars_file, base) if vars_file else base


# --------------------------------------------------------------------------- loading
_CACHE: dict[tuple, RuleSet] = {}


def _identity(files: list[str]) -> tuple:
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((os.path.abspath(f), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((os.path.abspath(f), None, None))
    return tuple(out)


def load_ruleset(
    config: Config,
    paths: tuple[str, ...] | list[str] = (),
    include_default: bool = True,
    vars_file: str | None = None,
    classification: str | None = None,
) -> RuleSet:
    """The rules of a run (shipped first, then ``paths``), with every problem found."""
    variables = variables_for(config, vars_file)
    sources: list[str] = []
    if include_default:
        sources.append(str(shipped_dir()))
    sources.extend(paths)
    files = rule_files(sources)
    class_file = classification or str(shipped_classification())
    key = (_identity(files), _identity([class_file]), variables.key())
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    classes: dict[str, Classification] = {}
    problems = []
    if os.path.exists(class_file) or classification:
        classes, problems = load_classification(class_file)
    ruleset = load_rules(files, ParseContext(variables, classes), RuleSet(problems=list(problems)))
    _CACHE[key] = ruleset
    return ruleset


def report(ruleset: RuleSet) -> None:
    """Log every problem of a rule set (once per set)."""
    if getattr(ruleset, "_reported", False):
        return
    ruleset._reported = True  # type: ignore[attr-defined]
    for p in ruleset.problems:
        (log.warning if p.severity == "error" else log.info)("%s", p)
    if ruleset.errors:
        log.warning(
            "%d rule(s) not loaded because of errors; %d signatures loaded",
            len(ruleset.errors),
            ruleset.signatures,
        )
