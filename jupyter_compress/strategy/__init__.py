"""Choosing a strategy: compare, sensitivity, automatic search to a budget, the advisor, sweeps on
executors. No Jupyter imports. ``compare`` is imported here; ``sensitivity``, ``auto``, ``advise`` and
``executor`` are submodules imported on first use (``jupyter_compress.auto`` etc.).
"""

from .compare import ComparisonTable, compare

__all__ = ["ComparisonTable", "compare"]
