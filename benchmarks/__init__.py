"""Benchmarks that print a markdown table: ``python -m benchmarks.ranking`` and siblings."""
