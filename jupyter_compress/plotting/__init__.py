"""Plots of reports and sweeps (bokeh), with their numbers computed by plain functions in ``data``.

    >>> from jupyter_compress import plotting
    >>> plotting.attach_plots(report, model, small)   # the report now shows its figures inline
    >>> plotting.configure("inline")                 # BokehJS in the notebook (default: the extension's)
    >>> plotting.attach_comparison_plot(table)       # a compare() table shows its Pareto plot
    >>> plotting.show(plotting.sensitivity_heatmap(sens, "svd"))

Uses bokeh (a dependency). Importing ``jupyter_compress`` does not import this package.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.report import Report
from . import data
from .live import LiveCurve, curve_data
from .resources import configure, figure_html, load_bokehjs

__all__ = ["LiveCurve", "attach_comparison_plot", "attach_plots", "comparison_figure", "configure", "curve_data",
           "data", "figure_html", "load_bokehjs", "report_figures", "sensitivity_heatmap", "show"]


def report_figures(report: Report, before: nn.Module | None = None, after: nn.Module | None = None):
    """``[(title, bokeh figure), ...]`` for ``report`` (see :func:`.figures.report_figures`)."""
    from .figures import report_figures as _figures

    return _figures(report, before, after)


def attach_plots(report: Report, before: nn.Module | None = None, after: nn.Module | None = None) -> Report:
    """Build the report's figures and attach them, so ``display(report)`` shows them inline and the saved
    notebook keeps them (interactive) without a kernel: as bokeh JSON items, which the JupyterLab extension
    draws with the BokehJS it ships (no BokehJS in the notebook); in ``"inline"`` or ``"server"`` mode
    (:func:`configure`) also as HTML for the report's text/html view."""
    from .resources import figure_item, resources_mode

    for title, fig in report_figures(report, before, after):
        inner = getattr(fig, "title", None)
        if inner is not None and inner.text:  # one title per plot: the report's (it was shown twice)
            title, inner.text = inner.text, ""
        report.attach_plot(title, figure_item(fig))
        if resources_mode() != "extension":
            report.attach_html(title, figure_html(fig))
    return report


def comparison_figure(table: Any):
    """Pareto plot of a ``compare`` table (see :func:`.sweeps.comparison_figure`)."""
    from .sweeps import comparison_figure as _figure

    return _figure(table)


def attach_comparison_plot(table: Any) -> Any:
    """Make a ``compare`` table's HTML view show its Pareto plot (see :func:`.sweeps.attach_comparison_plot`)."""
    from .sweeps import attach_comparison_plot as _attach

    return _attach(table)


def sensitivity_heatmap(result: Any, method: str | None = None):
    """Heatmap (layers x ratio, colour = drop) of a ``sensitivity`` result (see :func:`.sweeps.sensitivity_heatmap`)."""
    from .sweeps import sensitivity_heatmap as _heatmap

    return _heatmap(result, method)


class _Figure:
    def __init__(self, obj: Any):
        self.obj = obj

    def _repr_html_(self) -> str:
        return figure_html(self.obj)


def show(obj: Any) -> _Figure:
    """A displayable wrapper of a bokeh figure (offline BokehJS, see :mod:`.resources`)."""
    return _Figure(obj)
