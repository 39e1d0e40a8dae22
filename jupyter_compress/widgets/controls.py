"""Widgets generated from a method config's field metadata (so they cannot drift from the configs)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ipywidgets as W

from ..core.config import Boolean, IntAtLeast, Interval, MethodConfig, OneOf

__all__ = ["config_controls", "read_controls"]

# Rank-like fields are driven as a fraction of parameters kept (the slider's natural scale).
_FRACTION_FIELDS = {"rank"}


def _control(field: dataclasses.Field, default: Any) -> W.Widget | None:
    check = field.metadata.get("check")
    label = field.name
    tooltip = field.metadata.get("help", "")
    style = {"description_width": "90px"}
    if field.name in _FRACTION_FIELDS:
        value = default if isinstance(default, float) else 0.5
        return W.FloatSlider(value=value, min=0.02, max=1.0, step=0.01, description=label, tooltip=tooltip,
                             continuous_update=True, style=style)
    if isinstance(check, Interval):
        hi = check.high - (0.01 if check.closed[1] == ")" else 0.0)
        lo = check.low + (0.01 if check.closed[0] == "(" else 0.0)
        if math.isinf(hi) or math.isinf(lo):
            return None
        return W.FloatSlider(value=float(default), min=lo, max=hi, step=0.01, description=label, tooltip=tooltip,
                             continuous_update=True, style=style)
    if isinstance(check, OneOf):
        return W.Dropdown(options=list(check.options), value=default, description=label, tooltip=tooltip,
                          style=style)
    if isinstance(check, Boolean):
        return W.Checkbox(value=bool(default), description=label, tooltip=tooltip, indent=False)
    if isinstance(check, IntAtLeast):
        return W.BoundedIntText(value=int(default), min=check.low, max=10**6, description=label, tooltip=tooltip,
                                style=style)
    return None  # mappings and other structured fields are set through the per-layer table or YAML


def config_controls(config_cls: type[MethodConfig]) -> dict[str, W.Widget]:
    """One control per field that has a natural widget, keyed by field name, defaults from the config."""
    defaults = config_cls()
    out = {}
    for field in dataclasses.fields(config_cls):
        control = _control(field, getattr(defaults, field.name))
        if control is not None:
            out[field.name] = control
    return out


def read_controls(config_cls: type[MethodConfig], controls: dict[str, W.Widget], **override: Any) -> MethodConfig:
    """The config the controls describe (``override`` wins); validation is the config's own."""
    values = {name: control.value for name, control in controls.items()}
    values.update(override)
    return config_cls(**values)
