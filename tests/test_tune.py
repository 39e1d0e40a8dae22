"""The tuning panel's state, without a browser: controls -> plan, preview numbers vs the core's,
Apply / Revert, the generated cell (and its fallback when no extension answers), rapid events."""

from __future__ import annotations

import time

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from models import make

import jupyter_compress as jc
from jupyter_compress.widgets import tune


def _panel(family="mlp", **kw):
    model, x = make(family)
    return model, x, tune(model, example_inputs=x, **kw)


def test_controls_are_generated_from_the_configs():
    _, _, panel = _panel()
    amount = panel.controls["prune"]["amount"]
    assert (amount.min, amount.max) == (0.0, pytest.approx(0.99))
    assert panel.controls["prune"]["criterion"].options == ("magnitude", "taylor", "random")
    assert "rank" in panel.controls["svd"] and "solver" in panel.controls["svd"]
    assert set(panel.families) >= {"pruning", "decomposition"}


def test_controls_to_plan_with_overrides_and_exclusions():
    _, _, panel = _panel()
    panel.method_pickers["pruning"].value = "prune"
    panel.controls["prune"]["amount"].value = 0.6
    panel.layer_rows["head"][0].value = False  # exclude the head
    panel.layer_rows["fc2"][1]["pruning"].value = "30%"  # its own amount
    plan = panel.plan()
    assert [s.method for s in plan.steps] == ["prune", "prune"]
    assert plan.steps[0].config.amount == 0.6 and plan.steps[1].config.amount == pytest.approx(0.3)
    small, _ = jc.compress(panel.model, plan)
    sparsity = {n: float((small.get_submodule(n).weight == 0).float().mean())
                for n in ("fc1", "fc2", "head")}
    assert sparsity["fc1"] == pytest.approx(0.6, abs=0.01) and sparsity["fc2"] == pytest.approx(0.3, abs=0.01)
    assert sparsity["head"] == 0
    panel.layer_rows["fc2"][1]["pruning"].value = "lots"
    assert "not a number" in panel.message.value  # shown in the panel, not raised


@pytest.mark.parametrize("method,field,value", [("prune", "amount", 0.7), ("svd", "rank", 0.3)])
def test_preview_numbers_equal_the_core_numbers(method, field, value):
    model, x, panel = _panel()
    family = "pruning" if method == "prune" else "decomposition"
    panel.method_pickers[family].value = method
    panel.controls[method][field].value = value
    preview = panel.last_preview
    _, report = jc.compress(model, panel.plan())
    assert (preview.params_after, preview.nonzeros_after, preview.bytes_after) == (
        report.model_params_after, report.model_nonzeros_after, report.model_bytes_after)
    errors = {r.name: r.error for r in report.compressed_rows}
    assert {r["name"]: pytest.approx(r["error"], rel=1e-6) for r in preview.layers} == errors  # float64 both


def test_apply_binds_a_copy_and_revert_unbinds_it():
    ns = {}
    model, x, panel = _panel(namespace=ns, name="model")
    before = jc.state_dict_hash(model)
    panel.method_pickers["pruning"].value = "prune"
    small = panel.apply()
    assert ns["model_tuned"] is small and jc.state_dict_hash(model) == before
    panel.revert()
    assert "model_tuned" not in ns and panel.revert_button.disabled


@pytest.mark.parametrize("bad", ["In", "get_ipython", "9lives", "class", "__builtins__", "_compress_report"])
def test_apply_refuses_a_name_ipython_owns_or_python_forbids(bad):
    ns = {"In": ["kept"], "get_ipython": len}
    model, x, panel = _panel(namespace=ns, name="model")
    panel.method_pickers["pruning"].value = "prune"
    panel.target.value = bad
    assert panel.apply() is None
    assert "type another name" in panel.message.value and panel.result is None
    assert ns == {"In": ["kept"], "get_ipython": len}  # nothing bound or rebound


def test_apply_in_place_and_revert_restore_exactly():
    model, x, panel = _panel()
    before = jc.state_dict_hash(model)
    panel.method_pickers["decomposition"].value = "svd"
    panel.inplace.value = True
    assert panel.apply() is model and jc.state_dict_hash(model) != before
    panel.revert()
    assert jc.state_dict_hash(model) == before


def test_generated_cell_falls_back_to_code_and_reproduces_the_applied_model():
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext jupyter_compress").raise_error()
    model, x = make("cnn")
    shell.user_ns.update(net=model, x=x)
    panel = tune(model, example_inputs=x, name="net", namespace=shell.user_ns)
    panel.method_pickers["pruning"].value = "prune"
    panel.controls["prune"]["amount"].value = 0.4
    panel.method_pickers["decomposition"].value = "svd"
    applied = panel.apply()
    request = panel.generate_cell()
    assert request.wait(2) is False  # no kernel here, so no extension: the code is shown to copy
    assert panel.code.layout.display == "flex" and panel.code.value.startswith("%%compress net --as net_tuned")
    shell.run_cell(panel.code.value.replace("--as net_tuned", "--as again --no-report")).raise_error()
    assert jc.state_dict_hash(shell.user_ns["again"]) == jc.state_dict_hash(applied)


