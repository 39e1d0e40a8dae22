"""Strategies over methods: compare (later: sensitivity, auto, sweeps). No Jupyter imports."""

from .compare import ComparisonTable, compare

__all__ = ["ComparisonTable", "compare"]
