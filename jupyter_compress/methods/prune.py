"""Unstructured magnitude pruning: the smallest weights (by |w|) are set to zero.

Scope ``layer`` removes the same fraction in every selected layer; ``global``
ranks all selected weights together (layers with many small weights lose more).
The tensors stay dense, so the model is no smaller in memory and no faster;
the report gives what a sparse encoding of the weights would take.

With ``embeddings=True`` the nn.Embedding tables are pruned too (a Hugging Face encoder keeps about half its
bytes there); an embedding table tied to an output layer is pruned once, for both.

Torch's own ``torch.nn.utils.prune`` re-parametrizes modules (``weight_orig`` and
a mask buffer, a forward pre-hook), which changes the state_dict keys and doubles
the weight memory; we want a plain module with zeros, so we compute masks here.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..core.config import Boolean, IntAtLeast, Interval, MethodConfig, param
from ..core.metrics import relative_error, sparse_encoding_bytes
from ..core.registry import MagicOption, MethodResult, register_method
from ..core.textvalues import parse_amount
from ..errors import InvalidConfigError
from ._common import LINEAR_TYPES, hand_over, is_conv1d, layer_row, linear_view
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
    embeddings: bool = param(False, help="also prune nn.Embedding tables (a transformer's token and position "
                             "tables, often half its bytes): each table loses the same fraction of its "
                             "smallest entries; off by default, as a table's small entries are whole words' "
                             "features", check=Boolean())

    def requirements(self) -> frozenset[str]:
        return frozenset({"data"}) if self.criterion == "taylor" else frozenset()

    def extra_layer_types(self) -> tuple[type, ...]:
        return (nn.Embedding,) if self.embeddings else ()


def _at_budget(model: nn.Module, budget: float, **_: object) -> list[PruneConfig]:
    return [PruneConfig(amount=1 - budget)]


def _preview(config: PruneConfig, model: nn.Module, layers: list[str]):
    """The panel's instant preview answers layer-scope magnitude pruning (methods.analysis)."""
    if config.criterion != "magnitude" or config.scope != "layer":
        return None
    return {layer: ("prune", config.amount) for layer in layers}


_STEP = 1 << 20  # entries per slice: selections below work in a few MB whatever the layer's size


def _slices(flat: torch.Tensor, absolute: bool):
    """(start, values) over slices of ``flat`` (|values| when ``absolute``)."""
    for start in range(0, flat.numel(), _STEP):
        part = flat[start:start + _STEP]
        yield start, part.abs() if absolute else part


def _radix_ready(flat: torch.Tensor, absolute: bool) -> bool:
    """Float32 with no NaN, and (unless |.| is taken) no negative entry: bit patterns order as values do."""
    if flat.dtype != torch.float32:
        return False
    # the sign bit (negative entries, -0.0) is what breaks the order: |.| clears it
    return all(not bool(torch.isnan(v).any()) and (absolute or not bool((v.view(torch.int32) < 0).any()))
               for _, v in _slices(flat, False))


def _kth_smallest(flat: torch.Tensor, k: int, absolute: bool = False) -> torch.Tensor:
    """The k-th smallest entry (1-based) of ``flat`` (of |flat| when ``absolute``), a float32 tensor ready for
    radix selection (:func:`_radix_ready`): two counting passes over the float bit patterns (for floats >= 0
    they order as the values do), slice by slice. torch.kthvalue copies the input and keeps int64 indices
    (three layers' worth of memory, the peak of pruning a big model); the result is the same."""
    high = torch.zeros(1 << 15, dtype=torch.int64)
    for _, v in _slices(flat, absolute):
        high += torch.bincount((v.view(torch.int32) >> 16).long(), minlength=1 << 15)
    cumulative = torch.cumsum(high, 0)
    top = int(torch.searchsorted(cumulative, torch.tensor(k)))  # first bin holding the k-th entry
    k_in_bin = k - (int(cumulative[top - 1]) if top else 0)
    low = torch.zeros(1 << 16, dtype=torch.int64)
    for _, v in _slices(flat, absolute):
        bits = v.view(torch.int32)
        low += torch.bincount((bits[(bits >> 16) == top] & 0xFFFF).long(), minlength=1 << 16)
    bottom = int(torch.searchsorted(torch.cumsum(low, 0), torch.tensor(k_in_bin)))
    return torch.tensor([(top << 16) | bottom], dtype=torch.int32).view(torch.float32)[0]