def test_rapid_events_end_in_the_last_state():
    model, x, panel = _panel(debounce_s=0.05)
    panel.method_pickers["pruning"].value = "prune"
    amounts = [round(0.01 * (i % 90), 2) for i in range(100)]
    for amount in amounts:  # 100 slider events faster than the debounce
        panel.controls["prune"]["amount"].value = amount
    final = panel.last_preview
    fresh = tune(model).engine.preview({n: jc.methods.analysis.LayerSetting(prune=amounts[-1])
                                         for n in ("fc1", "fc2", "head")})
    assert (final.nonzeros_after, [r["error"] for r in final.layers]) == (
        fresh.nonzeros_after, [r["error"] for r in fresh.layers])
    deadline = time.time() + 20
    while "measuring" in panel.probe_label.value and time.time() < deadline:
        time.sleep(0.05)
    small, _ = jc.compress(model, jc.PruneConfig(amount=amounts[-1]))
    with torch.no_grad():
        expected = jc.core.metrics.relative_error(model(x), small(x))
    assert f"{expected:.4f}" in panel.probe_label.value  # the probe shown is the last setting's


def test_stop_between_steps_leaves_the_model_as_it_was():
    model, x, panel = _panel()
    before = jc.state_dict_hash(model)
    panel.method_pickers["pruning"].value = "prune"
    panel.method_pickers["decomposition"].value = "svd"
    panel.inplace.value = True
    seen = []

    def stop_after_first(index, total, method):
        seen.append((index, total, method))
        return index == 0  # the user presses Stop while step 1 runs

    with pytest.raises(jc.StoppedError, match="Stopped before step 2 of 2"):
        jc.compress_(model, panel.plan(), on_step=stop_after_first)
    assert jc.state_dict_hash(model) == before and seen == [(0, 2, "svd"), (1, 2, "prune")]
    panel._stop.set()  # the panel's Stop: its Apply ends with a message, the model unchanged
    panel._on_step = lambda i, t, m: False
    assert panel.apply() is None and "Stopped" in panel.message.value
    assert jc.state_dict_hash(model) == before


def test_apply_button_runs_in_the_background():
    ns = {}
    model, x, panel = _panel(namespace=ns)
    panel.method_pickers["pruning"].value = "prune"
    thread = panel.apply(background=True)
    thread.join(30)
    assert "model_tuned" in ns and not panel.apply_button.disabled and panel.progress.layout.display == "none"


def test_display_emits_bokehjs_before_the_panel_once_per_session(monkeypatch):
    """jupyter_bokeh's view draws with the page's BokehJS and loads none: the panel emits it first."""
    pytest.importorskip("jupyter_bokeh")
    from IPython.utils.capture import capture_output

    from jupyter_compress.plotting import resources

    InteractiveShell.instance()
    resources.configure("inline")
    monkeypatch.setitem(resources._STATE, "loaded", False)  # a fresh kernel session: BokehJS not emitted yet
    _, _, panel = _panel()
    with capture_output() as first:
        panel._ipython_display_()
    kinds = [next(k for k in ("application/vnd.jupyter.widget-view+json", "text/html") if k in o.data)
             for o in first.outputs]
    assert kinds == ["text/html", "application/vnd.jupyter.widget-view+json"]  # the panel: one output
    assert {"text/plain", "text/html"} <= set(first.outputs[1].data)  # with its static fallbacks
    assert first.outputs[0].data["text/html"].count("<script>") >= 1 and "Bokeh" in first.outputs[0].data["text/html"]
    _, _, again = _panel()
    with capture_output() as second:
        again._ipython_display_()
    assert "application/vnd.jupyter.widget-view+json" in second.outputs[0].data  # BokehJS is in the page already


def test_the_panel_table_writes_bytes_as_the_reports_do():
    from types import SimpleNamespace

    from jupyter_compress.widgets.tune_state import summary_html as _summary_html

    preview = SimpleNamespace(params_before=1000, params_after=500, nonzeros_before=1000, nonzeros_after=400,
                              bytes_before=4096 * 3, bytes_after=2048, layers=[], exact=True, seconds=0.001)
    html = _summary_html(preview, [])
    assert "12.00 KiB" in html and "2.00 KiB" in html and "12,288" not in html
    assert "1,000" in html  # counts keep their thousands separators
