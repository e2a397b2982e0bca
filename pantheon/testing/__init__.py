"""Helpers for the live-server tests and the benchmarks: real processes on 127.0.0.1 only."""
