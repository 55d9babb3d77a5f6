"""Throughput benchmark of the feature pipeline against DuckDB and a plain Python loop.

See `benchmarks/README.md`; run with ``python -m benchmarks.throughput``.
"""
