"""Sentinel schedule (see docs)."""
