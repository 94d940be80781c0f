"""Benchmark scripts: each prints its figures beside the floor measured in the same run.

Run them as modules, e.g. ``python -m bench.data_path``. They are not tests and assert nothing.
"""
