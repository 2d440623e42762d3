"""Packet sources: capture files (the fast path) and, later, live interfaces."""
