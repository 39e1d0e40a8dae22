"""Unstructured magnitude pruning: the smallest weights (by |w|) are set to zero.

Scope ``layer`` removes the same fraction in every selected layer; ``global``
ranks all selected weights together (layers with many small weights lose more).
The tensors stay dense, so the model is no smaller in memory and no faster;
the report gives what a sparse encoding of the weights would take.

Torch's own ``torch.nn.utils.prune`` re-parametrizes modules (``weight_orig`` and
a mask buffer, a forward pre-hook), which changes the state_dict keys and doubles
the weight memory; we want a plain module with zeros, so we compute masks here.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..core.config import IntAtLeast, Interval, MethodConfig, param
from ..core.metrics import relative_error, sparse_encoding_bytes
from ..core.registry import MethodResult, register_method
from ..errors import InvalidConfigError
from ._common import LINEAR_TYPES, is_conv1d, layer_row, linear_view
from ._taylor import taylor_scores

__all__ = ["PruneConfig"]

# a transformers Conv1D (GPT-2) stays a Conv1D, its weight (in, out) masked as the equivalent Linear's
PRUNABLE = (*LINEAR_TYPES, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig(MethodConfig):
    """Unstructured magnitude pruning of Linear / Conv weights."""

    amount: float = param(0.5, help="fraction of the weights to set to zero", check=Interval(0.0, 1.0, "[)"))
    scope: str = param("layer", help="'layer': the same fraction in each layer; 'global': rank all "
                       "selected weights together", choices=("layer", "global"))
    criterion: str = param("magnitude", help="'magnitude': zero the smallest |w|; 'taylor': zero the smallest "
                           "|w * dL/dw| over a few batches of data (needs data); 'random': zero a random subset "
                           "(a baseline for teaching; seeded by the plan)",
                           choices=("magnitude", "taylor", "random"))
    batches: int = param(4, help="batches of data used by the 'taylor' criterion", check=IntAtLeast(1))


def _smallest_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask zeroing the k smallest entries; ties broken by position (deterministic)."""
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool, device=magnitudes.device)
    if k > 0:
        order = torch.argsort(magnitudes.flatten(), stable=True)
        keep[order[:k]] = False
    return keep.view_as(magnitudes)


def _scores(weights: list[torch.Tensor], config: PruneConfig, ctx, model, names) -> list[torch.Tensor]:
    if config.criterion == "random":
        return [torch.rand(w.shape, generator=ctx.generator).to(w.device) for w in weights]
    if config.criterion == "taylor":
        if ctx.data is None:
            raise InvalidConfigError("criterion='taylor' scores weights by |w * gradient| on your data: pass "
                                     "data=(X, y) (or --data NAME), or use criterion='magnitude'.")
        scores = taylor_scores(model, names, ctx.data, max_batches=config.batches)
        # a zero weight scores 0 whatever its gradient, so already-pruned weights stay pruned
        return [scores[n] for n in names]
    return [w.detach().abs().float() for w in weights]


def _masks(scores: list[torch.Tensor], amount: float, scope: str) -> list[torch.Tensor]:
    if scope == "layer":
        return [_smallest_mask(s, int(round(amount * s.numel()))) for s in scores]
    flat = torch.cat([s.flatten().cpu() for s in scores])
    keep = _smallest_mask(flat, int(round(amount * flat.numel())))
    masks, start = [], 0
    for w in scores:
        masks.append(keep[start : start + w.numel()].view_as(w).to(w.device))
        start += w.numel()
    return masks


@register_method(
    "prune",
    PruneConfig,
    supported=PRUNABLE,
    family="pruning",
    help="Unstructured magnitude pruning: zero the smallest weights (smaller in a sparse encoding, not faster).",
    aliases=("prune.magnitude",),
)
def apply_prune(model: nn.Module, names: list[str], config: PruneConfig, ctx) -> MethodResult:
    modules = [model.get_submodule(n) for n in names]
    weights = [m.weight.detach() for m in modules]
    masks = _masks(_scores(weights, config, ctx, model, names), config.amount, config.scope)
    replacements, rows = {}, []
    dense_total = sparse_total = 0
    for name, old, mask in zip(names, modules, masks):
        new = copy.deepcopy(old)
        new.weight.mul_(mask.to(new.weight.dtype))
        # a Conv1D's weight encoded as the equivalent Linear's (rows = outputs), so both report the same size
        sparse_w, encoding = sparse_encoding_bytes(linear_view(new).weight if is_conv1d(new) else new.weight)
        bias_bytes = 0 if new.bias is None else new.bias.numel() * new.bias.element_size()
        row = layer_row(
            name, "prune", old, new,
            error=relative_error(old.weight, new.weight),
            sparse_bytes=sparse_w + bias_bytes,
            sparse_encoding=encoding,
            detail={"sparsity": 1.0 - float(mask.float().mean())},
        )
        dense_total += row.bytes_after
        sparse_total += row.sparse_bytes
        replacements[name] = new
        rows.append(row)
    notes = [
        "Unstructured pruning zeroes weights inside dense tensors: the model takes the same memory and "
        "runs no faster (dense kernels multiply the zeros too).",
        f"In a sparse encoding the pruned layers would take {sparse_total:,} bytes instead of {dense_total:,} "
        f"({dense_total / max(sparse_total, 1):.2f}x smaller).",
    ]
    emptied = [r.name for r in rows if r.detail["sparsity"] >= 0.99]
    if emptied:
        notes.append(f"Layers pruned to >= 99% sparsity (they barely pass a signal): {', '.join(emptied)}.")
    return MethodResult(replacements, rows, notes)
