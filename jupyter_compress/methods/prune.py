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

from ..core.config import Interval, MethodConfig, param
from ..core.metrics import relative_error, sparse_encoding_bytes
from ..core.registry import MethodResult, register_method
from ._common import layer_row

__all__ = ["PruneConfig"]

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig(MethodConfig):
    """Unstructured magnitude pruning of Linear / Conv weights."""

    amount: float = param(0.5, help="fraction of the weights to set to zero", check=Interval(0.0, 1.0, "[)"))
    scope: str = param("layer", help="'layer': the same fraction in each layer; 'global': rank all "
                       "selected weights together", choices=("layer", "global"))
    criterion: str = param("magnitude", help="'magnitude': zero the smallest |w|; 'random': zero a random "
                           "subset (a baseline for teaching; seeded by the plan)", choices=("magnitude", "random"))


def _smallest_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask zeroing the k smallest entries; ties broken by position (deterministic)."""
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool, device=magnitudes.device)
    if k > 0:
        order = torch.argsort(magnitudes.flatten(), stable=True)
        keep[order[:k]] = False
    return keep.view_as(magnitudes)


def _scores(w: torch.Tensor, config: PruneConfig, generator: torch.Generator) -> torch.Tensor:
    if config.criterion == "random":
        return torch.rand(w.shape, generator=generator).to(w.device)
    return w.detach().abs().float()


def _masks(weights: list[torch.Tensor], config: PruneConfig, generator: torch.Generator) -> list[torch.Tensor]:
    if config.scope == "layer":
        return [_smallest_mask(_scores(w, config, generator), int(round(config.amount * w.numel())))
                for w in weights]
    flat = torch.cat([_scores(w, config, generator).flatten().cpu() for w in weights])
    keep = _smallest_mask(flat, int(round(config.amount * flat.numel())))
    masks, start = [], 0
    for w in weights:
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
    masks = _masks([m.weight.detach() for m in modules], config, ctx.generator)
    replacements, rows = {}, []
    dense_total = sparse_total = 0
    for name, old, mask in zip(names, modules, masks):
        new = copy.deepcopy(old)
        new.weight.mul_(mask.to(new.weight.dtype))
        sparse_w, encoding = sparse_encoding_bytes(new.weight)
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
