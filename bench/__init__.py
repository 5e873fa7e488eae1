"""Benchmarks with their baselines; run by hand (``python -m bench.<name>``), never in tests."""
