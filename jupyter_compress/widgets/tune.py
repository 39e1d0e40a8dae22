"""``tune(model)``: a panel of controls per method family, a live preview, Apply / Revert / Generate cell.

While a control moves, sizes and per-layer weight errors come from analyses computed once
(:class:`~jupyter_compress.methods.analysis.PreviewEngine`): milliseconds, no model copy. The output
fidelity on a small probe batch is measured in a background thread, debounced, and dropped when a
newer setting supersedes it. The live model is touched only by Apply (and Revert), under a lock.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import ipywidgets as W
from torch import nn

from ..core.apply import compress, compress_, forget_undo, revert_
from ..core.metrics import call_model, eval_mode, primary_output, relative_error
from ..core.plan import Plan
from ..errors import CompressError
from ..methods.analysis import PreviewEngine
from . import tune_state as ts
from .controls import config_controls

__all__ = ["TunePanel", "tune"]

class TunePanel:
    """The panel; ``.widget`` is the ipywidgets box (the panel also displays itself)."""

    def __init__(self, model: nn.Module, *, eval: Callable | None = None, data: Any = None,
                 example_inputs: Any = None, name: str = "model", as_name: str | None = None,
                 namespace: dict | None = None, debounce_s: float = 0.4):
        if not isinstance(model, nn.Module):
            raise CompressError(f"tune needs a torch.nn.Module; got a {type(model).__name__}.")
        from ..notebook.cells import current_cell_id

        self.model, self.eval, self.data, self.example_inputs = model, eval, data, example_inputs
        self.name, self.as_name, self.namespace = name, as_name or f"{name}_tuned", namespace
        self.anchor_cell_id = current_cell_id()  # callbacks run outside any cell: capture it now
        self.lock = threading.Lock()
        self.debounce_s = debounce_s
        self.engine = PreviewEngine(model)
        self.state = ts.TuneState(model, self.engine.names)  # what the controls say; the widgets write into it
        self.result: tuple[nn.Module, Any] | None = None
        # what the last Apply ran: the exact Plan passed to compress / compress_, and where it went
        # (Generate cell writes this, not whatever the controls say later)
        self.applied_plan: Plan | None = None
        self._applied_where: tuple[bool, str] = (False, self.as_name)
        self._display = None
        self.last_preview = None
        self._generation = 0
        self._timer: threading.Timer | None = None
        self._applied_inplace = False
        self._previous_binding: Any = None
        self._build()
        self.refresh()

    # -- layout ------------------------------------------------------------
    def _build(self) -> None:
        self.families = {f: [m.name for m in methods] for f, methods in self.state.families.items()}
        self.method_pickers: dict[str, W.Dropdown] = {}
        self.controls: dict[str, dict[str, W.Widget]] = {}
        self._method_boxes: dict[str, W.VBox] = {}
        tabs = []
        for family, methods in self.state.families.items():
            picker = W.Dropdown(options=[ts.OFF, *self.families[family]], value=ts.OFF, description="method")
            picker.observe(partial(self._on_pick, family), names="value")
            self.method_pickers[family] = picker
            for method in methods:
                controls = config_controls(method.config_cls, method.controls)
                self.controls[method.name] = controls
                self.state.set_values(method.name, {field: c.value for field, c in controls.items()})
                for field, control in controls.items():
                    control.observe(partial(self._on_value, method.name, field), names="value")
                self._method_boxes[method.name] = W.VBox(list(controls.values()), layout=W.Layout(display="none"))
            tabs.append(W.VBox([picker, *(self._method_boxes[m] for m in self.families[family])]))
        self.tabs = W.Tab(children=tabs, titles=list(self.families))
        self.layer_rows: dict[str, tuple[W.Checkbox, dict[str, W.Text]]] = {}
        rows = []
        for layer in self.engine.names:
            include = W.Checkbox(value=True, indent=False, layout=W.Layout(width="28px"))
            overrides = {f: W.Text(placeholder=f"{f} default", layout=W.Layout(width="120px"))
                         for f in self.state.override_families}
            include.observe(partial(self._on_include, layer), names="value")
            for family, text in overrides.items():
                text.observe(partial(self._on_override, layer, family), names="value")
            self.layer_rows[layer] = (include, overrides)
            rows.append(W.HBox([include, W.Label(layer, layout=W.Layout(width="260px")), *overrides.values()]))
        self.layer_table = W.Accordion(children=[W.VBox(rows)], titles=["layers: include / per-layer override"])
        self.summary = W.HTML()
        self.probe_label = W.HTML()
        self.inplace = W.Checkbox(value=False, description="in place", indent=False)
        self.target = W.Text(value=self.as_name, description="as", layout=W.Layout(width="220px"))
        self.apply_button = W.Button(description="Apply", button_style="primary")
        self.revert_button = W.Button(description="Revert", disabled=True)
        self.cell_button = W.Button(description="Generate cell")
        self.apply_button.on_click(lambda _: self.apply(background=True))
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(display="none"))
        self.stop_button = W.Button(description="Stop", button_style="warning", layout=W.Layout(display="none"))
        self._stop = threading.Event()
        self.stop_button.on_click(lambda _: self._stop.set())
        self.revert_button.on_click(lambda _: self.revert())
        self.cell_button.on_click(lambda _: self.generate_cell())
        self.code = W.Textarea(layout=W.Layout(width="100%", height="140px", display="none"))
        self.message = W.HTML()
        self.output = W.Output()
        self.plot = self._make_plot()
        actions = W.HBox([self.target, self.inplace, self.apply_button, self.revert_button, self.cell_button,
                          self.progress, self.stop_button])
        parts = [self.tabs, self.layer_table, self.summary, self.probe_label]
        if self.plot is not None:
            parts.append(self.plot[0])
        self.widget = W.VBox([*parts, actions, self.message, self.code, self.output])

    def _make_plot(self):
        """Per-layer weight error bars, in a bokeh figure whose data source is updated in place."""
        try:
            from bokeh.models import ColumnDataSource
            from bokeh.plotting import figure
            from jupyter_bokeh import BokehModel
        except ImportError:  # the panel works without plots
            return None
        source = ColumnDataSource({"layer": [], "error": []})
        fig = figure(height=220, sizing_mode="stretch_width", title="relative weight error per layer",
                     x_range=list(self.engine.names) or [""], tools="hover", tooltips=[("layer", "@layer"),
                                                                                       ("error", "@error")])
        fig.vbar(x="layer", top="error", source=source, width=0.8)
        fig.xaxis.major_label_orientation = 1.0
        return BokehModel(fig), source

    def _ipython_display_(self):
        from IPython.display import HTML, display

        from ..notebook.cells import TUNE_TERMINAL_HINT, in_terminal

        if in_terminal():  # a terminal IPython: no widget front end, so a hint, not object reprs
            print(TUNE_TERMINAL_HINT)
            return
        if self.plot is not None:
            # jupyter_bokeh's view draws with the page's BokehJS (window.Bokeh) and loads none itself: emit
            # it (offline, once per kernel session, see plotting.resources) in an output before the panel's
            from ..plotting.resources import load_bokehjs

            loader = load_bokehjs()
            if loader.html:
                display(HTML(loader.html))
        # one output: the live widget, with a one-line text and a static HTML summary beside it (updated on
        # Apply / Revert), shown where the widget cannot be (a notebook reopened without its kernel, nbconvert)
        self._display = display(self._repr_mimebundle_(), raw=True, display_id=True)

    def _repr_mimebundle_(self, **kwargs) -> dict[str, Any]:
        data = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        data["text/plain"] = self.summary_text()
        data["text/html"] = self.static_html()
        return data

    def summary_text(self) -> str:
        """One line: what the panel is on and what it applied (the widget's text fallback)."""
        return ts.summary_text(self.name, self.applied_plan, *self._applied_where)

    def static_html(self) -> str:
        """A static summary of the panel: the applied plan (or the controls' plan) and the preview table."""
        plan = None
        if self.applied_plan is None:
            try:
                plan = self.plan()
            except CompressError:
                pass
        return ts.static_html(self.name, self.applied_plan, *self._applied_where, plan, self.summary.value)

    def _update_display(self) -> None:
        if self._display is not None:
            self._display.update(self._repr_mimebundle_(), raw=True)

    # -- events -> state -> plan ------------------------------------------------
    def _on_pick(self, family: str, change) -> None:
        self.state.pick(family, change["new"])
        self._on_change()

    def _on_value(self, method: str, field: str, change) -> None:
        self.state.set_value(method, field, change["new"])
        self._on_change()

    def _on_include(self, layer: str, change) -> None:
        self.state.include(layer, change["new"])
        self._on_change()

    def _on_override(self, layer: str, family: str, change) -> None:
        self.state.set_override(layer, family, change["new"])
        self._on_change()

    def plan(self) -> Plan:
        """The plan the controls describe (what Apply runs and Generate cell writes)."""
        return self.state.plan()

    # -- live preview ---------------------------------------------------------
    def _on_change(self, change=None) -> None:
        for family, picker in self.method_pickers.items():
            for method in self.families[family]:
                self._method_boxes[method].layout.display = "flex" if picker.value == method else "none"
        self.refresh()

    def refresh(self) -> None:
        """Update the instant preview now and schedule the background probe."""
        try:
            plan = self.plan()
        except CompressError as exc:
            self.message.value = ts.error_html(str(exc))
            return
        self.message.value = ""
        settings, other = self.state.settings(plan)
        preview = self.engine.preview(settings)
        self.last_preview = preview
        self.summary.value = ts.summary_html(preview, other)
        if self.plot is not None:
            self.plot[1].data = {"layer": [r["name"] for r in preview.layers],
                                 "error": [r["error"] for r in preview.layers]}
        self._schedule_probe(plan)

    def _schedule_probe(self, plan: Plan) -> None:
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
        if self.example_inputs is None or not plan.steps:
            self.probe_label.value = "" if plan.steps else "choose a method to preview"
            return
        generation = self._generation
        self.probe_label.value = "<i>measuring output fidelity on the probe batch...</i>"
        self._timer = threading.Timer(self.debounce_s, self._probe, args=(plan, generation))
        self._timer.daemon = True
        self._timer.start()

    def _probe(self, plan: Plan, generation: int) -> None:
        try:
            with self.lock:
                if generation != self._generation:
                    return  # superseded while waiting
                small, _ = compress(self.model, plan, example_inputs=self.example_inputs, data=self.data, measure=False)
                with eval_mode(self.model):
                    ref = primary_output(call_model(self.model, self.example_inputs))
                with eval_mode(small):
                    out = primary_output(call_model(small, self.example_inputs))
            error = relative_error(ref, out)
            text = f"probe batch: output relative error <b>{error:.4f}</b>"
        except Exception as exc:  # noqa: BLE001 - shown in the panel; the next change retries
            text = f"<span style='color:#b00'>probe failed: {html.escape(str(exc).splitlines()[0][:200])}</span>"
        if generation == self._generation:
            self.probe_label.value = text

    # -- actions ---------------------------------------------------------------
    def apply(self, background: bool = False) -> Any:
        """Run the plan: a new model bound to the 'as' name, or the live model in place.

        With ``background=True`` (the Apply button) it runs in a thread with a progress bar and a
        Stop button, so the panel stays responsive; Stop ends it between steps and nothing changes.
        """
        plan = self.plan()
        if not plan.steps:
            self.message.value = "Choose a method first."
            return None
        if background:
            thread = threading.Thread(target=self._apply, args=(plan,), daemon=True)
            thread.start()
            return thread
        return self._apply(plan)

    def _on_step(self, index: int, total: int, method: str) -> bool:
        self.progress.max, self.progress.value = total, index
        self.progress.description = f"{index + 1}/{total} {method}"
        return not self._stop.is_set()

    def _apply(self, plan: Plan) -> Any:
        if not self.inplace.value and self.namespace is not None:
            problem = ts.name_message(self.target.value, _hidden_names())
            if problem:
                self.message.value = problem
                return None
        self._stop.clear()
        self.progress.layout.display = self.stop_button.layout.display = "flex"
        self.apply_button.disabled = True
        try:
            with self.lock:
                if self.inplace.value:
                    report = compress_(self.model, plan, eval=self.eval, example_inputs=self.example_inputs,
                                       data=self.data, on_step=self._on_step)
                    result = self.model
                    self._applied_inplace = True
                else:
                    result, report = compress(self.model, plan, eval=self.eval, example_inputs=self.example_inputs,
                                              data=self.data, on_step=self._on_step)
                    if self.namespace is not None:
                        self._previous_binding = self.namespace.get(self.target.value)
                        self.namespace[self.target.value] = result
        except CompressError as exc:
            self.message.value = ts.error_html(str(exc))
            return None
        finally:
            self.progress.layout.display = self.stop_button.layout.display = "none"
            self.apply_button.disabled = False
        self.result = (result, report)
        ran = Plan.from_dict(report.plan)  # with any choice a method measured and pinned on this run
        self.applied_plan = plan if ran.steps == plan.steps else ran  # what compress ran: Generate cell writes it
        self._applied_where = (bool(self.inplace.value), self.target.value)
        self.revert_button.disabled = False
        where = f"{self.name} in place" if self.inplace.value else f"as {self.target.value!r}"
        self.message.value = f"Applied {html.escape(plan.describe())} {html.escape(where)}."
        self.output.clear_output()
        with self.output:
            from IPython.display import display

            display(report)
        self._update_display()
        return result

    def revert(self) -> None:
        """Undo the last Apply: the in-place model restored exactly, or the new name unbound."""
        with self.lock:
            if self._applied_inplace:
                revert_(self.model)
                self._applied_inplace = False
            elif self.namespace is not None and self.result is not None:
                if self._previous_binding is None:
                    self.namespace.pop(self.target.value, None)
                else:
                    self.namespace[self.target.value] = self._previous_binding
        self.result = None
        self.applied_plan = None
        self.revert_button.disabled = True
        self.message.value = "Reverted."
        self._update_display()

    def cell_code(self) -> str:
        """The %%compress cell for the applied plan (exactly what Apply ran, and where it bound the result);
        before any Apply (or after Revert), for the plan the controls describe, and the cell says so."""
        if self.applied_plan is not None:
            return ts.cell_code(self.applied_plan, self.name, *self._applied_where, applied=True)
        return ts.cell_code(self.plan(), self.name, bool(self.inplace.value), self.target.value, applied=False)

    def generate_cell(self):
        """Insert the plan as a %%compress cell below the panel's cell (through the labextension);
        where no extension answers, show the code to copy instead."""
        from ..notebook.cells import request_cell_below

        code = self.cell_code()

        def done(request) -> None:
            if request.ok:
                self.code.layout.display = "none"
                self.message.value = "Inserted the %%compress cell below." + (
                    " It holds the applied plan." if self.applied_plan is not None
                    else " Nothing is applied yet: it holds the controls' plan.")
            else:
                self.code.value = code
                self.code.layout.display = "flex"
                self.message.value = (f"No JupyterLab extension answered ({html.escape(request.reason or '')}): "
                                      f"copy this cell.")

        return request_cell_below(code, tag=f"jupyter_compress.tune.{id(self)}", anchor_cell_id=self.anchor_cell_id,
                                  on_done=done)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        forget_undo(self.model) if self._applied_inplace else None
        self.widget.close()


def _hidden_names() -> set[str]:
    """Names IPython keeps in the user namespace (empty outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return set()
    shell = get_ipython()
    return set(getattr(shell, "user_ns_hidden", {}) or {}) if shell is not None else set()


def tune(model: nn.Module, eval: Callable | None = None, data: Any = None, *, example_inputs: Any = None,
         name: str = "model", namespace: dict | None = None, as_name: str | None = None,
         debounce_s: float = 0.4) -> TunePanel:
    """Open the tuning panel on ``model`` (returned; it displays itself as the cell's output).

    ``example_inputs`` enable the background fidelity probe (and structured pruning); ``namespace``
    (e.g. the notebook's ``globals()``) is where Apply binds the new model, under ``as_name``.
    """
    return TunePanel(model, eval=eval, data=data, example_inputs=example_inputs, name=name, namespace=namespace,
                     as_name=as_name, debounce_s=debounce_s)
