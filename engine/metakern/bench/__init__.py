"""Benchmark harness behind ``metakern bench`` (being written)."""
