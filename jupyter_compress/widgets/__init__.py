"""The interactive tuning panel (ipywidgets). Imported only on demand: ``jupyter_compress.tune``.

``widgets.tune_state`` (the panel's state model) imports no ipywidgets, so the package loads the view lazily.
"""

from typing import Any

__all__ = ["TunePanel", "tune"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        # the module and its function share the name 'tune': importing the module binds the package's 'tune'
        # to the module, so both public names are bound here again, to the function and the class
        view = importlib.import_module(f"{__name__}.tune")
        globals().update({public: getattr(view, public) for public in __all__})
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
