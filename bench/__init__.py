"""Benchmarks of tracewatch: `python -m bench` (see bench/README.md).

Not a test package: nothing here is named `test_*`, and pytest only collects `tests/`.
"""
