"""``sentinel es ...``, ``sentinel kibana ...`` and ``sentinel analyze --es URL``.

Commands:

- ``sentinel es dev start [--data DIR]`` / ``stop``: a local node (see ``sentinel.es.dev``);
  ``start`` prints one JSON object (url, username, password, ca_certs) once it answers.
- ``sentinel es setup``: index templates and lifecycle policies (``sentinel.es.setup``).
- ``sentinel es status``: cluster health, spool depth, counters and the last error.
- ``sentinel es flush``: send what is spooled now; exit 1 if anything is left.
- ``sentinel kibana import --url URL``: the saved objects (``sentinel.es.kibana``).
- ``sentinel kibana export FILE``: the same NDJSON, for the Kibana UI's import.

Connection settings for all of them: ``--es URL``, the environment (``SENTINEL_ES_*``) and the
config file's ``sinks.elasticsearch`` section (see ``sentinel.es.config``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import click

from sentinel.cli import ANALYZE_EXTENSIONS, AnalyzeExtension, cli
from sentinel.config import Config, load_config
from sentinel.errors import SentinelError
from sentinel.es.config import EsSettings, resolve, sink_section

EXIT_LEFT = 1
# The client logs a traceback at WARNING for every failed request; the sink says it once.
logging.getLogger("elastic_transport.node_pool").setLevel(
    logging.ERROR
)  # flush: documents are left in the spool; status: the cluster is unreachable


def _settings(config_path: str | None, url: str | None) -> tuple[EsSettings, Config]:
    config = load_config(config_path)
    return resolve(sink_section(config), url), config


def _spool_path(settings: EsSettings, override: str | None) -> str:
    from sentinel.es.spool import default_spool_dir

    return str(override or settings.sink.spool.path or default_spool_dir())


es_option = click.option("--es", "url", metavar="URL", help="Elasticsearch URL.")
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config."
)
spool_option = click.option(
    "--spool", "spool", type=click.Path(file_okay=False), help="Spool directory."
)


@click.group("es")
def es_group() -> None:
    """Elasticsearch: a local node, index setup, the spool."""


@es_group.group("dev")
def dev_group() -> None:
    """A local single-node Elasticsearch for trying Sentinel out."""


@dev_group.command("start")
@click.option("--data", "data", type=click.Path(file_okay=False), help="Keep the data here.")
@click.option("--dir", "node_dir", type=click.Path(file_okay=False), help="Node directory.")
@click.option("--version", "version", default=None, help="Elasticsearch version.")
@click.option("--java-home", "java_home", default=None, help="JDK to run it with.")
def dev_start(
    data: str | None, node_dir: str | None, version: str | None, java_home: str | None
) -> None:
    """Download (once), start and wait for a local node; print how to reach it as JSON."""
    from sentinel.es.dev import ES_VERSION, DevNode

    node = DevNode(node_dir, data, version or ES_VERSION, java_home)
    info = node.start()
    click.echo(info.to_json())


@dev_group.command("stop")
@click.option("--dir", "node_dir", type=click.Path(file_okay=False), help="Node directory.")
def dev_stop(node_dir: str | None) -> None:
    """Stop the local node (its data goes unless it was started with --data)."""
    from sentinel.es.dev import DevNode

    node = DevNode(node_dir)
    if node.stop():
        click.echo(f"stopped the node in {node.dir}")
    else:
        click.echo(f"no node running in {node.dir}")


@es_group.command("setup")
@es_option
@config_option
@click.option("--findings-retention", default="365d", show_default=True, help="ILM delete age.")
@click.option("--events-retention", default="30d", show_default=True, help="Modbus/flows age.")
@click.option("--force", is_flag=True, help="Reinstall even if the installed ones are current.")
def es_setup(
    url: str | None,
    config_path: str | None,
    findings_retention: str,
    events_retention: str,
    force: bool,
) -> None:
    """Install index templates (and ILM policies where the cluster has ILM)."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from sentinel.es.client import connect, explain
    from sentinel.es.setup import setup

    settings, _ = _settings(config_path, url)
    client = connect(settings)
    try:
        report = setup(
            client,
            findings_retention=findings_retention,
            events_retention=events_retention,
            force=force,
        )
    except ValueError as exc:
        raise SentinelError(str(exc)) from None
    except (ApiError, TransportError) as exc:
        raise SentinelError(explain(exc, settings)) from None
    for line in report.lines():
        click.echo(line)


