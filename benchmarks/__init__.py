"""Benchmarks: bertforge beside transformers, one module per topic (python -m benchmarks.<topic>)."""
