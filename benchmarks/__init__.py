"""Side-by-side benchmarks: every figure is a ratio against a baseline measured in the same run.

Run ``python -m benchmarks [--quick]``. Each topic module exposes ``rows(quick) -> list[dict]``
with the keys of :data:`benchmarks.timing.COLUMNS`.
"""
