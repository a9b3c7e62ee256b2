"""Benchmarks: ``python -m tools.bench <name> [options]`` prints one JSON document."""
