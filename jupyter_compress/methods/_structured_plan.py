"""Structured pruning's declarations for the layers above: the units a sweep measures (coupled groups),
the amount that meets a size budget, and how a global-scope step is pinned for replay.

Kept apart from ``structured.py`` (the apply function) so that each stays small; only ``structured.py``
registers them.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ..errors import CompressError

__all__ = ["coupled_groups", "units", "structured_amount", "at_budget", "pin"]


def coupled_groups(model: nn.Module, example_inputs: Any, candidates: list[str]) -> list[list[str]]:
    """Groups of ``candidates`` whose output channels Torch-Pruning says must be pruned together."""
    from .structured import ROOTS, build_graph

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


def units(model: nn.Module, names: list[str], example_inputs: Any) -> list[list[str]]:
    """Layers whose outputs are coupled (a residual addition, a concatenation, attention) shrink together,
    so each coupled group is one unit; without example inputs nothing can be traced (no unit)."""
    if example_inputs is None:
        return []
    try:
        return coupled_groups(model, example_inputs, names)
    except Exception as exc:  # noqa: BLE001 - an untraceable model: structured pruning cannot be measured on it
        from .structured import StructuredPruneConfig

        raise CompressError(f"Could not find the coupled layer groups for structured pruning "
                            f"({type(exc).__name__}: {exc}); leave {StructuredPruneConfig.method!r} out of "
                            f"methods.") from exc


def _kept_fraction(report) -> float:
    rows = report.compressed_rows
    before = sum(r.params_before for r in rows)
    return sum(r.params_after for r in rows) / before if before else 1.0


def structured_amount(model: nn.Module, budget: float, example_inputs: Any, data: Any = None) -> float:
    """The channel fraction to remove so that the pruned layers keep about ``budget`` of their
    parameters: a guess from parameters ~ (1 - amount)^2, then one correction of the exponent from
    a dry run (:func:`~jupyter_compress.core.apply.preview`); the closer of the two is returned."""
    from ..core.apply import preview
    from .structured import StructuredPruneConfig

    def kept(amount: float) -> float:
        return _kept_fraction(preview(model, StructuredPruneConfig(amount=amount), example_inputs=example_inputs,
                                      data=data))

    a0 = min(0.9, max(0.05, 1 - math.sqrt(budget)))
    k0 = kept(a0)
    if not 0 < k0 < 1:
        return a0
    power = math.log(k0) / math.log(1 - a0)
    a1 = min(0.9, max(0.05, 1 - budget ** (1 / power)))
    if abs(a1 - a0) < 0.01:
        return a0
    return a1 if abs(kept(a1) - budget) < abs(k0 - budget) else a0


def at_budget(model: nn.Module, budget: float, *, example_inputs: Any = None, **_: Any):
    """Configs for ``compare`` at a parameter budget: a callable (the amount search runs when the candidate
    is measured), or why the method cannot run here."""
    from .structured import StructuredPruneConfig

    if example_inputs is None:
        return "needs example_inputs to trace the layers' dependencies"
    return lambda: [StructuredPruneConfig(amount=round(structured_amount(model, budget, example_inputs), 3))]


def pin(step: dict[str, Any], rows: list[Any]) -> dict[str, Any]:
    """A global-scope step pinned to the counts it chose.

    Global scope picks per-layer counts from the weights, so replaying it on a fresh model could pick
    other counts (and shapes). The step's rows say exactly how many units each layer lost: the pinned step
    asks for those counts per layer, which any weights reproduce.
    """
    if step.get("scope") != "global":
        return step
    ratios = {}
    for row in rows:
        count = row.detail.get("removed_out", row.detail.get("removed_heads"))
        if count is not None and row.detail.get("of"):
            ratios[row.name] = count / row.detail["of"]
    return {**step, "scope": "layer", "ratios": ratios, "amount": 0.0}
