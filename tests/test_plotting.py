"""Plot data by hand (no bokeh), then the figures' renderers and data sources, and offline BokehJS."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jupyter_compress import Plan, PruneConfig, SVDConfig, compress
from jupyter_compress.core.evaluate import Evaluator
from jupyter_compress.plotting import data as D


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(20, 16)
    small, report = compress(model, Plan.of(SVDConfig(rank=0.5), PruneConfig(amount=0.5)),
                             eval=Evaluator(x, reference=model, example_inputs=x, batch_sizes=(4,)))
    return model, small, report


def test_layer_sizes_and_errors(run):
    model, small, report = run
    sizes = D.layer_sizes(report)
    assert sizes["layer"] == ["a", "b"]
    assert sizes["params_before"] == [16 * 32 + 32, 32 * 8 + 8]
    from jupyter_compress import count_params

    assert sizes["params_after"] == [count_params(small.a), count_params(small.b)]
    from jupyter_compress import count_nonzero, model_bytes

    assert sizes["nonzeros_after"] == [count_nonzero(small.a), count_nonzero(small.b)]
    assert sizes["bytes_after"] == [model_bytes(small.a), model_bytes(small.b)]
    errs = D.layer_errors(report)
    assert len(errs["layer"]) == len([r for r in report.rows if r.error is not None]) >= 2
    assert all(e > 0 for e in errs["error"])


def test_weight_histogram_counts_every_weight(run):
    model, small, _ = run
    h = D.weight_histogram(model, small, "a", bins=10)
    assert sum(h["before"]) == h["count_before"] == 16 * 32
    assert sum(h["after"]) == h["count_after"] == sum(p.numel() for n, p in small.a.named_parameters()
                                                    if n.endswith("weight"))
    assert h["zeros_after"] >= 0.45 and h["zeros_before"] == 0.0  # pruned by half after the SVD
    assert h["left"][0] <= float(model.a.weight.detach().min()) and h["right"][-1] >= float(model.a.weight.detach().max())
    assert D.weight_layers(model, small) == ["a", "b"]


def test_spectrum_and_chosen_rank(run):
    model, _, report = run
    rank = D.chosen_rank(report, "a")
    assert rank == report.rows[0].detail["rank"]
    s = D.spectrum_data(model, "a", rank)
    assert s["singular_value"] == pytest.approx(torch.linalg.svdvals(model.a.weight.double()).tolist(), rel=1e-12)
    assert s["energy"][-1] == pytest.approx(1.0) and s["error"][-1] == pytest.approx(0.0, abs=1e-6)
    assert s["chosen_rank"] == rank and len(s["rank"]) == 16


def test_latency_data_orders_cases():
    d = D.latency_data({"latency_ms@8": 4.0, "latency_ms": 2.0, "latency_ms@1": 1.0, "accuracy": 1},
                       {"latency_ms@8": 2.0, "latency_ms": 1.0, "latency_ms@1": 1.0})
    assert d["case"] == ["given batch", "batch 1", "batch 8"] and d["ratio"] == [0.5, 1.0, 0.5]


def test_pareto_front_by_hand():
    xs, ys = [1, 2, 3, 2, 1], [0.5, 0.9, 0.95, 0.8, 0.5]
    assert D.pareto_front(xs, ys) == [True, True, True, False, True]  # duplicates are both kept
    pts = [{"size": 1.0, "acc": 0.9, "plan": "p1"}, {"size": 2.0, "acc": 0.8, "plan": "p2"}, {"size": None}]
    assert D.pareto_data(pts, "size", "acc") == {"x": [1.0, 2.0], "y": [0.9, 0.8], "label": ["p1", "p2"],
                                                 "frontier": [True, False]}


def test_figures_have_their_renderers_and_sources(run):
    from bokeh.models import ColumnDataSource, CustomJS, GlyphRenderer, HoverTool, Select, Span

    from jupyter_compress.plotting import figures as F

    model, small, report = run
    hist = F.histogram_figure(model, small)
    select, fig = hist.children
    assert isinstance(select, Select) and select.options == ["a", "b"]
    assert len(fig.select(GlyphRenderer)) == 2
    callback = select.js_property_callbacks["change:value"][0]
    assert isinstance(callback, CustomJS) and set(callback.args["hists"]) == {"a", "b"}
    src = fig.select(GlyphRenderer)[0].data_source
    assert src.data["before"] == D.weight_histogram(model, small, "a")["before"]

    sizes = F.sizes_figure(report, "bytes")
    data = sizes.select(GlyphRenderer)[0].data_source.data
    assert data["before"] == D.layer_sizes(report)["bytes_before"]
    assert list(sizes.x_range.factors) == ["a", "b"]

    spec = F.spectrum_figure(model, "a", 3)
    assert [s.location for s in spec.select(Span)] == [3]
    lat = F.latency_figure(report.metrics_before, report.metrics_after)
    assert list(lat.x_range.factors) == ["given batch", "batch 4"]

    par = F.pareto_figure([{"x": 1, "y": 1, "plan": "a"}, {"x": 2, "y": 0.5, "plan": "b"}], "x", "y")
    scat = [r for r in par.select(GlyphRenderer) if isinstance(r.data_source, ColumnDataSource)
            and "label" in r.data_source.data][0]
    assert scat.data_source.data["frontier"] == [True, False]
    assert any(("plan", "@label") in h.tooltips for h in par.select(HoverTool))
    titles = [t for t, _ in F.report_figures(report, model, small)]
    assert titles == ["parameters per layer", "bytes per layer", "per-layer error", "latency",
                      "weights before / after", "singular values"]


def test_bokehjs_is_inline_once_and_server_mode_embeds_none(run):
    from jupyter_compress import plotting
    from jupyter_compress.plotting import figures as F
    from jupyter_compress.plotting import resources

    model, small, report = run
    fig = F.errors_figure(report)
    try:
        plotting.configure("inline")
        resources._STATE["loaded"] = False  # as in a fresh kernel session
        first, second = plotting.figure_html(fig), plotting.figure_html(fig)
        plotting.configure("inline")  # the same setting again (the magic repeats it each run)
        assert len(plotting.figure_html(fig)) < 50_000
        assert "<script src=" not in first and "cdn.bokeh.org" not in first  # nothing fetched
        assert len(first) > 1_000_000 > 50_000 > len(second)  # BokehJS travels once
        assert "Bokeh" in second and "<div" in second
        plotting.configure("server", root_url="http://localhost:8765/")
        html = plotting.figure_html(fig)
        assert '<script src="http://localhost:8765/static/js/bokeh.min.js">' in html and len(html) < 50_000
        with pytest.raises(ValueError, match="root_url"):
            plotting.configure("server")
    finally:
        plotting.configure("extension")
    assert resources.resources_mode() == "extension"


def test_extension_mode_outputs_carry_data_only(run):
    """The default: the extension ships BokehJS; reports carry JSON items, HTML a script that asks the
    extension to draw the item (issue 18: a saved notebook holds no BokehJS)."""
    import json

    from jupyter_compress import plotting
    from jupyter_compress.plotting import figures as F
    from jupyter_compress.plotting import resources

    model, small, report = run
    resources.configure("extension")  # the default (another test may have chosen "inline")
    fig = F.errors_figure(report)
    html = plotting.figure_html(fig)
    assert "window.jupyterCompressBokeh" in html and "embed_item" in html and len(html) < 50_000
    assert "<script src=" not in html and "http" not in html.split("<script")[1]  # nothing fetched
    assert plotting.load_bokehjs().html == ""
    report.plots_html.clear()
    report.plot_items.clear()
    plotting.attach_plots(report, model, small)
    assert not report.plots_html and len(report.plot_items) == 6
    bundle = report._repr_mimebundle_()
    data = json.loads(json.dumps(bundle[jc_mime()], allow_nan=False))
    assert [t for t, _ in data["plot_items"]] == [t for t, _ in report.plot_items] and "plots_html" not in data
    assert json.loads(data["plot_items"][0][1])["doc"]["version"]  # a bokeh JSON item, as JSON text
    assert "jupyter-compress JupyterLab extension" in bundle["text/html"]
    assert len(json.dumps(bundle)) < 300_000  # BokehJS alone is 1.7 MB
    assert "plot_items" not in report.to_dict()
    report.plot_items.clear()


def jc_mime() -> str:
    from jupyter_compress.core.report import REPORT_MIME

    return REPORT_MIME


def test_attach_plots_puts_figures_into_the_html(run):
    from jupyter_compress import plotting

    model, small, report = run
    report.plots_html.clear()
    try:
        plotting.configure("inline")  # for front ends without the extension
        plotting.attach_plots(report, model, small)
    finally:
        plotting.configure("extension")
    html = report.to_html()
    assert html.count('class="jupyter-compress-plot"') == 6
    assert "plots_html" not in report.to_dict()
    # the JSON carries the plots once, as data (the HTML keeps its own copy for other front ends)
    assert "plots_html" not in report._repr_mimebundle_()[jc_mime()]
    report.plots_html.clear()
    report.plot_items.clear()


def test_live_curve_data_and_in_place_updates():
    from jupyter_compress.plotting import LiveCurve, curve_data

    history = [{"epoch": 0, "accuracy": 0.1}, {"epoch": 1, "loss": 2.0, "accuracy": 0.5, "seconds": 3.0},
               {"epoch": 2, "loss": 1.0, "accuracy": 0.8, "seconds": 2.0}]
    cols = curve_data(history)
    assert cols["epoch"] == [0, 1, 2] and cols["accuracy"] == [0.1, 0.5, 0.8]
    assert cols["loss"][0] != cols["loss"][0] and cols["loss"][1:] == [2.0, 1.0]  # NaN where not measured
    assert "seconds" not in cols
    curve = LiveCurve()
    curve.update(history[:2])
    renderers = len(curve.figure.renderers)
    curve.update(history)  # the same lines, new data: no redraw
    assert len(curve.figure.renderers) == renderers == 4  # a line and markers for loss and accuracy
    assert curve.source.data["accuracy"] == [0.1, 0.5, 0.8]


def test_each_plot_has_one_title_and_legends_cover_no_bar(run):
    import json

    from jupyter_compress import plotting
    from jupyter_compress.plotting.figures import report_figures

    model, small, report = run
    report.plot_items.clear()
    plotting.attach_plots(report, model, small)
    titles = [t for t, _ in report.plot_items]
    assert "parameters per layer" in titles and "per-layer error" in titles
    for title, item in report.plot_items:
        text = json.dumps(json.loads(item))
        # the figure's own title is blank: the report shows the title once (the histogram's changes with its
        # layer selector, so it keeps its own and the report's is the generic one)
        assert f'"text": "{title}"' not in text
    report.plot_items.clear()
    for _, fig in report_figures(report):
        legends = [r for r in getattr(fig, "right", []) if type(r).__name__ == "Legend"]
        inside = [c for c in getattr(fig, "center", []) if type(c).__name__ == "Legend"]
        if legends or inside:
            assert legends and not inside  # beside the plot area, not over the bars


def _imports(path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package)."""
    import ast

    package = ["jupyter_compress", *path.parent.relative_to(path.parents[1]).parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.add(module)
            out |= {f"{module}.{alias.name}" for alias in node.names}  # ``from .. import plotting``
    return out


def _drawing_imports(paths) -> set[str]:
    return {f"{p.name}: {name}" for p in paths for name in _imports(p)
            if name.split(".")[0] == "bokeh" or name.startswith("jupyter_compress.plotting")}


def test_strategy_imports_no_plotting_and_no_bokeh(tmp_path):
    """The layers: strategy computes, plotting draws (DESIGN.md); not even a lazy import inside a function."""
    from pathlib import Path

    import jupyter_compress.strategy as strategy

    modules = sorted(Path(strategy.__file__).parent.glob("*.py"))
    assert len(modules) > 5
    found = _drawing_imports(modules)
    assert not found, found
    # the scan finds such imports, relative ones included
    planted = tmp_path / "strategy" / "planted.py"
    planted.parent.mkdir()
    planted.write_text("def f():\n    from ..plotting import figures\n    from .. import plotting\n"
                       "    import bokeh.plotting\n    from .compare import compare\n")
    assert {n.split(": ")[1] for n in _drawing_imports([planted])} == {
        "jupyter_compress.plotting", "jupyter_compress.plotting.figures", "bokeh.plotting"}


def test_sensitivity_heatmap_from_points():
    from jupyter_compress.plotting import sensitivity_heatmap
    from jupyter_compress.strategy._sens_result import Sensitivity

    points = [{"method": "m", "unit": u, "layers": [u], "ratio": r, "setting": {"amount": r}, "drop": d,
               "metric": 1 - d} for u, r, d in (("a", 0.5, 0.01), ("a", 0.9, 0.2), ("b", 0.5, 0.0), ("b", 0.9, 0.05))]
    fig = sensitivity_heatmap(Sensitivity(points=points, baseline=1.0, metric="accuracy", ratios=(0.5, 0.9)))
    assert fig.title.text == "m: drop in accuracy"
    assert list(fig.x_range.factors) == ["0.5", "0.9"] and list(fig.y_range.factors) == ["b", "a"]
