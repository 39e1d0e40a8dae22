"""Choosing a strategy: sensitivity, automatic search to a budget, the advisor, sweeps on executors."""

from .executor import DaskExecutor, InProcess, ProcessPool, run_sweep
from .sensitivity import Sensitivity, sensitivity

__all__ = ["sensitivity", "Sensitivity", "run_sweep", "InProcess", "ProcessPool", "DaskExecutor"]
