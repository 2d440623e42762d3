"""`pip install .` ships every module and every piece of built-in content."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent
# source directory -> where it lands in the wheel (pyproject.toml's package-dir)
MAPPED = {
    "sentinel": "sentinel",
    "detectors": "sentinel/detectors",
    "lab": "sentinel/lab",
    "signatures": "sentinel/signatures",
    "playbooks": "sentinel/playbooks",
}
CONTENT = ("*.py", "*.rules", "*.yar", "*.config", "*.yaml", "*.json", "*.ndjson", "*.pcap")


def clean_copy(tmp_path: Path) -> Path:
    """The checkout without build products: a build/ directory or extension modules left
    in it would hide omissions."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(
        "build",
        "*.egg-info",
        ".git",
        "__pycache__",
        "tests",
        "sentinel-out",
        ".ruff_cache",
        ".pytest_cache",
        ".mypy_cache",
        "*.so",
        "_native.json",
    )
    shutil.copytree(ROOT, src, ignore=ignore)
    return src


def build_wheel(src: Path, out: Path, **env: str) -> zipfile.ZipFile:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(src)], check=True, env={**os.environ, **env})  # fmt: skip
    (wheel,) = out.glob("sentinel_ot-*.whl")
    return zipfile.ZipFile(wheel)


def test_wheel_holds_every_module_and_content_file(tmp_path):
    src = clean_copy(tmp_path)
    # The content, not the compiled modules (the editable install this suite runs is
    # compiled the same way): a pure-Python wheel builds in seconds.
    names = set(build_wheel(src, tmp_path, SENTINEL_PURE_PYTHON="1").namelist())
    expected = {
        f"{dest}/{path.relative_to(ROOT / source).as_posix()}"
        for source, dest in MAPPED.items()
        for pattern in CONTENT
        for path in (ROOT / source).rglob(pattern)
        if "__pycache__" not in path.parts and path.name != "_native.json"  # written by a build
    }
    assert "sentinel/lab/pcaps/demo.pcap" in expected
    assert expected - names == set()


def test_without_a_c_compiler_the_wheel_is_complete_pure_python(tmp_path):
    # The compilation is optional (setup.py): a failed compiler leaves no half-built
    # extension and no manifest behind, so every module runs from its source.
    src = clean_copy(tmp_path)
    names = set(build_wheel(src, tmp_path, CC="/bin/false").namelist())
    assert not [n for n in names if n.endswith(".so") or n.endswith("_native.json")]
    assert {"sentinel/decode/flow.py", "sentinel/detectors/recon.py"} <= names
