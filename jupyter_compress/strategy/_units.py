"""What a sweep varies: the settings of a method (its "ratio" axis) and the units it acts on.

Methods are discovered in the registry, so a newly registered method joins the sweeps by itself: a
config with an ``amount`` field is swept over the ratios; one with a fractional ``rank`` over
``rank = 1 - ratio`` (the fraction of parameters kept); one with ``bits`` over its allowed bit widths
(ratio = 1 - bits/32); any other is measured once at its defaults.

Units are single layers, unless the method declares ``units`` (structured pruning: layers whose output
channels are coupled by a residual addition, a concatenation or attention shrink together, so each
coupled group is measured as one unit).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.registry import Method, methods_in_order
from ..core.selection import Selector
from ..errors import SelectorError

__all__ = ["levels_for", "units_for", "default_methods", "available", "unit_name"]


def available(has_data: bool, has_inputs: bool) -> frozenset[str]:
    """The requirements that what the caller gave meets: data brings inputs too."""
    # calibration is measured on data only: one example batch calibrates too poorly to compare methods
    return frozenset(({"data", "example_inputs", "calibration"} if has_data else set())
                     | ({"example_inputs"} if has_inputs else set()))


def default_methods(has_data: bool, has_inputs: bool) -> list[str]:
    """Registered per-layer methods worth a default sweep (``sweep`` declared, not ``whole_model``) whose
    requirements the available data meets, in step order."""
    have = available(has_data, has_inputs)
    return [m.name for m in methods_in_order() if m.sweep and not m.whole_model and m.requires <= have]


def levels_for(method: Method, ratios: tuple[float, ...]) -> list[tuple[float | None, dict[str, Any]]]:
    """``[(ratio, config kwargs)]``: the settings to measure (see the module docstring)."""
    fields = method.config_cls.describe_fields()
    names = set(method.config_cls.field_names())
    if "amount" in names:
        return [(float(r), {"amount": float(r)}) for r in ratios]
    if "rank" in names:
        return [(float(r), {"rank": round(1.0 - float(r), 6)}) for r in ratios if r < 1]
    if "bits" in names:
        choices = next((f.get("choices") for f in fields if f.get("name") == "bits"), None) or (8, 4)
        return [(round(1 - int(b) / 32, 6), {"bits": int(b)}) for b in sorted(choices, reverse=True)]
    return [(None, {})]


def unit_name(layers: list[str]) -> str:
    if len(layers) <= 3:
        return "+".join(layers)
    return f"{layers[0]} (+{len(layers) - 1} coupled)"


def units_for(method: Method, model: nn.Module, layers: Any, example_inputs: Any) -> list[list[str]]:
    """The units (lists of layer names) ``method`` is measured on: its declared ``units`` (coupled groups)
    or one unit per layer; empty when it handles no layer."""
    selector = layers if isinstance(layers, Selector) else Selector(layers=() if layers is None else layers)
    try:
        names = selector.select(model, method.supported, method.name)
    except SelectorError:
        return []
    if method.units is not None:
        return method.units(model, names, example_inputs)
    return [[n] for n in names]
