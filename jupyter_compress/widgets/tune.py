"""``tune(model)``: a panel of controls per method family, a live preview, Apply / Revert / Generate cell.

While a control moves, sizes and per-layer weight errors come from analyses computed once
(:class:`~jupyter_compress.methods.analysis.PreviewEngine`): milliseconds, no model copy. The output
fidelity on a small probe batch is measured in a background thread, debounced, and dropped when a
newer setting supersedes it. The live model is touched only by Apply (and Revert), under a lock.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as W
from torch import nn

from .. import __version__
from ..core.apply import compress, compress_, forget_undo, revert_
from ..core.metrics import call_model, eval_mode, primary_output, relative_error
from ..core.names import name_problem
from ..core.plan import Plan, Step, tidy_float
from ..core.registry import get_method, list_methods
from ..core.report import format_bytes
from ..core.selection import Selector
from ..errors import CompressError
from ..methods._head import split_head
from ..methods.analysis import LayerSetting, PreviewEngine
from .controls import config_controls, read_controls

__all__ = ["TunePanel", "tune"]

# Families shown as tabs, and the order their steps run in (structure, factorisation, sparsity, precision).
FAMILIES = ("pruning", "decomposition", "quantization")
_STEP_ORDER = ("prune.structured", "svd", "tucker", "cp", "tt", "prune", "prune.nm")
_OFF = "off"


def _methods_by_family() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {f: [] for f in FAMILIES}
    for m in list_methods():
        if m["family"] in out:
            out[m["family"]].append(m["name"])
    return {f: names for f, names in out.items() if names}


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
        self.families = _methods_by_family()
        self.method_pickers: dict[str, W.Dropdown] = {}
        self.controls: dict[str, dict[str, W.Widget]] = {}
        tabs = []
        for family, names in self.families.items():
            picker = W.Dropdown(options=[_OFF, *names], value=_OFF, description="method")
            picker.observe(self._on_change, names="value")
            self.method_pickers[family] = picker
            boxes = []
            for method in names:
                controls = config_controls(get_method(method).config_cls)
                self.controls[method] = controls
                for control in controls.values():
                    control.observe(self._on_change, names="value")
                boxes.append(W.VBox(list(controls.values()), layout=W.Layout(display="none")))
            self._method_boxes = getattr(self, "_method_boxes", {})
            self._method_boxes.update(dict(zip(names, boxes)))
            tabs.append(W.VBox([picker, *boxes]))
        self.tabs = W.Tab(children=tabs, titles=list(self.families))
        self.layer_rows: dict[str, tuple[W.Checkbox, dict[str, W.Text]]] = {}
        rows = []
        for layer in self.engine.names:
            include = W.Checkbox(value=True, indent=False, layout=W.Layout(width="28px"))
            overrides = {f: W.Text(placeholder=f"{f} default", layout=W.Layout(width="120px"))
                         for f in ("pruning", "decomposition") if f in self.families}
            include.observe(self._on_change, names="value")
            for text in overrides.values():
                text.observe(self._on_change, names="value")
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
        if self.applied_plan is not None:
            inplace, target = self._applied_where
            where = f"{self.name} in place" if inplace else f"as {target!r}"
            state = f"applied {self.applied_plan.describe()} {where}"
        else:
            state = "nothing applied yet"
        return f"jupyter_compress tuning panel on {self.name}: {state} (interactive in a notebook with its kernel)"

    def static_html(self) -> str:
        """A static summary of the panel: the applied plan (or the controls' plan) and the preview table."""
        if self.applied_plan is not None:
            inplace, target = self._applied_where
            where = f"{self.name} in place" if inplace else f"as <code>{html.escape(target)}</code>"
            head, plan = f"Applied {where}:", self.applied_plan
        else:
            head = "Nothing applied yet; the controls' plan:"
            try:
                plan = self.plan()
            except CompressError:
                plan = None
        body = f"<pre>{html.escape(plan.to_yaml())}</pre>" if plan is not None and plan.steps else "<p>(no method)</p>"
        return (f"<div class='jupyter-compress-tune-static'><b>jupyter_compress tuning panel</b> on "
                f"<code>{html.escape(self.name)}</code> (static copy: run the cell to tune again)<p>{head}</p>"
                f"{body}{self.summary.value}</div>")

    def _update_display(self) -> None:
        if self._display is not None:
            self._display.update(self._repr_mimebundle_(), raw=True)

    # -- state -> plan ------------------------------------------------------
    def _method(self, family: str) -> str | None:
        picker = self.method_pickers.get(family)
        return None if picker is None or picker.value == _OFF else picker.value

    def _override(self, layer: str, family: str) -> Any:
        text = self.layer_rows[layer][1].get(family)
        raw = text.value.strip() if text is not None else ""
        if not raw:
            return None
        try:
            value = tidy_float(float(raw[:-1]) / 100 if raw.endswith("%") else float(raw))
        except ValueError:
            raise CompressError(f"layer {layer}: override {raw!r} is not a number (e.g. 0.5 or 50%).") from None
        return int(value) if value > 1 and value.is_integer() else value

    def plan(self) -> Plan:
        """The plan the controls describe (what Apply runs and Generate cell writes)."""
        included = [n for n, (box, _) in self.layer_rows.items() if box.value]
        excluded = [n for n in self.layer_rows if n not in included]
        steps: list[Step] = []
        for family in self.families:
            method = self._method(family)
            if method is None:
                continue
            supported = get_method(method).supported
            names = [n for n in included if isinstance(self.model.get_submodule(n), supported)]
            key = "rank" if "rank" in self.controls[method] else "amount"
            special = {n: self._override(n, family) for n in names if family in self.layer_rows[n][1]}
            special = {n: v for n, v in special.items() if v is not None}
            config = read_controls(get_method(method).config_cls, self.controls[method])
            rest = [n for n in names if n not in special]
            if method == "prune.structured":  # layers it leaves alone must stay untouched, not just unselected
                steps.append((Step(config, Selector(exclude=tuple(excluded))), []))
                continue
            if rest:
                steps.append((Step(config, _layers_selector(rest)), rest))
            for layer, value in special.items():
                layer_config = read_controls(get_method(method).config_cls, self.controls[method], **{key: value})
                steps.append((Step(layer_config, _layers_selector([layer])), [layer]))
        steps.sort(key=lambda s: _STEP_ORDER.index(s[0].method) if s[0].method in _STEP_ORDER else len(_STEP_ORDER))
        self._step_layers = [names for _, names in steps]
        return Plan(tuple(step for step, _ in steps), seed=0)

    def _settings(self, plan: Plan) -> tuple[dict[str, LayerSetting], list[str]]:
        """Per-layer settings the preview engine can answer, and the methods it cannot (measured on Apply)."""
        settings: dict[str, LayerSetting] = {}
        other = []
        for step, layers in zip(plan.steps, self._step_layers):
            config = step.config
            if step.method == "svd" and config.solver == "exact" and config.round_to == 1:
                # the head SVD leaves alone (keep_head) is left alone in the preview too
                layers, _, _ = split_head(self.model, layers, "svd", getattr(config, "keep_head", False))
                for layer in layers:
                    settings.setdefault(layer, LayerSetting()).svd = config.rank
            elif step.method == "prune" and config.criterion == "magnitude" and config.scope == "layer":
                for layer in layers:
                    settings.setdefault(layer, LayerSetting()).prune = config.amount
            else:
                other.append(step.method)
        return settings, other

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
            self.message.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return
        self.message.value = ""
        settings, other = self._settings(plan)
        preview = self.engine.preview(settings)
        self.last_preview = preview
        self.summary.value = _summary_html(preview, other)
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
            problem = name_problem(self.target.value, _hidden_names())
            if problem:
                self.message.value = (f"<span style='color:#b00'>The name {html.escape(repr(self.target.value[:60]))} "
                                      f"{html.escape(problem)}: type another name in the 'as' box.</span>")
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
            self.message.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return None
        finally:
            self.progress.layout.display = self.stop_button.layout.display = "none"
            self.apply_button.disabled = False
        self.result = (result, report)
        self.applied_plan = plan  # the very object compress ran: Generate cell writes this
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
            plan, (inplace, target) = self.applied_plan, self._applied_where
            note = "Re-running this cell reproduces the applied result."
        else:
            plan, inplace, target = self.plan(), bool(self.inplace.value), self.target.value
            note = "Not applied in the panel yet: this is the controls' plan."
        text = plan.to_yaml()
        if Plan.from_yaml(text) != plan:  # cannot happen with the panel's tidy values; say so if it does
            note += " Warning: the plan's numbers were rounded when written."
        where = "--inplace" if inplace else f"--as {target}"
        return (f"%%compress {self.name} {where}\n# generated by jupyter_compress {__version__} tuning panel; "
                f"seed {plan.seed}. {note}\n{text}")

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


def _layers_selector(names: list[str]) -> Selector:
    """These layers, and what an earlier step made of them (an SVD turns 'fc1' into 'fc1.0', 'fc1.1')."""
    return Selector(layers=("re:(?:" + "|".join(re.escape(n) for n in names) + r")(?:\..+)?",))


def _summary_html(preview, other: list[str]) -> str:
    def ratio(a, b):
        return f"{a / b:.2f}x" if b else "inf"

    rows = [("parameters", preview.params_before, preview.params_after),
            ("non-zero parameters", preview.nonzeros_before, preview.nonzeros_after),
            ("bytes in memory", preview.bytes_before, preview.bytes_after)]
    def cell(q, v):  # bytes as the reports write them (KiB, MiB), counts with thousands separators
        return format_bytes(v) if q.startswith("bytes") else f"{v:,}"

    body = "".join(f"<tr><td>{q}</td><td>{cell(q, b)}</td><td>{cell(q, a)}</td><td>{ratio(b, a)}</td></tr>"
                   for q, b, a in rows)
    worst = max(preview.layers, key=lambda r: r["error"], default=None)
    notes = []
    if worst is not None:
        notes.append(f"largest weight error: {html.escape(worst['name'])} {worst['error']:.4f}")
    if not preview.exact:
        notes.append("errors of stacked methods are estimates")
    if other:
        notes.append("not in the instant preview (measured on Apply / the probe): " + ", ".join(sorted(set(other))))
    return (f"<table><tr><th></th><th>before</th><th>after (preview)</th><th>ratio</th></tr>{body}</table>"
            + "".join(f"<div>{n}</div>" for n in notes) + f"<div style='color:#888'>preview {preview.seconds * 1e3:.1f} ms"
            + "</div>")


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
