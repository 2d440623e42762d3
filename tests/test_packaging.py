"""`pip install .` ships every module and every piece of built-in content."""

from __future__ import annotations

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


def test_wheel_holds_every_module_and_content_file(tmp_path):
    # Build from a clean copy: a build/ directory left in a checkout would hide omissions.
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
    )
    shutil.copytree(ROOT, src, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(src)], check=True)  # fmt: skip
    (wheel,) = tmp_path.glob("sentinel_ot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{dest}/{path.relative_to(ROOT / source).as_posix()}"
        for source, dest in MAPPED.items()
        for pattern in CONTENT
        for path in (ROOT / source).rglob(pattern)
        if "__pycache__" not in path.parts
    }
    assert "sentinel/lab/pcaps/demo.pcap" in expected
    assert expected - names == set()