@es_group.command("status")
@es_option
@config_option
@spool_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def es_status(url: str | None, config_path: str | None, spool: str | None, as_json: bool) -> None:
    """Cluster health, spool depth and the last error."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from sentinel.es.client import connect, explain
    from sentinel.es.spool import inspect

    settings, _ = _settings(config_path, url)
    out: dict[str, Any] = {"url": settings.url}
    reachable = False
    try:
        health = connect(settings).cluster.health()
        out["cluster"] = {
            "name": health.get("cluster_name"),
            "status": health.get("status"),
            "nodes": health.get("number_of_nodes"),
        }
        reachable = True
    except (ApiError, TransportError) as exc:
        out["cluster"] = {"status": "unreachable", "error": explain(exc, settings)}
    info = inspect(_spool_path(settings, spool))
    out["spool"] = {
        "path": info["path"],
        "findings": info["findings"],
        "bulk": info["bulk"],
        "bytes": info["bytes"],
        "dropped": info["state"].get("dropped", 0),
        "rejected": info["state"].get("rejected", 0),
        "rejected_file": info["rejected_file"],
    }
    out["last_error"] = info["state"].get("last_error")
    at = info["state"].get("last_error_at")
    out["last_error_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at else None
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        c = out["cluster"]
        if reachable:
            click.echo(f"cluster   {settings.url}: {c['status']} ({c['name']}, {c['nodes']} nodes)")
        else:
            click.echo(f"cluster   {c['error']}")
        s = out["spool"]
        click.echo(
            f"spool     {s['path']}: {s['findings']:,} findings, {s['bulk']:,} other documents, "
            f"{s['bytes']:,} bytes"
        )
        click.echo(f"dropped   {s['dropped']:,} Modbus/flow documents (spool limit)")
        rejected = f"{s['rejected']:,} documents"
        if s["rejected_file"]:
            rejected += f" (findings kept in {s['rejected_file']})"
        click.echo(f"refused   {rejected}")
        if out["last_error"]:
            click.echo(f"last error {out['last_error_at']}: {out['last_error']}")
    if not reachable:
        sys.exit(EXIT_LEFT)


@es_group.command("flush")
@es_option
@config_option
@spool_option
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to keep trying.")
def es_flush(url: str | None, config_path: str | None, spool: str | None, timeout: float) -> None:
    """Send everything in the spool now; exit 1 if anything is left."""
    from sentinel.es.sink import ElasticsearchSink

    settings, config = _settings(config_path, url)
    conf = settings.sink.model_copy(update={"close_timeout": timeout})
    settings = EsSettings(**{**settings.__dict__, "sink": conf})
    sink = ElasticsearchSink(settings, config.observer.name, spool_dir=_spool_path(settings, spool))
    before = sink.pending()
    sink.close()  # starts, drains for at most --timeout, closes
    left = sink.pending()
    click.echo(
        f"sent {sink.stats['sent']:,} of {before:,} spooled documents"
        + (f"; {left:,} left" if left else "")
        + (f"; {sink.stats['rejected']:,} refused" if sink.stats["rejected"] else "")
        + (f" ({sink.last_error})" if left and sink.last_error else "")
    )
    if left:
        sys.exit(EXIT_LEFT)


@click.group("kibana")
def kibana_group() -> None:
    """Kibana: data views, saved searches, visualisations and the OT dashboard."""


@kibana_group.command("import")
@click.option("--url", "url", required=True, help="Kibana URL (https://kibana:5601).")
@click.option("--space", default=None, help="Kibana space id (default space if omitted).")
@click.option("--username", default=None, help="Or SENTINEL_KIBANA_USERNAME.")
@click.option("--api-key", "api_key_flag", is_flag=True, help="Use SENTINEL_KIBANA_API_KEY.")
@click.option("--ca-certs", default=None, type=click.Path(dir_okay=False), help="CA file.")
@click.option("--no-overwrite", is_flag=True, help="Keep objects that exist already.")
def kibana_import(
    url: str,
    space: str | None,
    username: str | None,
    api_key_flag: bool,
    ca_certs: str | None,
    no_overwrite: bool,
) -> None:
    """Post the saved objects to Kibana's import API.

    The password comes from SENTINEL_KIBANA_PASSWORD (or SENTINEL_ES_PASSWORD), an API key
    from SENTINEL_KIBANA_API_KEY (or SENTINEL_ES_API_KEY): never from the command line.
    """
    from sentinel.es.kibana import KibanaAuth, import_objects

    env = os.environ
    api_key = env.get("SENTINEL_KIBANA_API_KEY") or env.get("SENTINEL_ES_API_KEY")
    user = username or env.get("SENTINEL_KIBANA_USERNAME") or env.get("SENTINEL_ES_USERNAME")
    password = env.get("SENTINEL_KIBANA_PASSWORD") or env.get("SENTINEL_ES_PASSWORD")
    auth = KibanaAuth(
        username=None if api_key_flag else user,
        password=None if api_key_flag else password,
        api_key=api_key if (api_key_flag or not user) else None,
    )
    ca = ca_certs or env.get("SENTINEL_KIBANA_CA_CERTS") or env.get("SENTINEL_ES_CA_CERTS")
    result = import_objects(url, auth, space=space, ca_certs=ca, overwrite=not no_overwrite)
    click.echo(f"imported {result.success_count} saved objects into Kibana at {result.url}")


@kibana_group.command("export")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
def kibana_export(path: str) -> None:
    """Write the saved objects NDJSON (for Stack Management > Saved objects > Import)."""
    from sentinel.es.kibana import ndjson_bytes

    with open(path, "wb") as f:
        f.write(ndjson_bytes())
    click.echo(f"wrote {path}")


def _apply(params: dict[str, Any], config: Config, out_dir: str) -> tuple[list[Any], list[Any]]:
    """``sentinel analyze --es URL``: add the Elasticsearch sink to the run."""
    url = params.get("es_url")
    section = sink_section(config)
    if not url and (section is None or not section.enabled):
        return [], []
    from sentinel.es.sink import ElasticsearchSink
    from sentinel.es.spool import Spool
    from sentinel.pipeline.engine import SiteLabels

    settings = resolve(section, url)
    site_of = SiteLabels(config).lookup if config.sites else None
    sink = ElasticsearchSink(
        settings, config.observer.name, site_of, spool_dir=params.get("es_spool")
    )
    Spool(sink.spool_dir).close()  # a spool in use by a running sensor: say so before the run
    return [], [sink]


cli.add_command(es_group)
cli.add_command(kibana_group)
ANALYZE_EXTENSIONS.append(
    AnalyzeExtension(
        "elasticsearch",
        [
            click.Option(
                ["--es", "es_url"],
                metavar="URL",
                help="Also index into Elasticsearch (credentials: SENTINEL_ES_* or config).",
            ),
            click.Option(
                ["--es-spool", "es_spool"],
                type=click.Path(file_okay=False),
                help="Spool directory for documents Elasticsearch has not taken yet.",
            ),
        ],
        _apply,
    )
)
