"""Figures of the strategy layer's results: the Pareto plot of a comparison and the heatmap of a
sensitivity sweep.

They read the results' plain data (``table.points()``, ``result.heatmap(method)``), so this module needs
no import of the strategy layer, and the strategy layer none of plotting.
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColorBar, LinearColorMapper
from bokeh.plotting import figure

from .figures import pareto_figure
from .resources import figure_html

__all__ = ["comparison_figure", "attach_comparison_plot", "sensitivity_heatmap"]


def comparison_figure(table: Any):
    """Pareto plot of a :class:`~jupyter_compress.strategy.compare.ComparisonTable`: the fraction of bytes
    in memory kept against the quality, one point per measured row (hover: its plan)."""
    return pareto_figure(table.points(), "size_kept", "quality", label="label",
                         x_label="bytes in memory kept (fraction)", y_label=table.quality_key or "quality")


def attach_comparison_plot(table: Any) -> Any:
    """Attach the Pareto plot to ``table`` so its HTML view shows it below the rows (when two or more
    rows were measured); returns the table. Attached once: a table that has its plot keeps it."""
    if len(table.points()) > 1 and not getattr(table, "_pareto_attached", False):
        table.attach_html(figure_html(comparison_figure(table)))
        table._pareto_attached = True
    return table


def sensitivity_heatmap(result: Any, method: str | None = None):
    """Heatmap of a :class:`~jupyter_compress.strategy.sensitivity.Sensitivity` for one method (default:
    the first measured): layers x ratio, colour = drop in the metric."""
    method = method or (result.methods[0] if result.methods else None)
    cols = result.heatmap(method)
    layers, settings = list(dict.fromkeys(cols["layer"])), list(dict.fromkeys(cols["setting"]))
    mapper = LinearColorMapper(palette="Viridis256", low=min(cols["drop"], default=0),
                               high=max(cols["drop"], default=1))
    fig = figure(title=f"{method}: drop in {result.metric}", x_range=settings, y_range=layers[::-1],
                 x_axis_label="ratio", tooltips=[("layer", "@layer"), ("ratio", "@setting"), ("drop", "@drop")],
                 height=max(200, 24 * len(layers) + 80), width=480)
    fig.rect(x="setting", y="layer", width=1, height=1, source=cols,
             fill_color={"field": "drop", "transform": mapper}, line_color=None)
    fig.add_layout(ColorBar(color_mapper=mapper), "right")
    return fig
