"""Sentinel rules (see docs)."""
