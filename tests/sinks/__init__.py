"""Tests of sentinel.sinks."""
