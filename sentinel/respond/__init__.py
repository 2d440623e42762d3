"""Sentinel respond: playbooks that answer findings (docs/playbooks.md).

``model`` (playbooks, loading with located errors, trigger matching), ``runner`` (the engine,
a ``Sink``), ``actions`` (the interface) with ``notify``, ``records`` and ``network`` (the
built-in actions), ``template`` (the Jinja2 sandbox), ``approvals`` (SQLite), ``audit``,
``ring`` (the packet ring for snapshots), ``metrics`` (Prometheus endpoint), ``settings``
(config sections), ``factory`` (wiring from a config) and ``cli``.
"""
