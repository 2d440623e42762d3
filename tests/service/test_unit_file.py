"""deploy/sentinel.service against the CLI: the flags of ExecStart exist, and every path the
service writes by default lands in its state directory (the only writable place under
ProtectSystem=strict). A review found the default output folder resolving to /sentinel-live."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

import sentinel.service  # noqa: F401 - registers `sentinel run`
from sentinel.cli import cli
from sentinel.config import Config
from sentinel.es.spool import default_spool_dir
from sentinel.privacy.settings import PrivacySettings
from sentinel.schedule.service import SchedulerService

UNIT = Path(__file__).parents[2] / "deploy" / "sentinel.service"


def _unit() -> dict[str, list[str]]:
    """``Key -> values`` of the [Service] section (systemd allows repeated keys)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def _under(path: str | Path, root: Path) -> bool:
    return Path(path).is_absolute() and Path(path).resolve().is_relative_to(root)


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return _unit()


@pytest.fixture(scope="module")
def state(unit: dict[str, list[str]]) -> Path:
    (name,) = unit["StateDirectory"]
    return Path("/var/lib") / name


def test_exec_start_flags_exist(unit: dict[str, list[str]]) -> None:
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "sentinel" and argv[1] == "run"
    help_text = CliRunner().invoke(cli, ["run", "--help"]).output
    flags = [a.split("=", 1)[0] for a in argv[2:] if a.startswith("-")]
    assert flags, exec_start
    for flag in flags:
        assert f"{flag} " in help_text or f"{flag}," in help_text, f"{flag} not in run --help"


def test_the_output_folder_is_in_the_state_directory(
    unit: dict[str, list[str]], state: Path
) -> None:
    argv = shlex.split(unit["ExecStart"][0])
    if "--out" in argv:
        out = argv[argv.index("--out") + 1]
    else:  # the config's sensor.out_dir (default relative), in the working directory
        out = str(Path(unit.get("WorkingDirectory", ["/"])[0]) / Config().sensor.out_dir)
    assert _under(out, state), f"{out} is read-only under ProtectSystem=strict"
    assert unit["ProtectSystem"] == ["strict"]
    (workdir,) = unit["WorkingDirectory"]  # relative config paths land in the state too
    assert _under(workdir, state)


def test_default_state_paths_are_in_the_state_directory(
    unit: dict[str, list[str]], state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dict(e.split("=", 1) for v in unit["Environment"] for e in shlex.split(v))
    assert _under(env["SENTINEL_STATE"], state)
    monkeypatch.setenv("SENTINEL_STATE", env["SENTINEL_STATE"])
    config = Config()
    playbooks = config.playbooks
    scheduler = SchedulerService(config)
    written = {
        "es spool": default_spool_dir(),
        "playbook audit": playbooks.audit_path(),
        "approvals": playbooks.approvals_path(),
        "cases and documents": playbooks.state() / "documents",
        "snapshots": playbooks.state() / "snapshots",
        "job store": scheduler.store_path,
        "job results": scheduler.state / "jobs",
        "privacy audit": PrivacySettings().audit_path(),
    }
    for what, path in written.items():
        assert _under(path, state), f"{what}: {path}"
