"""A live training curve: ``curve = LiveCurve(); display(curve); distill(..., on_epoch=curve.update)``.

The figure sits in a widget (jupyter_bokeh's ``BokehModel``), so each epoch only changes its data
source; the numbers come from :func:`curve_data`, a plain function tested without bokeh.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LiveCurve", "curve_data"]


def curve_data(history: list[dict[str, Any]]) -> dict[str, list]:
    """Columns ``epoch`` plus one per numeric metric of ``history`` (missing values as NaN)."""
    keys: list[str] = []
    for entry in history:
        for key, value in entry.items():
            if key not in ("epoch", "seconds") and isinstance(value, (int, float)) and key not in keys:
                keys.append(key)
    cols: dict[str, list] = {"epoch": [entry.get("epoch", i) for i, entry in enumerate(history)]}
    for key in keys:
        cols[key] = [float(entry[key]) if isinstance(entry.get(key), (int, float)) else float("nan")
                     for entry in history]
    return cols


class LiveCurve:
    """Loss and metrics per epoch, redrawn in place as training runs (one line per metric)."""

    COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2")

    def __init__(self, title: str = "training", keys: tuple[str, ...] | None = None):
        from bokeh.models import ColumnDataSource
        from bokeh.plotting import figure

        self.keys = keys
        self.source = ColumnDataSource({"epoch": []})
        self.figure = figure(title=title, x_axis_label="epoch", height=260, width=560, toolbar_location=None)
        self._lines: set[str] = set()
        self.history: list[dict[str, Any]] = []

    def update(self, history: list[dict[str, Any]]) -> None:
        """Use as ``on_epoch``: redraw from the whole history (idempotent)."""
        self.history = list(history)
        cols = curve_data(self.history)
        if self.keys is not None:
            cols = {k: v for k, v in cols.items() if k == "epoch" or k in self.keys}
        for key in cols:
            if key != "epoch" and key not in self._lines:
                self.source.data[key] = [float("nan")] * len(self.source.data["epoch"])
                color = self.COLORS[len(self._lines) % len(self.COLORS)]
                self.figure.line("epoch", key, source=self.source, legend_label=key, color=color, line_width=2)
                self.figure.scatter("epoch", key, source=self.source, color=color, size=5)
                self._lines.add(key)
        self.source.data = cols

    def widget(self):
        from jupyter_bokeh import BokehModel

        if not hasattr(self, "_widget"):
            self._widget = BokehModel(self.figure)
        return self._widget

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget())
