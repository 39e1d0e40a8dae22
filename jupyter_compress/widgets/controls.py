"""Widgets generated from a method config's field metadata (so they cannot drift from the configs)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
from traitlets import validate

from ..core.config import Boolean, IntAtLeast, Interval, MethodConfig, OneOf
from ..core.plan import tidy_float

__all__ = ["StepSlider", "config_controls"]


class StepSlider(W.FloatSlider):
    """A FloatSlider whose value is always on its step grid and written tidily (``0.8``, never
    ``0.8000000000000002``), and which keeps what Python set against the front end's echo.

    The browser's slider snaps a value it is sent to its own grid (``min + n * step`` in JavaScript
    floats) and writes that back; a view rendered while updates are in flight can write back the value it
    started with. So a value from the front end that differs from the kernel's by float noise only is
    dropped (the kernel's stands), and within ``echo_window_s`` of a set from Python a different value
    from the front end is refused and the kernel's value sent again. Later moves by the user are taken,
    snapped to the grid (float noise is tidied here without a correction sent back mid-drag).
    """

    echo_window_s = 1.5

    def __init__(self, **kwargs: Any):
        self._python_set_at = -math.inf
        super().__init__(**kwargs)

    def snap(self, value: float) -> float:
        value = min(max(float(value), self.min), self.max)
        if self.step:
            value = min(max(self.min + round((value - self.min) / self.step) * self.step, self.min), self.max)
        return tidy_float(value)

    @validate("value")
    def _validate_value(self, proposal):
        value = self.snap(proposal["value"])
        if "value" not in self._property_lock:  # set from Python, not by the browser
            self._python_set_at = time.monotonic()
        return value

    def set_state(self, sync_data: dict) -> None:
        if "value" in sync_data:
            try:
                incoming = float(sync_data["value"])
            except (TypeError, ValueError):
                incoming = None
            tolerance = 1e-9 * max(1.0, abs(self.value))
            if incoming is not None and abs(incoming - self.value) <= tolerance:
                sync_data = {k: v for k, v in sync_data.items() if k != "value"}  # our own value, echoed
            elif time.monotonic() - self._python_set_at < self.echo_window_s:
                sync_data = {k: v for k, v in sync_data.items() if k != "value"}  # stale: Python's stands
                self.send_state("value")
            elif incoming is not None and abs(self.snap(incoming) - incoming) <= tolerance:
                # the user's move, off the grid by float noise only: keep it tidy here without sending the
                # tidy value back (a correction arriving mid-drag would pull the handle back)
                sync_data = {**sync_data, "value": self.snap(incoming)}
        if sync_data:
            super().set_state(sync_data)

# Rank-like fields are driven as a fraction of parameters kept (the slider's natural scale).
_FRACTION_FIELDS = {"rank"}


def _control(field: dataclasses.Field, default: Any) -> W.Widget | None:
    check = field.metadata.get("check")
    label = field.name
    tooltip = field.metadata.get("help", "")
    style = {"description_width": "90px"}
    if field.name in _FRACTION_FIELDS:
        value = default if isinstance(default, float) else 0.5
        return StepSlider(value=value, min=0.02, max=1.0, step=0.01, description=label, tooltip=tooltip,
                          continuous_update=True, style=style)
    if isinstance(check, Interval):
        hi = check.high - (0.01 if check.closed[1] == ")" else 0.0)
        lo = check.low + (0.01 if check.closed[0] == "(" else 0.0)
        if math.isinf(hi) or math.isinf(lo):
            return None
        return StepSlider(value=float(default), min=tidy_float(lo), max=tidy_float(hi), step=0.01,
                          description=label, tooltip=tooltip, continuous_update=True, style=style)
    if isinstance(check, OneOf):
        return W.Dropdown(options=list(check.options), value=default, description=label, tooltip=tooltip,
                          style=style)
    if isinstance(check, Boolean):
        return W.Checkbox(value=bool(default), description=label, tooltip=tooltip, indent=False)
    if isinstance(check, IntAtLeast):
        return W.BoundedIntText(value=int(default), min=check.low, max=10**6, description=label, tooltip=tooltip,
                                style=style)
    return None  # mappings and other structured fields are set through the per-layer table or YAML


def config_controls(config_cls: type[MethodConfig], fields: Sequence[str] | None = None) -> dict[str, W.Widget]:
    """One control per field that has a natural widget (among ``fields``, the method's declared ``controls``;
    None: every field), keyed by field name, defaults from the config."""
    defaults = config_cls()
    out = {}
    for field in dataclasses.fields(config_cls):
        if fields is not None and field.name not in fields:
            continue
        control = _control(field, getattr(defaults, field.name))
        if control is not None:
            out[field.name] = control
    return out
