"""Planning for structured pruning: which groups, how many channels each, which channels.

Torch-Pruning gives the coupled groups and their importance; what we add here is the choice of
counts (per layer, per-layer ratios, or one global ranking), whole-head blocks for attention, and
rounding to multiples for fast kernels.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

__all__ = ["attention_heads", "ratio_for", "n_remove", "choose_global", "block_scores"]


def ratio_for(name: str, ratios: dict[str, float] | None, default: float) -> float:
    """The ratio given for ``name`` in ``ratios`` (exact name first, then the first ``re:`` pattern)."""
    if not ratios:
        return default
    if name in ratios:
        return ratios[name]
    for key, value in ratios.items():
        if key.startswith("re:") and re.fullmatch(key[3:], name):
            return value
    return default


def n_remove(units: int, amount: float, round_to: int = 1) -> int:
    """How many of ``units`` to remove for ``amount``, keeping at least one and a multiple of ``round_to``."""
    keep = max(1, units - int(round(amount * units)))
    if round_to > 1:
        keep = min(units, max(round_to, int(math.ceil(keep / round_to)) * round_to))
    return units - keep


def attention_heads(model: nn.Module) -> dict[str, tuple[str, int]]:
    """``{linear name: (attention module name, head size)}`` for q/k/v Linears of attention modules
    that declare their heads (``num_attention_heads`` + ``attention_head_size`` as in BERT/MiniLM, or
    ``num_heads`` + ``head_dim``)."""
    out: dict[str, tuple[str, int]] = {}
    for name, module in model.named_modules():
        size = getattr(module, "attention_head_size", None) or getattr(module, "head_dim", None)
        heads = getattr(module, "num_attention_heads", None) or getattr(module, "num_heads", None)
        if isinstance(size, int) and isinstance(heads, int) and size > 0 and heads > 1:
            for child_name, child in module.named_children():
                if isinstance(child, nn.Linear) and child.out_features == size * heads:
                    out[f"{name}.{child_name}" if name else child_name] = (name, size)
    return out


def block_scores(scores: torch.Tensor, block: int) -> torch.Tensor:
    """Per-block sums of channel scores (a block = one attention head)."""
    return scores.view(-1, block).sum(dim=1)


def choose_global(scores: dict[str, torch.Tensor], amount: float, round_to: dict[str, int],
                  max_fraction: float = 0.9) -> dict[str, int]:
    """Units to remove per group from one ranking of all groups' units.

    Each group's scores are divided by their mean so groups of different scale compare (as
    Torch-Pruning's global mode does); no group loses more than ``max_fraction`` of its units.
    """
    pooled = []
    for name, s in scores.items():
        s = s.double()
        normed = s / s.mean().clamp_min(1e-12)
        pooled += [(float(v), name) for v in normed]
    pooled.sort(key=lambda item: item[0])
    target = int(round(amount * len(pooled)))
    caps = {n: int(max_fraction * len(s)) for n, s in scores.items()}
    counts = dict.fromkeys(scores, 0)
    taken = 0
    for _, name in pooled:
        if taken >= target:
            break
        if counts[name] < caps[name]:
            counts[name] += 1
            taken += 1
    out = {}
    for name, count in counts.items():
        units = len(scores[name])
        out[name] = n_remove(units, count / units, round_to.get(name, 1)) if count else 0
    return out
