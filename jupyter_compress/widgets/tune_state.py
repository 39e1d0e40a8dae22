"""The tuning panel's state, without widgets: which method each family uses, each method's config values,
which layers are included and their per-layer overrides; and the pure functions on it (the plan it
describes, the instant preview's settings, the summary, the static copy, the generated cell, name checks).

Everything is read from the methods' declarations (:class:`~jupyter_compress.core.registry.Method`): the
families and their order, the step order, the field a per-layer override sets (``dial``), the fields shown
(``controls``), coupled layers (``units``) and what the instant preview can answer (``preview``). No method
is named here, so a newly registered method shows up in the panel as it is.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterable
from typing import Any

from torch import nn

from .. import __version__
from ..core.names import name_problem
from ..core.plan import Plan, Step, tidy_float
from ..core.registry import Method, method_for_config, methods_in_order
from ..core.report import format_bytes
from ..core.selection import Selector
from ..errors import CompressError
from ..methods.analysis import LayerSetting

__all__ = ["OFF", "TuneState", "panel_families", "layers_selector", "parse_override", "summary_html",
           "summary_text", "static_html", "cell_code", "name_message", "error_html"]

OFF = "off"  # the picker's entry for "no method of this family"
_ANALYSES = frozenset(f.name for f in dataclasses.fields(LayerSetting))  # what the preview engine answers


def panel_families() -> dict[str, list[Method]]:
    """The families shown as tabs, in the order their first method runs (the canonical stage order); each
    family's methods by name (the picker's order)."""
    families: dict[str, list[Method]] = {}
    for method in methods_in_order():
        if method.in_panel:
            families.setdefault(method.family, []).append(method)
    return {family: sorted(methods, key=lambda m: m.name) for family, methods in families.items()}


PATTERN_CHARS = 900  # under the selector's bound on one pattern (1,000), which a plan file is held to


def layers_selector(names: Iterable[str]) -> Selector:
    """These layers, and what an earlier step made of them (a factorisation turns 'fc1' into 'fc1.0', 'fc1.1'):
    one regex per run of names that fits in ``PATTERN_CHARS`` (MiniLM's 36 Linears take 1,800 characters)."""
    patterns, run = [], []

    def close() -> None:
        if run:
            patterns.append("re:(?:" + "|".join(run) + r")(?:\..+)?")
            run.clear()

    for name in names:
        escaped = re.escape(name)
        if run and len("|".join(run)) + len(escaped) + 20 > PATTERN_CHARS:
            close()
        run.append(escaped)
    close()
    return Selector(layers=tuple(patterns))


def parse_override(layer: str, raw: str) -> Any:
    """A per-layer override as typed (``0.5``, ``50%``, ``16``); None when empty."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = tidy_float(float(raw[:-1]) / 100 if raw.endswith("%") else float(raw))
    except ValueError:
        raise CompressError(f"layer {layer}: override {raw!r} is not a number (e.g. 0.5 or 50%).") from None
    return int(value) if value > 1 and value.is_integer() else value


def _tidy(value: Any) -> Any:
    return tidy_float(value) if isinstance(value, float) else value


class TuneState:
    """What the panel's controls say, as plain data; the view writes into it and reads plans out of it."""

    def __init__(self, model: nn.Module, layers: Iterable[str]):
        self.model = model
        self.layers = list(layers)
        self.families = panel_families()
        self.methods = {m.name: m for methods in self.families.values() for m in methods}
        self.picked: dict[str, str | None] = dict.fromkeys(self.families)
        self.values: dict[str, dict[str, Any]] = {name: {} for name in self.methods}  # unset: the config default
        self.included = dict.fromkeys(self.layers, True)
        self.overrides: dict[str, dict[str, str]] = {n: {} for n in self.layers}  # layer -> family -> text
        # the families a per-layer override column is shown for: those with a method that has a dial
        self.override_families = [f for f, methods in self.families.items() if any(m.dial for m in methods)]
        self._planned: tuple[Plan, list[list[str]]] | None = None

    # -- events ---------------------------------------------------------------
    def pick(self, family: str, method: str | None) -> None:
        if method is not None and method != OFF and method not in (m.name for m in self.families[family]):
            raise CompressError(f"{method!r} is not a method of the {family} family here.")
        self.picked[family] = None if method in (None, OFF) else method

    def set_value(self, method: str, field: str, value: Any) -> None:
        self.values[method][field] = value

    def set_values(self, method: str, values: dict[str, Any]) -> None:
        self.values[method].update(values)

    def include(self, layer: str, included: bool = True) -> None:
        self.included[layer] = bool(included)

    def set_override(self, layer: str, family: str, text: str) -> None:
        self.overrides[layer][family] = text

    # -- reading ----------------------------------------------------------------
    def config(self, method: str, **override: Any) -> Any:
        """The config the values describe (``override`` wins); validation is the config's own."""
        values = {name: _tidy(value) for name, value in self.values[method].items()}
        values.update({name: _tidy(value) for name, value in override.items()})
        return self.methods[method].config_cls(**values)

    def override(self, layer: str, family: str) -> Any:
        return parse_override(layer, self.overrides[layer].get(family, ""))

    def planned(self) -> list[tuple[Step, list[str]]]:
        """The plan's steps with the panel layers each one covers, in the canonical step order."""
        included = [n for n in self.layers if self.included[n]]
        excluded = tuple(n for n in self.layers if not self.included[n])
        steps: list[tuple[Method, Step, list[str]]] = []
        for family, name in self.picked.items():
            if name is None:
                continue
            method = self.methods[name]
            config = self.config(name)
            layers = [n for n in included if isinstance(self.model.get_submodule(n), method.supported_for(config))]
            special = {n: self.override(n, family) for n in layers}
            special = {n: v for n, v in special.items() if v is not None}
            if method.units is not None:
                # coupled layers: the layers left out must stay untouched, not just unselected (and the whole
                # group is pruned at one setting, so per-layer overrides do not apply)
                steps.append((method, Step(config, Selector(exclude=excluded)), layers))
                continue
            if special and method.dial is None:
                raise CompressError(f"layer {next(iter(special))}: {name} has no per-layer setting; clear the "
                                    f"override.")
            rest = [n for n in layers if n not in special]
            if rest:
                steps.append((method, Step(config, layers_selector(rest)), rest))
            for layer, value in special.items():
                steps.append((method, Step(self.config(name, **{method.dial: value}), layers_selector([layer])),
                              [layer]))
        steps.sort(key=lambda s: s[0].stage_index)  # stable: a method's per-layer steps follow its own
        return [(step, layers) for _, step, layers in steps]

    def plan(self) -> Plan:
        """The plan the controls describe (what Apply runs and Generate cell writes)."""
        planned = self.planned()
        plan = Plan(tuple(step for step, _ in planned), seed=0)
        self._planned = (plan, [layers for _, layers in planned])
        return plan

    def step_layers(self, plan: Plan) -> list[list[str]]:
        """The panel layers each step of ``plan`` covers (the plan :meth:`plan` made last, or any plan)."""
        if self._planned is not None and self._planned[0] is plan:
            return self._planned[1]
        out = []
        for step in plan.steps:
            try:
                picked = set(step.selector.select(self.model, method_for_config(step.config).supported_for(step.config)))
            except CompressError:  # selects nothing in this model
                picked = set()
            out.append([n for n in self.layers if n in picked])
        return out

    def settings(self, plan: Plan) -> tuple[dict[str, LayerSetting], list[str]]:
        """Per-layer settings the instant preview can answer (each method's ``preview`` hook), and the
        methods it cannot (measured on Apply and by the probe)."""
        settings: dict[str, LayerSetting] = {}
        other = []
        for step, layers in zip(plan.steps, self.step_layers(plan)):
            method = method_for_config(step.config)
            answer = method.preview(step.config, self.model, layers) if method.preview is not None else None
            if answer is None or any(kind not in _ANALYSES for kind, _ in answer.values()):
                other.append(method.name)
                continue
            for layer, (kind, value) in answer.items():
                setattr(settings.setdefault(layer, LayerSetting()), kind, value)
        return settings, other


# -- rendering (pure) ---------------------------------------------------------------
def error_html(text: str) -> str:
    return f"<span style='color:#b00'>{html.escape(text)}</span>"


def summary_html(preview, other: list[str]) -> str:
    """The preview table (before / after / ratio) and its notes."""
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


def summary_text(name: str, applied: Plan | None, inplace: bool, target: str) -> str:
    """One line: what the panel is on and what it applied (the widget's text fallback)."""
    if applied is not None:
        where = f"{name} in place" if inplace else f"as {target!r}"
        state = f"applied {applied.describe()} {where}"
    else:
        state = "nothing applied yet"
    return f"jupyter_compress tuning panel on {name}: {state} (interactive in a notebook with its kernel)"


def static_html(name: str, applied: Plan | None, inplace: bool, target: str, controls_plan: Plan | None,
                summary: str) -> str:
    """A static summary of the panel: the applied plan (or the controls' plan) and the preview table."""
    if applied is not None:
        where = f"{name} in place" if inplace else f"as <code>{html.escape(target)}</code>"
        head, plan = f"Applied {where}:", applied
    else:
        head, plan = "Nothing applied yet; the controls' plan:", controls_plan
    body = f"<pre>{html.escape(plan.to_yaml())}</pre>" if plan is not None and plan.steps else "<p>(no method)</p>"
    return (f"<div class='jupyter-compress-tune-static'><b>jupyter_compress tuning panel</b> on "
            f"<code>{html.escape(name)}</code> (static copy: run the cell to tune again)<p>{head}</p>"
            f"{body}{summary}</div>")


def cell_code(plan: Plan, name: str, inplace: bool, target: str, applied: bool) -> str:
    """The %%compress cell for ``plan``; it says whether the plan is the applied one or the controls'."""
    note = ("Re-running this cell reproduces the applied result." if applied
            else "Not applied in the panel yet: this is the controls' plan.")
    text = plan.to_yaml()
    if Plan.from_yaml(text) != plan:  # cannot happen with the panel's tidy values; say so if it does
        note += " Warning: the plan's numbers were rounded when written."
    where = "--inplace" if inplace else f"--as {target}"
    return (f"%%compress {name} {where}\n# generated by jupyter_compress {__version__} tuning panel; "
            f"seed {plan.seed}. {note}\n{text}")


def name_message(target: str, hidden: Iterable[str] = ()) -> str | None:
    """Why Apply must not bind the result to ``target`` (HTML for the panel), or None."""
    problem = name_problem(target, set(hidden))
    if not problem:
        return None
    return (f"<span style='color:#b00'>The name {html.escape(repr(target[:60]))} {html.escape(problem)}: type "
            f"another name in the 'as' box.</span>")
