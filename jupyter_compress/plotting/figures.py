"""Bokeh figures for a Report: weight histograms (pick a layer), per-layer sizes and errors,
singular-value spectrum with the chosen rank, latency bars, and Pareto plots for sweeps.

Every figure is built from the plain columns of :mod:`.data`; interaction (the layer picker,
hovers) runs in BokehJS alone, so a saved notebook still responds without a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, CustomJS, HoverTool, Select, Span
from bokeh.plotting import figure
from torch import nn

from ..core.report import Report
from . import data as D

__all__ = ["histogram_figure", "sizes_figure", "errors_figure", "spectrum_figure", "latency_figure",
           "pareto_figure", "report_figures"]

BEFORE, AFTER, FRONT = "#4c78a8", "#f58518", "#e45756"
_SIZE = {"height": 260, "width": 560, "toolbar_location": "right"}


def histogram_figure(before: nn.Module, after: nn.Module, layers: Sequence[str] | None = None, bins: int = 40):
    """Before/after weight histograms; a Select switches the layer (data for every layer is embedded)."""
    layers = list(layers or D.weight_layers(before, after))
    if not layers:
        raise ValueError("No layer with a weight in both models to draw a histogram of.")
    hists = {name: D.weight_histogram(before, after, name, bins) for name in layers}
    first = hists[layers[0]]
    source = ColumnDataSource({k: first[k] for k in ("left", "right", "before", "after")})
    fig = figure(title=f"weights of {layers[0]}", x_axis_label="weight value", y_axis_label="count", **_SIZE)
    fig.quad(left="left", right="right", top="before", bottom=0, source=source, fill_color=BEFORE,
             fill_alpha=0.5, line_color=None, legend_label="before")
    fig.quad(left="left", right="right", top="after", bottom=0, source=source, fill_color=AFTER,
             fill_alpha=0.5, line_color=None, legend_label="after")
    _legend_outside(fig)
    select = Select(title="layer", value=layers[0], options=layers)
    select.js_on_change("value", CustomJS(args={"source": source, "fig": fig, "hists": {
        n: {k: h[k] for k in ("left", "right", "before", "after")} for n, h in hists.items()}}, code="""
        const h = hists[cb_obj.value];
        source.data = {left: h.left, right: h.right, before: h.before, after: h.after};
        fig.title.text = "weights of " + cb_obj.value;
    """))
    return column(select, fig)


def _legend_outside(fig) -> None:
    """The legend to the right of the plot area, where it covers no bar (inside, it hid the 'after' bars)."""
    legend = fig.legend[0]
    fig.center = [item for item in fig.center if item is not legend]
    fig.add_layout(legend, "right")


def _dodged_bars(title: str, cols: dict[str, list], before: str, after: str, y_label: str):
    from bokeh.transform import dodge

    layers = cols["layer"]
    fig = figure(x_range=layers, title=title, y_axis_label=y_label, **_SIZE)
    source = ColumnDataSource({"layer": layers, "before": cols[before], "after": cols[after]})
    fig.vbar(x=dodge("layer", -0.18, range=fig.x_range), top="before", width=0.34, source=source,
             color=BEFORE, legend_label="before")
    fig.vbar(x=dodge("layer", 0.18, range=fig.x_range), top="after", width=0.34, source=source,
             color=AFTER, legend_label="after")
    _legend_outside(fig)
    fig.xaxis.major_label_orientation = 0.8 if len(layers) > 6 else 0
    fig.add_tools(HoverTool(tooltips=[("layer", "@layer"), ("before", "@before{0,0}"), ("after", "@after{0,0}")]))
    return fig


def sizes_figure(report: Report, what: str = "params"):
    """Per-layer parameters (``what="params"``) or bytes (``"bytes"``) before and after."""
    if what not in ("params", "bytes"):
        raise ValueError(f"what must be 'params' or 'bytes'; got {what!r}.")
    label = {"params": "parameters", "bytes": "bytes"}[what]
    return _dodged_bars(f"{label} per layer", D.layer_sizes(report), f"{what}_before", f"{what}_after", what)


def errors_figure(report: Report):
    """Per-layer relative error of each step (the layer a collapse comes from stands out)."""
    cols = D.layer_errors(report)
    keys = [f"{layer} ({method})" for layer, method in zip(cols["layer"], cols["method"])]
    fig = figure(x_range=keys, title="per-layer error", y_axis_label="relative error", **_SIZE)
    fig.vbar(x="key", top="error", width=0.7, color=AFTER, source=ColumnDataSource({**cols, "key": keys}))
    fig.xaxis.major_label_orientation = 0.8 if len(keys) > 6 else 0
    fig.add_tools(HoverTool(tooltips=[("layer", "@layer"), ("method", "@method"), ("error", "@error{0.0000}")]))
    return fig


def spectrum_figure(model: nn.Module, layer: str, rank: int | None = None):
    """Singular values of ``layer`` (log scale) with the chosen rank marked by a vertical line."""
    cols = D.spectrum_data(model, layer, rank)
    fig = figure(title=f"singular values of {layer}", x_axis_label="rank", y_axis_label="singular value",
                 y_axis_type="log", **_SIZE)
    source = ColumnDataSource({k: cols[k] for k in ("rank", "singular_value", "energy", "error")})
    fig.line("rank", "singular_value", source=source, color=BEFORE, line_width=2)
    fig.scatter("rank", "singular_value", source=source, color=BEFORE, size=4)
    if rank is not None:
        fig.add_layout(Span(location=rank, dimension="height", line_color=FRONT, line_dash="dashed", line_width=2))
    fig.add_tools(HoverTool(tooltips=[("rank", "@rank"), ("sigma", "@singular_value{0.000}"),
                                      ("energy kept", "@energy{0.0%}"), ("error", "@error{0.0000}")]))
    return fig


def latency_figure(metrics_before: dict[str, Any], metrics_after: dict[str, Any]):
    """Median latency before and after, for each measured batch size."""
    cols = D.latency_data(metrics_before, metrics_after)
    return _dodged_bars("latency (median)", {"layer": cols["case"], "before": cols["before"],
                                             "after": cols["after"]}, "before", "after", "ms")


def pareto_figure(points: Sequence[dict[str, Any]], x: str, y: str, label: str = "plan",
                  x_label: str | None = None, y_label: str | None = None):
    """Sweep points (size or latency ``x`` against a metric ``y``); the frontier is drawn and
    highlighted; hovering a point shows its plan (``label``)."""
    cols = D.pareto_data(points, x, y, label)
    colors = [FRONT if f else "#999999" for f in cols["frontier"]]
    source = ColumnDataSource({**cols, "color": colors})
    fig = figure(title="trade-off (frontier in red)", x_axis_label=x_label or x, y_axis_label=y_label or y,
                 **_SIZE)
    front = sorted((px, py) for px, py, f in zip(cols["x"], cols["y"], cols["frontier"]) if f)
    if front:
        fig.step([p[0] for p in front], [p[1] for p in front], mode="after", color=FRONT, line_width=2)
    fig.scatter("x", "y", source=source, color="color", size=10)
    fig.add_tools(HoverTool(tooltips=[("plan", "@label"), (x, "@x{0.000}"), (y, "@y{0.0000}")]))
    return fig


def report_figures(report: Report, before: nn.Module | None = None,
                   after: nn.Module | None = None) -> list[tuple[str, Any]]:
    """The figures that apply to ``report`` as ``(title, figure)``: sizes, errors, latency always when
    measured; weight histograms and the spectrum of decomposed layers when the models are given."""
    out: list[tuple[str, Any]] = []
    if D.layer_sizes(report)["layer"]:
        out.append(("parameters per layer", sizes_figure(report, "params")))
        out.append(("bytes per layer", sizes_figure(report, "bytes")))
    if D.layer_errors(report)["layer"]:
        out.append(("per-layer error", errors_figure(report)))
    if D.latency_data(report.metrics_before, report.metrics_after)["case"]:
        out.append(("latency", latency_figure(report.metrics_before, report.metrics_after)))
    if before is not None and after is not None:
        changed = [n for n in dict.fromkeys(r.name for r in report.compressed_rows)
                   if n in D.weight_layers(before, after)]
        if changed:
            out.append(("weights before / after", histogram_figure(before, after, changed)))
        ranked = next((r.name for r in report.compressed_rows if "rank" in r.detail), None)
        weight = None if ranked is None else getattr(before.get_submodule(ranked), "weight", None)
        if ranked is not None and weight is not None and weight.dim() >= 2:
            out.append(("singular values", spectrum_figure(before, ranked, D.chosen_rank(report, ranked))))
    return out
