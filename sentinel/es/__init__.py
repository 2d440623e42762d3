"""Elasticsearch and Kibana: findings, Modbus messages, flows and assets for SOC analysts.

- ``documents``: records to ECS documents, index names and deterministic ids;
- ``templates/``: versioned index templates and ILM policies, installed by ``setup``;
- ``sink``: the pipeline's sink (bulk indexing, retries, the spool in ``spool``);
- ``dev``: a local node for trying Sentinel out and for the tests;
- ``kibana``: saved objects (``kibana/sentinel-ot.ndjson``) and their import;
- ``config`` and ``client``: connection settings, the client, errors a person can act on;
- ``cli``: ``sentinel es ...``, ``sentinel kibana ...`` and ``sentinel analyze --es URL``.

See docs/elasticsearch.md and docs/kibana.md.
"""
