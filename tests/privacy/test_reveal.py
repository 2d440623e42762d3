"""Re-identification for key holders only, every use audited; the audit log's hash chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.errors import SentinelError
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import Key, KeyRing, load_ring, parse_time
from sentinel.privacy.pseudonymizer import Pseudonymizer
from sentinel.privacy.reveal import reveal
from sentinel.privacy.settings import Pseudonymization
from sentinel.privacy.table import RevealTable

NETS = ["10.10.0.0/24", "10.20.0.0/16", "2001:db8:10::/64"]
T0 = parse_time("2026-01-01")


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    (tmp_path / "ring").mkdir()
    ring = load_ring(str(tmp_path / "ring"))
    ring.add(T0)
    return ring


def sensor(ring: KeyRing, table: RevealTable | None = None, now: float = T0 + 1) -> Pseudonymizer:
    return Pseudonymizer(ring.active(now), clear=["10.10.0.20"], networks=NETS, table=table)


def test_reveal_by_search_in_the_tagged_network_and_the_audit_entry(
    ring: KeyRing, tmp_path: Path
) -> None:
    pseudo = sensor(ring).address("10.20.3.7")
    audit = AuditLog(tmp_path / "audit.jsonl")
    result = reveal(pseudo, ring, audit, "incident 17", networks=NETS)
    assert result.outcome == "found" and [m.value for m in result.matches] == ["10.20.3.7"]
    assert result.matches[0].method == "search"
    (entry,) = audit.entries()
    assert entry["event"] == "reveal" and entry["pseudonym"] == pseudo
    assert entry["reason"] == "incident 17" and entry["outcome"] == "found"
    assert entry["key_id"] == [ring.active(T0 + 1).id] and entry["user"]
    assert "10.20.3.7" not in audit.path.read_text()  # the log is no re-identification table
    assert audit.path.stat().st_mode & 0o777 == 0o600


def test_reveal_needs_a_reason_and_a_pseudonym(ring: KeyRing, tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(SentinelError, match="reason"):
        reveal("241.1.2.3", ring, audit, " ")
    with pytest.raises(SentinelError, match="ordinary address"):
        reveal("10.20.3.7", ring, audit, "x")
    assert audit.entries() == []


def test_a_wrong_key_finds_nothing_and_is_audited(ring: KeyRing, tmp_path: Path) -> None:
    pseudo = sensor(ring).address("10.20.3.7")
    stranger = KeyRing([Key.generate(T0)], None, "other")
    audit = AuditLog(tmp_path / "audit.jsonl")
    result = reveal(pseudo, stranger, audit, "curious", networks=NETS)
    assert result.outcome == "not-found" and not result.matches
    assert audit.entries()[0]["outcome"] == "not-found"


def test_old_pseudonyms_are_revealed_after_rotation(ring: KeyRing, tmp_path: Path) -> None:
    old = sensor(ring).address("10.20.3.7")
    ring.add(T0 + 40 * 86400)
    new = sensor(ring, now=T0 + 41 * 86400).address("10.20.3.7")
    assert old != new
    audit = AuditLog(tmp_path / "audit.jsonl")
    for pseudo, key in ((old, ring.keys[0]), (new, ring.keys[1])):
        result = reveal(pseudo, ring, audit, "rotation", networks=NETS)
        assert [(m.value, m.key_id) for m in result.matches] == [("10.20.3.7", key.id)]


def test_outside_every_network_needs_within(ring: KeyRing, tmp_path: Path) -> None:
    pseudo = sensor(ring).address("203.0.113.50")
    audit = AuditLog(tmp_path / "audit.jsonl")
    assert reveal(pseudo, ring, audit, "x", networks=NETS).outcome == "not-found"
    found = reveal(pseudo, ring, audit, "x", networks=NETS, within=["203.0.113.0/24"])
    assert [m.value for m in found.matches] == ["203.0.113.50"]
    with pytest.raises(SentinelError, match="smaller network"):
        reveal(pseudo, ring, audit, "x", within=["0.0.0.0/0"])


def test_the_table_reveals_every_kind_and_holds_nothing_in_clear(
    ring: KeyRing, tmp_path: Path
) -> None:
    table = RevealTable(tmp_path / "reveal.db")
    p = sensor(ring, table)
    pseudos = {
        "2001:db8:10::77": p.address("2001:db8:10::77"),
        "203.0.113.50": p.address("203.0.113.50"),
        "SN-PRIVATE-4711": p.identifier("SN-PRIVATE-4711"),
        "00:80:f4:01:00:14": p.mac("00:80:f4:01:00:14"),
    }
    p.flush()
    raw = (tmp_path / "reveal.db").read_bytes()
    assert not any(clear.encode() in raw for clear in pseudos)
    assert (tmp_path / "reveal.db").stat().st_mode & 0o777 == 0o600
    audit = AuditLog(tmp_path / "audit.jsonl")
    for clear, pseudo in pseudos.items():
        result = reveal(pseudo, ring, audit, "table", networks=NETS, table=table)
        assert [(m.value, m.method) for m in result.matches] == [(clear, "table")]
    # A row moved onto another pseudonym does not open.
    table._db.execute(
        "UPDATE pseudonyms SET pseudonym = ? WHERE pseudonym = ?",
        (pseudos["203.0.113.50"], pseudos["SN-PRIVATE-4711"]),
    )
    with pytest.raises(SentinelError, match="tampered"):
        reveal(pseudos["203.0.113.50"], ring, audit, "x", table=table)
    # Without the key that sealed them, rows say so.
    result = reveal(pseudos["SN-PRIVATE-4711"], KeyRing([Key.generate()]), audit, "x", table=table)
    assert result.outcome == "not-found"


def test_no_reveal_without_an_audit_entry(ring: KeyRing, tmp_path: Path) -> None:
    pseudo = sensor(ring).address("10.20.3.7")
    (tmp_path / "blocker").write_text("a file where the log's directory should be")
    audit = AuditLog(tmp_path / "blocker" / "audit.jsonl")
    with pytest.raises(SentinelError, match="audit log"):
        reveal(pseudo, ring, audit, "x", networks=NETS)


def test_the_chain_shows_edits_and_survives_retention(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    for i in range(6):
        audit.append("reveal", now=T0 + i * 86400, pseudonym=f"241.0.0.{i}", reason="r")
    assert audit.verify() == []
    lines = audit.path.read_text().splitlines()
    doctored = json.loads(lines[2])
    doctored["reason"] = "something else"
    audit.path.write_text("\n".join([*lines[:2], json.dumps(doctored), *lines[3:]]) + "\n")
    assert audit.verify() == ["line 4: chain broken (line 3 was changed or removed)"]
    audit.path.write_text("\n".join(lines) + "\n")
    assert audit.expire(T0 + 2.5 * 86400, dry_run=True) == 3
    assert len(audit.entries()) == 6
    assert audit.expire(T0 + 2.5 * 86400, now=T0 + 10 * 86400) == 3
    entries = audit.entries()
    assert [e.get("pseudonym") for e in entries[:3]] == ["241.0.0.3", "241.0.0.4", "241.0.0.5"]
    assert entries[-1]["event"] == "retention" and entries[-1]["removed"] == 3
    assert audit.verify() == []
    audit.append("reveal", pseudonym="241.0.0.9", reason="after")
    assert audit.verify() == []
    audit.path.write_text("\n".join(audit.path.read_text().splitlines()[1:]) + "\n")
    assert audit.verify()  # cutting lines off the start is seen


def test_reveal_and_audit_commands(ring: KeyRing, tmp_path: Path, state_dir: Path) -> None:
    pseudo = sensor(ring).address("10.20.3.7")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"sites": [{"name": "s", "networks": NETS}]}))
    env = {**os.environ, "SENTINEL_STATE": str(state_dir)}
    base = [sys.executable, "-c", "from sentinel.cli import main; main()", "privacy"]

    def cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, env=env)

    found = cmd("reveal", pseudo, "--reason", "ticket 9", "--key", str(ring.directory),
                "--config", str(config))  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.split("\t")[:2] == [pseudo, "10.20.3.7"]
    missing = cmd("reveal", pseudo, "--reason", "no config", "--key", str(ring.directory))
    assert missing.returncode == 1 and "--config" in missing.stderr
    assert cmd("reveal", pseudo, "--key", str(ring.directory)).returncode == 2  # no reason
    verify = cmd("audit", "--verify")
    assert verify.returncode == 0 and "2 entries, chain intact" in verify.stdout
    log = state_dir / "privacy-audit.jsonl"
    log.write_text(log.read_text().replace("ticket 9", "ticket 8"))
    assert cmd("audit", "--verify").returncode == 1


def test_an_ipv6_pseudonym_is_found_by_search_within_a_small_network(
    ring: KeyRing, tmp_path: Path
) -> None:
    p = Pseudonymizer(ring.active(T0 + 1), networks=NETS, settings=Pseudonymization())
    pseudo = p.address("2001:db8:10::1:77")
    audit = AuditLog(tmp_path / "audit.jsonl")
    result = reveal(pseudo, ring, audit, "v6", networks=NETS, within=["2001:db8:10::1:0/112"])
    assert [m.value for m in result.matches] == ["2001:db8:10::1:77"]
