"""Progress bars that leave nothing behind: ``tqdm.auto`` bars, closed and cleared when done.

In a terminal a closed bar erases its line (``leave=False``). In a notebook tqdm's bar is a widget: closing
it hides the live view, but the output that displayed it stays in the notebook, so a reopened notebook
shows "Error displaying widget: model not found", and a bar closed early (a stopped or converged run)
stays red at "distill: 30%". Here the bar is displayed under a display id and that output is emptied
when the bar closes, however it ends. tqdm is imported only when a bar is made.
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False) -> Any:
    """A ``tqdm.auto`` bar (``update``, ``set_postfix``, ``close``) that is removed once closed."""
    from tqdm.auto import tqdm

    kwargs = dict(total=total, desc=desc, unit=unit, leave=False, disable=disable)
    try:
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:  # pragma: no cover - tqdm.notebook ships with tqdm
        notebook_tqdm = None
    if disable or notebook_tqdm is None or not issubclass(tqdm, notebook_tqdm):
        return tqdm(**kwargs)
    return _clearing_class(notebook_tqdm)(**kwargs)


_CLASSES: dict[type, type] = {}


def _clearing_class(base: type) -> type:
    if base not in _CLASSES:
        class ClearingBar(base):  # type: ignore[misc, valid-type]
            """tqdm's notebook bar, displayed under a display id whose output is emptied on close."""

            def __init__(self, *args: Any, **kwargs: Any):
                self._handle = None
                super().__init__(*args, display=False, **kwargs)
                container = getattr(self, "container", None)
                if container is not None:
                    from IPython.display import display

                    self._handle = display(container, display_id=True)

            def close(self) -> None:
                super().close()
                handle, self._handle = getattr(self, "_handle", None), None
                if handle is not None:
                    handle.update({"text/plain": ""}, raw=True)  # nothing stale in the saved notebook
                    try:
                        self.container.close()  # also when tqdm left it up (a run that ended early)
                    except Exception:  # noqa: BLE001 - a closed comm or a gone kernel: nothing to tidy
                        pass

        _CLASSES[base] = ClearingBar
    return _CLASSES[base]
