"""Unreachable cluster, wrong credentials, other ways to authenticate: clear words, spool intact."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from elasticsearch import Elasticsearch, helpers

from sentinel.es.dev import distribution, find_java
from sentinel.es.spool import inspect
from tests.es_support import DATA, Node, run_sentinel


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"https://127.0.0.1:{port}"  # nothing listens there any more


def _depth(spool: Path) -> tuple[int, int]:
    info = inspect(spool)
    return info["findings"], info["bulk"]


def test_outage_spools_then_flush_sends_exactly_once(
    es_node: Node, clean_es: Elasticsearch, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    out = tmp_path / "out"
    dead = _dead_url()
    proc = run_sentinel(
        "analyze",
        "-q",
        "--out",
        str(out),
        "--es",
        dead,
        "--es-spool",
        str(spool),
        str(DATA / "modbus-and-non-modbus-p502.pcap"),
        env=es_node.env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"cannot reach Elasticsearch at {dead}: connection refused" in proc.stderr
    assert "sentinel es flush" in proc.stderr
    findings = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    others = sum(
        len((out / f).read_text().splitlines())
        for f in ("modbus.jsonl", "flows.jsonl", "assets.jsonl")
    )
    assert _depth(spool) == (len(findings), others)

    status = run_sentinel("es", "status", "--es", dead, "--spool", str(spool), env=es_node.env())
    assert status.returncode == 1
    assert "cannot reach Elasticsearch" in status.stdout
    assert f"{len(findings)} findings" in status.stdout

    # wrong credentials: a clear message, the password nowhere, the spool as it was
    wrong = es_node.env(SENTINEL_ES_PASSWORD="wrong-horse-battery")
    proc = run_sentinel("es", "flush", "--spool", str(spool), "--timeout", "5", env=wrong)
    assert proc.returncode == 1
    text = proc.stdout + proc.stderr
    assert "refused the credentials (user 'elastic', HTTP 401)" in text
    assert "wrong-horse-battery" not in text and es_node.info.password not in text
    assert _depth(spool) == (len(findings), others)
    proc = run_sentinel("es", "status", "--spool", str(spool), env=wrong)
    assert proc.returncode == 1 and "HTTP 401" in proc.stdout
    assert "wrong-horse-battery" not in proc.stdout + proc.stderr

    # an unreachable URL for flush: the same
    proc = run_sentinel(
        "es", "flush", "--es", dead, "--spool", str(spool), "--timeout", "5", env=es_node.env()
    )
    assert proc.returncode == 1 and "connection refused" in proc.stdout + proc.stderr
    assert _depth(spool) == (len(findings), others)

    # the right credentials: everything arrives, once
    proc = run_sentinel("es", "flush", "--spool", str(spool), env=es_node.env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _depth(spool) == (0, 0)
    clean_es.indices.refresh(index="sentinel-*")
    got = {h["_id"]: h["_source"] for h in helpers.scan(clean_es, index="sentinel-findings-*")}
    assert got == {d["event"]["id"]: d for d in findings}
    proc = run_sentinel("es", "flush", "--spool", str(spool), env=es_node.env())
    assert proc.returncode == 0 and "sent 0 of 0" in proc.stdout


def test_url_credentials_are_taken_out_and_never_shown(es_node: Node, tmp_path: Path) -> None:
    url = es_node.info.url.replace("https://", f"https://elastic:{es_node.info.password}@")
    env = es_node.env()
    del env["SENTINEL_ES_PASSWORD"], env["SENTINEL_ES_USERNAME"]
    proc = run_sentinel("es", "status", "--es", url, "--spool", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "green" in proc.stdout or "yellow" in proc.stdout
    assert es_node.info.password not in proc.stdout + proc.stderr
    bad = url.replace(es_node.info.password, "not-the-password")
    proc = run_sentinel("es", "status", "--es", bad, "--spool", str(tmp_path), env=env)
    assert proc.returncode == 1 and "HTTP 401" in proc.stdout
    assert "not-the-password" not in proc.stdout + proc.stderr


def _touch(path: Path) -> None:
    """A modification time later than the file's, by more than the millisecond the node's
    file watcher compares."""
    later = max(time.time_ns(), path.stat().st_mtime_ns + 10_000_000)
    os.utime(path, ns=(later, later))


def test_bearer_token_and_api_key(es_node: Node, tmp_path: Path) -> None:
    """A service-account token (a bearer token) authenticates for real; this distribution
    cannot create API keys (no analysis-common for the .security index), so an API key can
    only be shown to be sent and refused clearly."""
    home = distribution(es_node.dev.version)
    env = es_node.dev._tool_env(find_java())
    proc = subprocess.run(
        [
            str(home / "bin" / "elasticsearch-service-tokens"),
            "create",
            "elastic/fleet-server",
            "sentinel-test",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().split(" = ")[-1]
    tokens = es_node.dev.dir / "config" / "service_tokens"
    stat = es_node.dev.dir.stat()
    os.chown(tokens, stat.st_uid, stat.st_gid)
    env = es_node.env()
    del env["SENTINEL_ES_PASSWORD"], env["SENTINEL_ES_USERNAME"]
    env["SENTINEL_ES_BEARER_TOKEN"] = token
    # The node re-reads service_tokens when its modification time changes (polled every few
    # seconds). The tool, run as root, wrote a file the node's user cannot read until the
    # chown above, which leaves the time as it was: a poll in between (the tool's JVM can
    # take seconds to exit on a loaded machine) failed to read it and never retried, and a
    # full suite once waited 180 s for nothing. So the time is moved on after the chown,
    # and again while the token is refused.
    deadline = time.monotonic() + 120
    while True:
        _touch(tokens)
        proc = run_sentinel("es", "status", "--spool", str(tmp_path), env=env)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert token not in proc.stdout + proc.stderr

    env = es_node.env(SENTINEL_ES_API_KEY="aWQ6bm90LWEta2V5")
    del env["SENTINEL_ES_PASSWORD"], env["SENTINEL_ES_USERNAME"]
    proc = run_sentinel("es", "status", "--spool", str(tmp_path), env=env)
    assert proc.returncode == 1
    assert "refused the credentials (API key, HTTP 401)" in proc.stdout
    assert "aWQ6bm90LWEta2V5" not in proc.stdout + proc.stderr


def test_least_privileged_writer_role_is_enough(
    es_node: Node, clean_es: Elasticsearch, tmp_path: Path
) -> None:
    """The role docs/elasticsearch.md documents for a sensor indexes everything."""
    from sentinel.es.setup import setup
    from tests.es_support import index_capture

    setup(clean_es)  # by an administrator, beforehand
    config = es_node.dev.dir / "config"
    roles = config / "roles.yml"
    roles.write_text(
        "sentinel_writer:\n"
        "  cluster: [monitor]\n"
        "  indices:\n"
        "    - names: ['sentinel-*']\n"
        "      privileges: [create_index, write]\n"
    )
    home = distribution(es_node.dev.version)
    env = es_node.dev._tool_env(find_java())
    proc = subprocess.run(
        [str(home / "bin" / "elasticsearch-users"), "useradd", "sensor1", "-p",
         "writer-pass-123", "-r", "sentinel_writer"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    owner = es_node.dev.dir.stat()
    files = [config / name for name in ("roles.yml", "users", "users_roles")]
    for path in files:
        os.chown(path, owner.st_uid, owner.st_gid)
    writer = Node(es_node.dev, es_node.info, es_node.base)
    env_writer = es_node.env(SENTINEL_ES_USERNAME="sensor1", SENTINEL_ES_PASSWORD="writer-pass-123")
    deadline = time.monotonic() + 60  # the node re-reads its users and roles every few seconds
    while True:
        for path in files:  # root wrote them: see test_bearer_token_and_api_key
            _touch(path)
        if not run_sentinel("es", "status", "--spool", str(tmp_path), env=env_writer).returncode:
            break
        assert time.monotonic() < deadline, "the file realm user never became valid"
        time.sleep(2)
    writer.env = lambda **extra: {**env_writer, **extra}  # type: ignore[method-assign]
    out = index_capture(writer, "fuzz-72", tmp_path / "out", tmp_path / "spool")
    clean_es.indices.refresh(index="sentinel-*")
    n = len((out / "modbus.jsonl").read_text().splitlines())
    assert clean_es.count(index="sentinel-modbus-*")["count"] == n
