"""Elasticsearch test support (fixtures registered by tests/conftest.py for the whole run).

A real Elasticsearch node for the tests of ``sentinel.es``, started once per run.

The node is the pinned integ-test distribution that ``sentinel es dev start`` uses (downloaded
from Maven Central into ``$SENTINEL_CACHE`` or ``~/.cache/sentinel`` on first use), with
security and TLS on; it runs as an unprivileged user when the tests run as root. Nothing is
skipped when it cannot start: the tests that need it fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from sentinel.es.client import connect
from sentinel.es.config import EsSettings, resolve
from sentinel.es.dev import DevNode, NodeInfo

DATA = Path(__file__).parent / "es" / "data"


@dataclass
class Node:
    dev: DevNode
    info: NodeInfo
    base: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a ``sentinel`` subprocess needs to reach the node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_ES_")}
        env.update(
            SENTINEL_ES_URL=self.info.url,
            SENTINEL_ES_USERNAME=self.info.username or "",
            SENTINEL_ES_PASSWORD=self.info.password or "",
            SENTINEL_ES_CA_CERTS=self.info.ca_certs or "",
        )
        env.update(extra)
        return env

    def settings(self, **sink: object) -> EsSettings:
        from sentinel.es.config import ElasticsearchSink

        return resolve(ElasticsearchSink(**sink), None, self.env())  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def es_node() -> Iterator[Node]:
    base = Path(tempfile.mkdtemp(prefix="sentinel-es-test-"))
    base.chmod(0o755)  # the node's unprivileged user must enter it
    dev = DevNode(base / "node", data_dir=base / "data")
    try:
        info = dev.start()
        yield Node(dev, info, base)
    finally:
        dev.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def es(es_node: Node) -> Elasticsearch:
    return connect(es_node.settings())


@pytest.fixture
def clean_es(es: Elasticsearch) -> Elasticsearch:
    """No sentinel-* index left from another test."""
    es.options(ignore_status=404).indices.delete(index="sentinel-*", expand_wildcards="all")
    return es


def index_capture(node: Node, capture: str, out: Path, spool: Path) -> Path:
    """Run the pipeline on ``DATA/<capture>.pcap`` with the Elasticsearch sink, in-process."""
    from sentinel.config import Config
    from sentinel.es.sink import ElasticsearchSink
    from sentinel.pipeline import Pipeline

    sink = ElasticsearchSink(node.settings(), spool_dir=spool)
    Pipeline(Config(), out, sinks=[sink]).run(DATA / f"{capture}.pcap")
    assert sink.pending() == 0 and not sink.stats["rejected"], sink.stats
    return out


def run_sentinel(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The installed ``sentinel`` command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-c", "from sentinel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
