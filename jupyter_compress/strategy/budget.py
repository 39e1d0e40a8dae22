"""Default plans per method family at a matched size budget, found through the registry.

``budget`` is the fraction of the targeted layers' parameters to keep (0.5 = half). Families the
registry gains later (quantization, distillation) join with their method's default config, since
their size effect is fixed by the format (e.g. int8) rather than by an amount.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from ..core.apply import preview
from ..core.registry import get_method, list_methods

__all__ = ["Candidate", "default_candidates", "structured_amount"]

# Method preferred to stand for each family (the rest of the family is reachable with methods=).
_PREFERRED = ("prune", "prune.structured", "svd", "quantize", "quantize.dynamic", "distill")


@dataclasses.dataclass
class Candidate:
    label: str
    family: str
    methods: tuple[str, ...]
    plan: Callable[[], list[Any]] | list[Any]  # configs; a callable is resolved lazily (searches)
    needs_data: bool = False
    skip: str | None = None  # why the candidate cannot run on this model / data


def _has(model: nn.Module, kind: type) -> bool:
    return any(isinstance(m, kind) for m in model.modules())


def _kept_fraction(report) -> float:
    rows = report.compressed_rows
    before = sum(r.params_before for r in rows)
    return sum(r.params_after for r in rows) / before if before else 1.0


def structured_amount(model: nn.Module, budget: float, example_inputs: Any, data: Any = None) -> float:
    """The channel fraction to remove so that the pruned layers keep about ``budget`` of their
    parameters: a guess from parameters ~ (1 - amount)^2, then one correction of the exponent from
    a dry run (:func:`~jupyter_compress.core.apply.preview`); the closer of the two is returned."""
    from ..methods import StructuredPruneConfig

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


def default_candidates(model: nn.Module, budget: float, *, example_inputs: Any = None, data: Any = None,
                       labelled: bool = False) -> list[Candidate]:
    """One candidate per family (two for pruning: unstructured and structured) with its config at
    ``budget``; candidates that cannot run here carry ``skip`` with the reason."""
    from ..methods import PruneConfig, StructuredPruneConfig, SVDConfig, TuckerConfig

    out = [Candidate("pruning, unstructured", "pruning", ("prune",), [PruneConfig(amount=1 - budget)])]
    if example_inputs is None:
        out.append(Candidate("pruning, structured", "pruning", ("prune.structured",), [], True,
                             "needs example_inputs to trace the layers' dependencies"))
    else:
        out.append(Candidate("pruning, structured", "pruning", ("prune.structured",), lambda: [
            StructuredPruneConfig(amount=round(structured_amount(model, budget, example_inputs), 3))], True))
    decomp = [SVDConfig(rank=budget)] if _has(model, nn.Linear) else []
    decomp += [TuckerConfig(rank=budget)] if _has(model, nn.Conv2d) else []
    out.append(Candidate("low-rank (" + " + ".join(c.method for c in decomp) + ")", "decomposition",
                         tuple(c.method for c in decomp), decomp,
                         skip=None if decomp else "no Linear or Conv2d layer to factorise"))
    by_family: dict[str, list[str]] = {}
    for m in list_methods():
        by_family.setdefault(m["family"], []).append(m["name"])
    for family, names in sorted(by_family.items()):
        if family in ("pruning", "decomposition"):
            continue
        name = next((n for n in _PREFERRED if n in names), sorted(names)[0])
        method = get_method(name)
        skip = None
        if family == "distillation" and not labelled:
            skip = "needs labelled training data (data=(X, y))"
        elif method.needs_data and data is None and example_inputs is None:
            skip = "needs data"
        out.append(Candidate(f"{family} ({name})", family, (name,), lambda m=method: [m.config_cls()],
                             method.needs_data, skip))
    return out
