"""What a sweep varies: the settings of a method (its "ratio" axis) and the units it acts on.

Methods are discovered in the registry, so a newly registered method joins the sweeps by itself: a
config with an ``amount`` field is swept over the ratios; one with a fractional ``rank`` over
``rank = 1 - ratio`` (the fraction of parameters kept); one with ``bits`` over its allowed bit widths
(ratio = 1 - bits/32); any other is measured once at its defaults.

Units are single layers, except for structured pruning: layers whose output channels are coupled
(by a residual addition, a concatenation, attention) can only shrink together, so Torch-Pruning's
dependency graph gives the groups and each group is measured as one unit.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.registry import Method, get_method, method_names
from ..core.selection import Selector
from ..errors import CompressError, SelectorError

__all__ = ["levels_for", "units_for", "coupled_groups", "default_methods", "unit_name"]

# Variants left out of default sweeps: CP's ALS and TT are slow on every layer and answer the same
# question as Tucker/SVD; N:M is one fixed pattern. They are swept when asked for by name.
_NOT_BY_DEFAULT = {"cp", "tt", "prune.nm"}
_WHOLE_MODEL_FAMILIES = {"distillation"}


def default_methods(has_data: bool, has_inputs: bool) -> list[str]:
    """Registered per-layer methods worth a default sweep given what data is available."""
    out = []
    for name in method_names():
        method = get_method(name)
        if name in _NOT_BY_DEFAULT or method.family in _WHOLE_MODEL_FAMILIES:
            continue
        if method.needs_data and not (has_data or (has_inputs and name == "prune.structured")):
            continue
        out.append(name)
    return out


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


def coupled_groups(model: nn.Module, example_inputs: Any, candidates: list[str]) -> list[list[str]]:
    """Groups of ``candidates`` whose output channels Torch-Pruning says must be pruned together."""
    from ..methods.structured import ROOTS, build_graph

    graph = build_graph(model, example_inputs)
    name_of = {m: n for n, m in model.named_modules()}
    wanted, groups, seen = set(candidates), [], set()
    for group in graph.get_all_groups(root_module_types=ROOTS):
        members = sorted({name_of.get(dep.target.module) for dep, _ in group
                          if graph.is_out_channel_pruning_fn(dep.handler)} & wanted,
                         key=candidates.index)
        if members and not seen & set(members):
            groups.append(members)
            seen |= set(members)
    return groups


def units_for(method: Method, model: nn.Module, layers: Any, example_inputs: Any) -> list[list[str]]:
    """The units (lists of layer names) ``method`` is measured on; empty when it handles no layer."""
    selector = layers if isinstance(layers, Selector) else Selector(layers=() if layers is None else layers)
    try:
        names = selector.select(model, method.supported, method.name)
    except SelectorError:
        return []
    if method.name == "prune.structured":
        if example_inputs is None:
            return []
        try:
            return coupled_groups(model, example_inputs, names)
        except Exception as exc:  # an untraceable model: structured pruning cannot be measured on it
            raise CompressError(f"Could not find the coupled layer groups for structured pruning "
                                f"({type(exc).__name__}: {exc}); leave 'prune.structured' out of methods.") from exc
    return [[n] for n in names]
