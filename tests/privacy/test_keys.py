"""Key files, key rings, the environment, rotation, and the config's privacy section."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.config import Config
from sentinel.errors import ConfigError, SentinelError
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import Key, load_ring, parse_time, read_key_file, write_key_file
from sentinel.privacy.runtime import load, pseudonymizer_for
from sentinel.privacy.settings import Minimization, PrivacySettings, parse_duration
from tests.privacy import traffic

T0 = parse_time("2026-01-01T00:00:00Z")
DAY = 86400.0


def test_key_files_are_private_json_and_never_overwritten(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "k.key", Key.generate(T0))
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    key = read_key_file(path)
    assert doc["id"] == key.id and base64.b64decode(doc["secret"]) == key.secret
    assert key.valid_from == T0
    with pytest.raises(SentinelError, match="never overwritten"):
        write_key_file(path, Key.generate())
    path.chmod(0o644)
    with pytest.raises(SentinelError, match="chmod 600"):
        read_key_file(path)


def test_a_damaged_key_file_is_refused(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "k.key", Key.generate())
    doc = json.loads(path.read_text())
    doc["secret"] = base64.b64encode(b"\x01" * 32).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(SentinelError, match="does not match its id"):
        read_key_file(path)


def test_plain_secret_files_and_the_environment(tmp_path: Path) -> None:
    secret = os.urandom(32)
    for i, text in enumerate((secret.hex(), base64.b64encode(secret).decode())):
        path = tmp_path / f"plain{i}.key"
        path.write_text(text + "\n")
        path.chmod(0o600)
        assert read_key_file(path).secret == secret
    ring = load_ring("env:MY_KEY", {"MY_KEY": base64.urlsafe_b64encode(secret).decode()})
    assert ring.active().secret == secret
    with pytest.raises(SentinelError, match="MY_KEY is not set"):
        load_ring("env:MY_KEY", {})
    with pytest.raises(SentinelError, match="too short"):
        load_ring("env:MY_KEY", {"MY_KEY": base64.b64encode(b"short").decode()})


def test_a_ring_selects_the_key_in_force_and_rotates_on_schedule(tmp_path: Path) -> None:
    ring = load_ring(str(tmp_path))
    first = ring.rotate_if_due(30 * DAY, T0)  # an empty ring gets its first key
    assert first is not None and ring.active(T0).id == first.id
    assert ring.rotate_if_due(30 * DAY, T0 + 29 * DAY) is None
    second = ring.rotate_if_due(30 * DAY, T0 + 31 * DAY)
    assert second is not None and second.id != first.id
    reloaded = load_ring(str(tmp_path))
    assert [k.id for k in reloaded.keys] == [first.id, second.id]
    assert reloaded.active(T0 + 1 * DAY).id == first.id
    assert reloaded.active(T0 + 40 * DAY).id == second.id
    with pytest.raises(SentinelError, match="valid yet"):
        reloaded.active(T0 - DAY)


def test_pseudonymizer_for_rotates_a_ring_and_audits_it(tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    ring.mkdir()
    load_ring(str(ring)).add(T0)
    settings = PrivacySettings.model_validate(
        {"pseudonymization": {"enabled": True, "key_file": str(ring), "rotation": "30d"}}
    )
    config = _with_privacy(settings)
    p1 = pseudonymizer_for(config, now=T0 + DAY)
    p2 = pseudonymizer_for(config, now=T0 + 45 * DAY)
    assert p1 is not None and p2 is not None and p1.key.id != p2.key.id
    assert p1.address("10.20.1.1") != p2.address("10.20.1.1")  # rotation unlinks periods
    events = [e["event"] for e in AuditLog(settings.audit_path()).entries()]
    assert events == ["rotate"]
    assert pseudonymizer_for(Config()) is None  # off unless asked for


def test_rotation_needs_a_ring(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "k.key", Key.generate())
    settings = PrivacySettings.model_validate(
        {"pseudonymization": {"enabled": True, "key_file": str(path), "rotation": "7d"}}
    )
    with pytest.raises(SentinelError, match="key-ring directory"):
        pseudonymizer_for(_with_privacy(settings))


def test_keygen_rotate_and_keys_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ring = tmp_path / "ring"
    main(["privacy", "keygen", str(ring), "--ring", "--valid-from", "2026-01-01"])
    main(["privacy", "rotate", str(ring), "--at", "2026-02-01"])
    main(["privacy", "rotate", str(ring), "--if-older", "30d", "--at", "2026-02-15"])
    main(["privacy", "keys", str(ring)])
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("not due")
    listing = [line.split("\t") for line in out[3:]]
    assert [row[1] for row in listing] == ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]
    assert listing[1][4] == "active" and listing[0][2].startswith("fd")
    secrets_ = [k.secret for k in load_ring(str(ring)).keys]
    assert not any(s.hex() in "\n".join(out) for s in secrets_)


def test_durations_and_payload_caps() -> None:
    assert parse_duration("30d") == 30 * DAY and parse_duration("2w") == 14 * DAY
    for bad in ("30", "0d", "1y", "-1d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    m = Minimization(payload={"modbus": 16})
    assert m.cap_payload("modbus", b"x" * 100) == b"x" * 16
    assert m.cap_payload("http", b"x" * 100) is None
    assert Minimization().payload_limit("modbus") == 0  # nothing is stored by default


def test_a_config_with_a_privacy_section_loads_and_its_errors_are_located(tmp_path: Path) -> None:
    good = traffic.write_config(
        tmp_path / "good.yaml",
        {"pseudonymization": {"enabled": True, "key_env": "K"}, "retention": {"flows": "7d"}},
    )
    config, settings = load(good)
    assert settings.retention.flows == "7d" and config.assets[0].address == traffic.PLC
    bad = traffic.write_config(
        tmp_path / "bad.yaml",
        {"retention": {"flows": "7 days"}, "pseudonymization": {"identifiers": "hide"}},
    )
    with pytest.raises(ConfigError) as err:
        load(bad)
    lines = bad.read_text().splitlines()
    problems = {p.message.split(":")[0]: p for p in err.value.problems}
    flows = problems["privacy.retention.flows"].location
    assert "7 days" in lines[flows.line - 1]
    ident = problems["privacy.pseudonymization.identifiers"].location
    assert "hide" in lines[ident.line - 1]


def _with_privacy(settings: PrivacySettings) -> object:
    """A config object with a ``privacy`` section, as ``Config`` will have."""

    class WithPrivacy:
        assets = Config.model_validate(traffic.SITE_CONFIG).assets
        sites = Config.model_validate(traffic.SITE_CONFIG).sites
        privacy = settings

    return WithPrivacy()
