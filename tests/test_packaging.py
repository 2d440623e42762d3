"""`pip install .` ships every module and every piece of built-in content."""

from __future__ import annotations

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
CONTENT = ("*.py", "*.rules", "*.yar", "*.config", "*.yaml", "*.json", "*.ndjson")


def test_wheel_holds_every_module_and_content_file(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("sentinel_ot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for src, dest in MAPPED.items():
        for pattern in CONTENT:
            for path in (ROOT / src).rglob(pattern):
                rel = path.relative_to(ROOT / src)
                if "__pycache__" in rel.parts or (
                    src == "lab" and rel.parts[0] == "pcaps" and path.suffix == ".py"
                ):
                    continue
                expected.add(f"{dest}/{rel.as_posix()}")
    expected.add("sentinel/lab/pcaps/demo.pcap")
    assert expected - names == set()
