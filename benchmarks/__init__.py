"""Benchmarks for DreamBooth Studio: run each as `python -m benchmarks.<name>` from the repo root.

They are measurements, not tests: they print markdown tables and are never collected by pytest.
"""
