"""Sentinel ml (see docs)."""
