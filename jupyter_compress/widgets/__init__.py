"""The interactive tuning panel (ipywidgets). Imported only on demand: ``jupyter_compress.tune``."""

from .tune import TunePanel, tune

__all__ = ["TunePanel", "tune"]
