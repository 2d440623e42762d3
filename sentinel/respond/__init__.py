"""Sentinel respond (see docs)."""
