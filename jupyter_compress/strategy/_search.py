"""From sensitivity points to a mixed plan: a greedy choice per unit under an estimated drop budget.

Each measured point is an option for its unit: (method, setting, layers), its measured drop and what
it saves. Drops of different layers are assumed to add up (a first-order estimate; ``auto`` verifies
every plan it keeps with a real evaluation). The greedy repeatedly takes the move with the most saving
per unit of added drop, where a move may replace the options already chosen on the same layers, until
no move fits the budget. Under ``auto(objective='disk')`` an option may be a stack of options of different
stages on the same layers (``_disk.Stack``: prune, then share), applied as its parts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..core.plan import Plan, Step
from ..core.registry import get_method
from ..core.selection import Selector

__all__ = ["Option", "options_from", "greedy", "plan_of"]

@dataclasses.dataclass(frozen=True)
class Option:
    method: str
    family: str
    setting: tuple[tuple[str, Any], ...]
    layers: tuple[str, ...]
    drop: float
    saving: float

    @property
    def stage(self) -> tuple[int, int, str]:
        """Where the method's step goes in a plan: its declared stage (structure first, as it changes the
        shapes later steps see; then factorization, sparsity, precision last)."""
        return get_method(self.method).stage_index

    @property
    def parts(self) -> tuple[Option, ...]:
        """The options this one applies: itself (a stack of several is ``_disk.Stack``)."""
        return (self,)


def options_from(points: list[dict[str, Any]], objective: str) -> list[Option]:
    """Options from sensitivity points; the saving is stored bytes (sparse-aware) for ``size``, dense
    bytes for ``latency`` (zeros inside dense tensors do not make a model faster)."""
    out = []
    for p in points:
        if p.get("skipped"):
            continue
        after = p["storage_after"] if objective == "size" else p["bytes_after"]
        saving = float(p["bytes_before"] - after)
        if saving > 0:
            out.append(Option(p["method"], p["family"], tuple(sorted(p["setting"].items())), tuple(p["layers"]),
                              max(float(p["drop"]), 0.0), saving))
    return out


def greedy(options: list[Option], budget: float, start: tuple[Option, ...] = ()) -> tuple[Option, ...]:
    """The options chosen under an estimated total drop of at most ``budget``."""
    chosen = list(start)
    eps = max(budget, 1e-6) * 1e-3
    while True:
        total = sum(o.drop for o in chosen)
        best, best_score = None, 0.0
        for opt in options:
            if opt in chosen:
                continue
            replaced = [c for c in chosen if set(c.layers) & set(opt.layers)]
            gain = opt.saving - sum(c.saving for c in replaced)
            added = opt.drop - sum(c.drop for c in replaced)
            if gain <= 0 or total + added > budget + 1e-12:
                continue
            score = gain / max(added, eps)
            if score > best_score:
                best, best_score = (opt, replaced), score
        if best is None:
            return tuple(sorted(chosen, key=lambda o: (o.stage, o.layers)))
        opt, replaced = best
        chosen = [c for c in chosen if c not in replaced] + [opt]


def plan_of(chosen: tuple[Option, ...], seed: int = 0) -> Plan:
    """An ordinary plan: one step per (method, setting), selecting its layers by name, in stage order (a stack's
    options each go to their own step, so a unit is pruned before its weights are shared)."""
    steps: dict[tuple, list[str]] = {}
    for opt in sorted((p for o in chosen for p in o.parts), key=lambda o: (o.stage, o.method)):
        steps.setdefault((opt.method, opt.setting), []).extend(opt.layers)
    return Plan(tuple(Step(get_method(method).config_cls(**dict(setting)), Selector(layers=tuple(layers)))
                      for (method, setting), layers in steps.items()), seed=seed)
