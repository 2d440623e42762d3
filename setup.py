"""Compiles the per-packet and per-message hot paths with mypyc (see docs/native.md).

Everything else about the package is declared in pyproject.toml. The modules below are plain,
typed Python that also runs uncompiled: ``SENTINEL_PURE_PYTHON=1`` at build time skips the
compilation (so does a machine without a C compiler, with a warning), and at run time
``sentinel/_native.py`` runs the sources instead whenever one no longer matches its build (an
edited checkout) or ``SENTINEL_PURE_PYTHON=1`` is set.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

ROOT = Path(__file__).parent
# Source directory of each installed package that holds a compiled module (pyproject.toml's
# package-dir): the detectors live in detectors/ but are sentinel.detectors.*.
PACKAGE_DIRS = {"sentinel": "sentinel", "sentinel.detectors": "detectors"}
COMPILED = (
    "sentinel.decode.packet",
    "sentinel.decode.flow",
    "sentinel.decode.modbus",
    "sentinel.pipeline.routes",
    "sentinel.pipeline.detector",
    "sentinel.rules.engine",
    "sentinel.rules.keywords",
    "sentinel.rules.modbus",
    "sentinel.rules.payload",
    "sentinel.rules.transactions",
    "sentinel.ml.window",
    "sentinel.ml.tracker",
    "sentinel.ml.engine",
    "sentinel.detectors.modbus_policy",
    "sentinel.detectors.recon",
    "sentinel.detectors.yara_scan",
    "sentinel.detectors.common",
)
MANIFEST = "_native.json"  # module -> sha256 of the source it was compiled from


def source_of(module: str) -> Path:
    """The checkout's source file of ``module``."""
    package, _, name = module.rpartition(".")
    for prefix, directory in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[0])):
        if package == prefix or package.startswith(prefix + "."):
            rest = package[len(prefix) :].lstrip(".").replace(".", "/")
            return ROOT / directory / rest / f"{name}.py"
    raise ValueError(f"{module}: not under {sorted(PACKAGE_DIRS)}")


def staged_sources(stage: Path) -> list[str]:
    """Copies the package's sources into ``stage`` in their installed layout (mypyc names a
    module after its path) and returns the staged paths of the modules to compile."""
    shutil.rmtree(stage, ignore_errors=True)
    for package, directory in PACKAGE_DIRS.items():
        target = stage / package.replace(".", "/")
        for path in (ROOT / directory).rglob("*.py"):
            dest = target / path.relative_to(ROOT / directory)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    return [str(stage / (m.replace(".", "/") + ".py")) for m in COMPILED]


def remove_build_products() -> None:
    """Removes the compiled modules of an earlier build from the checkout: they shadow their
    sources, and one whose module is no longer compiled would be imported and fail."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = [*ROOT.glob("*__mypyc*")]  # mypyc's shared library
    for directory in PACKAGE_DIRS.values():
        found += (ROOT / directory).rglob("*")
    for path in found:
        if path.name.endswith(suffixes):
            path.unlink()
    (ROOT / "sentinel" / MANIFEST).unlink(missing_ok=True)


class BuildNative(build_ext):
    """build_ext that also writes the manifest ``sentinel/_native.py`` checks at import."""

    def run(self) -> None:
        # where a module directly under sentinel/ would go: in place or in build_lib
        package_dir = Path(self.get_ext_fullpath("sentinel._native")).parent
        (package_dir / MANIFEST).unlink(missing_ok=True)
        if self.inplace:  # an editable install
            remove_build_products()
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            # No C compiler (or headers): the package is complete without its extensions, as
            # with MarkupSafe's or PyYAML's optional speedups. Leave none half-built behind.
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            print(
                f"WARNING: compiling Sentinel's hot paths failed ({exc}); installing them as "
                "pure Python, which is slower (docs/native.md)",
                file=sys.stderr,
            )
            return
        digests = {m: hashlib.sha256(source_of(m).read_bytes()).hexdigest() for m in COMPILED}
        (package_dir / MANIFEST).write_text(json.dumps(digests, indent=1) + "\n")


def native_extensions() -> list:
    if os.environ.get("SENTINEL_PURE_PYTHON") == "1":
        remove_build_products()  # an editable install must not keep running them
        return []
    from mypyc.build import mypycify

    stage = ROOT / "build" / "mypyc-src"
    # Third-party libraries are typed Any: the same result in any build environment.
    flags = [
        "--no-site-packages",
        "--ignore-missing-imports",
        "--follow-imports=silent",
        "--python-version=3.11",
    ]
    return mypycify(
        [*flags, *staged_sources(stage)],
        opt_level="3",
        target_dir="build",
        group_name="sentinel_native",
    )


ext_modules = native_extensions()
setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildNative} if ext_modules else {})
