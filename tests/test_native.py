"""The compiled hot paths (setup.py, sentinel/_native.py): built, in use, same results as the
sources, and never run when their source changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel import _native
from tests.detectors.pcaps import ENG, PLC, save, tcp_stream
from tests.detectors.test_yara import STARTER

ROOT = Path(__file__).parent.parent
DEMO = ROOT / "lab" / "pcaps" / "demo.pcap"
PURE = os.environ.get(_native.ENV) == "1"
FILES = "[importlib.import_module(m).__file__ for m in {}]"  # the child's files of modules
# detectors each capture must make speak (else the comparison proves little)
EXPECTED = {
    "demo": {"modbus_policy", "modbus_recon"},
    "attacks": {"modbus_policy", "modbus_recon", "ml_anomaly", "arp_spoof"},
    "yara": {"yara"},
}
OUTPUTS = ("findings.jsonl", "modbus.jsonl", "flows.jsonl", "assets.jsonl", "eve.json")


def child_env(**env: str) -> dict[str, str]:
    """This environment without the pure-Python switch, plus ``env``."""
    return {k: v for k, v in os.environ.items() if k != _native.ENV} | env


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(**env),
        check=True,
    )  # fmt: skip


def manifest() -> dict[str, str]:
    return json.loads(_native.MANIFEST.read_text())


@pytest.mark.skipif(PURE, reason=f"{_native.ENV}=1: a pure-Python install")
def test_the_install_is_compiled_and_every_listed_module_runs_compiled():
    # `make test` installs with compilation: a build that silently fell back to pure Python
    # would leave the benchmarks measuring something else.
    assert _native.MANIFEST.is_file(), "no compiled build: rerun pip install -e ."
    modules = sorted(manifest())
    assert "sentinel.decode.flow" in modules and "sentinel.detectors.recon" in modules
    done = python(f"import importlib, json; print(json.dumps({FILES.format(modules)}))")
    files = json.loads(done.stdout)
    assert all(f.endswith(".so") for f in files), files
    assert done.stderr == ""  # no staleness warning: the build matches the sources


@pytest.mark.skipif(PURE, reason=f"{_native.ENV}=1: a pure-Python install")
def test_pure_python_at_run_time_loads_every_compiled_module_from_source():
    modules = sorted(manifest())
    done = python(
        "import importlib, json, sentinel._native as n\n"
        f"print(json.dumps([n.compiled(), {FILES.format(modules)}]))",
        **{_native.ENV: "1"},
    )
    flag, files = json.loads(done.stdout)
    assert flag is False
    assert all(f.endswith(".py") for f in files), files


@pytest.mark.skipif(PURE, reason=f"{_native.ENV}=1: a pure-Python install")
def test_a_changed_source_switches_every_module_to_source_with_a_warning(tmp_path):
    # A manifest whose digest of one module no longer matches its source: what an edited
    # checkout looks like. All modules go to source, not just the changed one.
    digests = manifest()
    digests["sentinel.decode.modbus"] = hashlib.sha256(b"an older version").hexdigest()
    edited = tmp_path / "_native.json"
    edited.write_text(json.dumps(digests))
    done = python(
        "import importlib, json, pathlib, warnings, sentinel._native as n\n"
        "warnings.simplefilter('always')\n"
        f"n.choose(pathlib.Path({str(edited)!r}))\n"
        f"print(json.dumps([n.compiled(), {FILES.format(sorted(digests))}]))"
    )
    flag, files = json.loads(done.stdout)
    assert flag is False
    assert all(f.endswith(".py") for f in files), files
    assert "sentinel.decode.modbus changed since the compiled build" in done.stderr
    assert "pip install -e ." in done.stderr


def test_stale_names_missing_and_changed_sources(tmp_path):
    same, changed = tmp_path / "same.py", tmp_path / "changed.py"
    same.write_text("x = 1\n")
    changed.write_text("x = 2\n")
    digest = hashlib.sha256(b"x = 1\n").hexdigest()
    digests = {"a.same": digest, "a.changed": digest, "a.gone": digest}
    sources = {"a.same": same, "a.changed": changed, "a.gone": None}
    assert _native.stale(digests, sources) == ["a.changed", "a.gone"]


def sentinel(*args: str | Path, **env: str) -> None:
    subprocess.run(
        ["sentinel", *map(str, args)], check=True, capture_output=True, env=child_env(**env)
    )


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    """Captures that make every detector speak, with the options to analyse them with."""
    tmp = tmp_path_factory.mktemp("native")
    sentinel("lab", "synth", "--site", "hospital", "--minutes", 20, "--all", "--seed", 2,
             "--out", tmp / "attacks")  # fmt: skip
    sentinel("lab", "synth", "--site", "hospital", "--minutes", 60, "--seed", 5,
             "--out", tmp / "clean")  # fmt: skip
    site = ROOT / "lab/sites/hospital.yaml"
    model = tmp / "hospital.model"
    sentinel("model", "train", tmp / "clean/capture.pcap", "--out", model, "--config", site, "-q")
    yara = [tcp_stream(ENG, PLC, port, [payload]) for _, _, port, payload, _, _ in STARTER.values()]
    return {
        "demo": (DEMO, ["--config", str(site)]),
        "attacks": (tmp / "attacks/capture.pcap", ["--config", str(site), "--model", str(model)]),
        "yara": (save(tmp / "yara.pcap", *yara), []),
    }


@pytest.mark.skipif(PURE, reason=f"{_native.ENV}=1: a pure-Python install")
@pytest.mark.parametrize("capture", ["demo", "attacks", "yara"])
def test_compiled_and_source_give_the_same_outputs(tmp_path, captures, capture):
    # Every detector (policy, recon, rules, ML, YARA, ARP), once compiled and once from
    # source: the output files must be byte for byte the same.
    pcap, options = captures[capture]
    runs = {}
    for mode, env in (("compiled", {}), ("source", {_native.ENV: "1"})):
        out = tmp_path / mode
        sentinel("analyze", pcap, *options, "--out", out, "--format", "eve", **env)
        runs[mode] = {name: (out / name).read_bytes() for name in OUTPUTS}
    detectors = {json.loads(line)["sentinel"].get("detector") for line in
                 runs["compiled"]["findings.jsonl"].splitlines()}  # fmt: skip
    assert detectors >= EXPECTED[capture]
    for name in OUTPUTS:
        assert runs["compiled"][name] == runs["source"][name], name
