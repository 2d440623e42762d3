"""Tests of sentinel.schedule."""
