"""Choosing a strategy: sensitivity, automatic search to a budget, the advisor, sweeps on executors.

The verbs are ``jupyter_compress.sensitivity / auto / advise``; this package only imports its modules.
"""

from . import advise, auto, executor, sensitivity

__all__ = ["advise", "auto", "executor", "sensitivity"]
