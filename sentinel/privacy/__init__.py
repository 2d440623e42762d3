"""Sentinel privacy (see docs)."""