def _smallest_mask(magnitudes: torch.Tensor, k: int, absolute: bool = False) -> torch.Tensor:
    """Boolean keep-mask zeroing the k smallest entries (of |magnitudes| when ``absolute``); ties broken by
    position (deterministic): the same mask as zeroing the first k of a stable argsort, found with one k-th
    value selection instead of a sort (a sort's int64 indices take twice a float32 layer's memory)."""
    flat = magnitudes.flatten()
    if k <= 0:
        return torch.ones_like(magnitudes, dtype=torch.bool)
    if k >= flat.numel():
        return torch.zeros_like(magnitudes, dtype=torch.bool)
    if not _radix_ready(flat, absolute):  # NaN, negative scores or another dtype: the sort way
        values = flat.abs().float() if absolute else flat.float()
        order = torch.argsort(values, stable=True)
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[order[:k]] = False
        return keep.view_as(magnitudes)
    threshold = _kth_smallest(flat, k, absolute)
    keep = torch.empty(flat.numel(), dtype=torch.bool, device=flat.device)
    ties, above = [], 0
    for start, v in _slices(flat, absolute):
        torch.gt(v, threshold, out=keep[start:start + v.numel()])
        above += int(torch.count_nonzero(keep[start:start + v.numel()]))
        ties.append(torch.nonzero(v == threshold).flatten() + start)
    tied = torch.cat(ties)
    below = flat.numel() - above - tied.numel()  # entries strictly below the threshold
    keep[tied[k - below:]] = True  # of the entries equal to the threshold, the first ones by position go
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
    streams=True,
    stage="sparsity",
    dial="amount",
    controls=("amount", "scope", "criterion", "batches"),  # the panel lists no Embedding layers to take
    options=(MagicOption("--prune", "AMOUNT", parse_amount, help="unstructured magnitude pruning"),),
    probe={"amount": 0.5},
    compare=("pruning, unstructured", _at_budget),
    preview=_preview,
)
def apply_prune(model: nn.Module, names: list[str], config: PruneConfig, ctx) -> MethodResult:
    if config.scope == "layer" and config.criterion != "taylor":
        masks = None  # one layer at a time: its scores and mask are made when it is pruned
    else:  # global ranking or gradient scores: every layer's scores first
        weights = [model.get_submodule(n).weight.detach() for n in names]
        masks = _masks(_scores(weights, config, ctx, model, names), config.amount, config.scope)
        del weights
    replacements, rows = {}, []
    dense_total = sparse_total = 0
    for index, name in enumerate(names):
        old = model.get_submodule(name)
        if masks is None and config.criterion == "magnitude":  # |w| taken slice by slice: no score tensor
            weight = old.weight.detach()
            mask = _smallest_mask(weight, int(round(config.amount * weight.numel())), absolute=True)
            del weight
        elif masks is None:
            mask = _masks(_scores([old.weight.detach()], config, ctx, model, [name]), config.amount, "layer")[0]
        else:
            mask, masks[index] = masks[index], None
        new = copy.deepcopy(old)
        new.weight.masked_fill_(~mask, 0)  # in place, no float copy of the mask (a layer of memory)
        # a Conv1D's weight encoded as the equivalent Linear's (rows = outputs), so both report the same size
        sparse_w, encoding = sparse_encoding_bytes(linear_view(new).weight if is_conv1d(new) else new.weight)
        bias = getattr(new, "bias", None)  # an nn.Embedding has none
        bias_bytes = 0 if bias is None else bias.numel() * bias.element_size()
        row = layer_row(
            name, "prune", old, new,
            error=relative_error(old.weight, new.weight),
            sparse_bytes=sparse_w + bias_bytes,
            sparse_encoding=encoding,
            detail={"sparsity": 1.0 - int(torch.count_nonzero(mask)) / max(mask.numel(), 1)},
        )
        dense_total += row.bytes_after
        sparse_total += row.sparse_bytes
        rows.append(row)
        del mask, old
        hand_over(ctx, replacements, name, new)
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
