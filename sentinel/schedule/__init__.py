"""Sentinel schedule: the APScheduler service and its jobs (docs/scheduler.md).

``settings`` (config sections), ``service`` (scheduler, SQLite job store), ``jobs`` (registry,
results, job findings), ``modbus`` (inventory and integrity) and ``safety`` (the one place that
enforces read-only, scoped, rate-limited scanning).
"""
