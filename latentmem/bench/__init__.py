"""Benchmarks: re-runnable measurements behind every figure in BENCHMARKS.md."""
