"""Sentinel es (see docs)."""
