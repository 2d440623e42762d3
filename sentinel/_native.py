"""Compiled hot paths: use them only when they were built from the sources at hand.

``setup.py`` compiles the per-packet and per-message modules with mypyc and writes
``_native.json`` beside this file: each compiled module and the SHA-256 of the source it was
built from. An extension module shadows its ``.py``, so an edited checkout would otherwise run
the code of its last build. :func:`choose` runs once, when ``sentinel`` is imported, before
any compiled module is: if a source no longer matches its build, or ``SENTINEL_PURE_PYTHON=1``
is set, every compiled module is loaded from its source instead (all or none: compiled
modules call each other directly, so one stale module cannot be swapped alone) and, for the
stale case, a warning says how to rebuild.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

MANIFEST = Path(__file__).with_name("_native.json")
ENV = "SENTINEL_PURE_PYTHON"


class SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the listed modules as source files, ahead of their extension modules."""

    def __init__(self, modules: dict[str, Path]) -> None:
        self.modules = modules

    def find_spec(
        self, name: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.modules.get(name)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(name, source)


def _source(module: str) -> Path | None:
    """The ``.py`` of ``module``, found without importing it or its package."""
    package, _, name = module.rpartition(".")
    spec = importlib.util.find_spec(package)
    for entry in (spec.submodule_search_locations or []) if spec else []:
        path = Path(entry) / f"{name}.py"
        if path.is_file():
            return path
    return None


def stale(digests: dict[str, str], sources: dict[str, Path | None]) -> list[str]:
    """The modules whose source is missing or differs from the one they were built from."""
    out = []
    for module, digest in digests.items():
        path = sources[module]
        if path is None or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            out.append(module)
    return out


def compiled() -> bool:
    """True when the compiled modules are the ones in use."""
    return MANIFEST.is_file() and not any(isinstance(f, SourceFirst) for f in sys.meta_path)


def choose(manifest: Path = MANIFEST) -> None:
    """Keeps the compiled modules, or puts their sources first (see the module docstring)."""
    if not compiled():
        return
    digests: dict[str, str] = json.loads(manifest.read_text())
    sources = {m: _source(m) for m in digests}
    if os.environ.get(ENV) != "1":
        changed = stale(digests, sources)
        if not changed:
            return
        warnings.warn(
            f"sentinel: {', '.join(changed)} changed since the compiled build; running every "
            f"compiled module from source (slower). Rebuild: pip install -e . (or set {ENV}=1)",
            RuntimeWarning,
            stacklevel=3,
        )
    sys.meta_path.insert(0, SourceFirst({m: p for m, p in sources.items() if p is not None}))
