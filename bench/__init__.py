"""Benchmarks (not tests): run one as ``python -m bench.<name> --help``. See docs/benchmarks.md."""
