"""Sentinel: cybersecurity monitoring for the OT networks of critical urban infrastructure."""

__version__ = "0.1.0"
