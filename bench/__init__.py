"""The benchmark of the rendered service (see docs/performance.md)."""
