"""Sinks: where records and findings go (JSONL by default; Elasticsearch and EVE later)."""
