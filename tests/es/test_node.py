"""The local node (``sentinel es dev``) and ``sentinel es setup`` against it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from elasticsearch import Elasticsearch

from sentinel.es.dev import ES_VERSION, PINNED_SHA512, cache_dir
from sentinel.es.setup import load_bundle
from tests.es_support import Node, run_sentinel


def test_dev_start_prints_how_to_reach_the_running_node(es_node: Node) -> None:
    proc = run_sentinel("es", "dev", "start", "--dir", str(es_node.dev.dir), env=es_node.env())
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)  # one JSON object, nothing else on stdout
    assert set(info) == {"url", "username", "password", "ca_certs"}
    assert info == {
        "url": es_node.info.url,
        "username": "elastic",
        "password": es_node.info.password,
        "ca_certs": es_node.info.ca_certs,
    }
    assert info["url"].startswith("https://127.0.0.1:")  # TLS, loopback
    assert Path(info["ca_certs"]).is_file()


def test_node_is_the_pinned_version_with_security(es_node: Node, es: Elasticsearch) -> None:
    nodes = es.nodes.info(metric="process,jvm")["nodes"]
    (node,) = nodes.values()
    assert node["version"] == ES_VERSION
    assert node["jvm"]["mem"]["heap_max_in_bytes"] <= 512 * 1024 * 1024
    pid = node["process"]["id"]
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = int(next(line for line in status if line.startswith("Uid:")).split()[1])
    assert uid != 0  # never root, even when the tests run as root
    if os.geteuid() == 0:
        assert uid != os.geteuid()
    assert es.security.authenticate()["username"] == "elastic"
    zips = list(
        (cache_dir() / "elasticsearch" / "downloads").glob(f"elasticsearch-{ES_VERSION}.zip")
    )
    assert zips and ES_VERSION in PINNED_SHA512  # cached, checked against the pinned sum


def test_setup_installs_templates_and_says_ilm_is_missing(es_node: Node, es: Elasticsearch) -> None:
    proc = run_sentinel("es", "setup", "--force", env=es_node.env())
    assert proc.returncode == 0, proc.stderr
    bundle = load_bundle()
    for name in bundle.index_templates:
        assert f"index template {name}: installed" in proc.stdout or (
            f"index template {name}: updated" in proc.stdout
        )
        got = es.indices.get_index_template(name=name)["index_templates"][0]["index_template"]
        assert got["version"] == bundle.index_templates[name]["version"]
    # this distribution has no ILM: no policy, and a clear note
    assert "no index lifecycle management (ILM)" in proc.stdout
    proc = run_sentinel("es", "setup", env=es_node.env())
    assert "index template sentinel-findings: up to date" in proc.stdout
    sim = es.indices.simulate_index_template(name="sentinel-findings-2024.01.01")
    props = sim["template"]["mappings"]["properties"]
    assert props["source"]["properties"]["ip"]["type"] == "ip"
    assert props["@timestamp"]["type"] == "date"
    assert props["rule"]["properties"]["id"]["type"] == "keyword"
    assert props["sentinel"]["properties"]["evidence"]["type"] == "flattened"
    assert sim["template"]["mappings"]["dynamic"] == "false"
