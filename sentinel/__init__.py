"""Sentinel: cybersecurity monitoring for the OT networks of critical urban infrastructure."""

__version__ = "0.1.0"

from sentinel import _native

_native.choose()  # before any compiled module is imported: compiled or source (docs/native.md)
