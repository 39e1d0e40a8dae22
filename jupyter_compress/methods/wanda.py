"""Wanda: pruning by weights and activations (Sun, Liu, Bair, Kolter 2023, "A Simple and Effective Pruning
Approach for Large Language Models", arXiv:2306.11695).

Each weight is scored ``|W_ij| * ||X_j||_2``, where ``||X_j||_2`` is the L2 norm of input channel j over every
token row of the calibration data (one forward pass; methods._actstats). Weights are compared within their
output row (each row loses the same fraction), unstructured (``amount``) or N:M (``n`` of every ``m``
consecutive inputs kept, e.g. 2:4). No retraining and no update of the kept weights: the result is a copy of
each layer with zeros. A transformers ``Conv1D`` (GPT-2, weight (in, out)) is scored as the equivalent Linear.

Input norms are measured once on the dense model (the paper's reference code feeds each block the outputs of
the blocks already pruned; a single pass keeps this a one-pass method here). Like magnitude pruning, the
tensors stay dense: no smaller in memory and no faster on a CPU; the report gives the sparse-encoded size.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from ..core.config import IntAtLeast, Interval, MethodConfig, param
from ..core.metrics import relative_error, sparse_encoding_bytes
from ..core.registry import MagicOption, MethodResult, register_method
from ..core.textvalues import parse_amount, parse_pair
from ..errors import InvalidConfigError, shown
from ._actstats import collect
from ._common import LINEAR_TYPES, hand_over, is_conv1d, layer_row, linear_view
from .nm import nm_mask
from .quantize._common import calibration_batches

__all__ = ["WandaConfig", "wanda_scores", "wanda_mask"]

_ROWS_PER_CHUNK = 2048  # output rows sorted at a time: the sort's int64 indices stay a few MB


@dataclasses.dataclass(frozen=True, kw_only=True)
class WandaConfig(MethodConfig):
    """Wanda pruning: zero the weights with the smallest |w| * ||x||_2 in each output row (calibration data)."""

    amount: float = param(0.5, help="fraction of each output row's weights to set to zero (unstructured; "
                          "used when n is 0)", check=Interval(0.0, 1.0, "[)"))
    n: int = param(0, help="N:M pattern: weights kept in each group of m consecutive inputs (0: unstructured, "
                   "by amount)", check=IntAtLeast(0, 1024))
    m: int = param(4, help="N:M pattern: group size along the input dimension", check=IntAtLeast(2, 1024))
    batches: int = param(64, help="calibration batches the input norms are measured on", check=IntAtLeast(1))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n >= self.m:
            raise InvalidConfigError(
                f"The 'n' parameter of WandaConfig must be smaller than 'm' ({self.m}). Got n={self.n} instead."
            )


def parse_amount_or_pair(text: str) -> float | tuple[int, int]:
    """'0.5' / '50%' -> 0.5 (unstructured); '2:4' -> (2, 4) (N:M)."""
    if ":" in str(text):
        return parse_pair(text)
    try:
        return parse_amount(text)
    except InvalidConfigError:
        raise InvalidConfigError(f"{shown(text)} is neither a fraction (0.5, 50%) nor N:M (2:4).") from None


def _build(value: float | tuple[int, int]) -> dict[str, Any]:
    return {"n": value[0], "m": value[1]} if isinstance(value, tuple) else {"amount": value}


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||_2`` for a weight in the layout of ``nn.Linear`` (out, in), as float32."""
    return weight.detach().abs().float() * norms.float()[None, :]


def wanda_mask(scores: torch.Tensor, amount: float = 0.5, n: int = 0, m: int = 4) -> torch.Tensor:
    """Keep-mask (out, in): N:M within each row when ``n`` > 0, else the ``round(amount * in)`` lowest scores
    of every row set to False. Ties go to the earlier input (stable sort): deterministic."""
    if n:
        return nm_mask(scores, n, m)
    out_f, in_f = scores.shape
    k = int(round(amount * in_f))
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return keep
    for start in range(0, out_f, _ROWS_PER_CHUNK):
        part = scores[start:start + _ROWS_PER_CHUNK]
        order = torch.argsort(part, dim=1, stable=True)
        keep[start:start + _ROWS_PER_CHUNK].scatter_(1, order[:, :k], False)
    return keep


def _weighted_error(weight: torch.Tensor, mask: torch.Tensor, norms: torch.Tensor) -> float:
    """``||(W - W_pruned) diag(||X||)|| / ||W diag(||X||)||``: the output error the score minimises (exact when
    the input channels are uncorrelated)."""
    scaled = weight.detach().float() * norms.float()[None, :]
    return relative_error(scaled, scaled * mask)


@register_method(
    "prune.wanda",
    WandaConfig,
    supported=LINEAR_TYPES,
    family="pruning",
    help="Wanda: prune by |weight| x input-activation norm per output row (unstructured or N:M such as 2:4); "
         "needs calibration data, no retraining.",
    aliases=("wanda",),
    requires=("calibration",),
    streams=True,
    stage="sparsity",
    order=2,
    dial="amount",
    options=(MagicOption("--wanda", "AMOUNT_OR_N:M", parse_amount_or_pair, _build, help_field="amount",
                         help="Wanda pruning (|w| x activation norm, per output row): a fraction (0.5) or "
                              "N:M (2:4)"),),
    sweep=False,  # needs calibration data on every run: measured when asked for by name
)
def apply_wanda(model: nn.Module, names: list[str], config: WandaConfig, ctx: Any) -> MethodResult:
    batches = calibration_batches(ctx, required=True, method="prune.wanda", limit=config.batches)
    stats = collect(model, names, batches, getattr(ctx, "example_inputs", None)).stats
    pattern = f"{config.n}:{config.m}" if config.n else None
    index_bits = math.ceil(math.log2(config.m))
    replacements, rows = {}, []
    for name in names:
        old = model.get_submodule(name)
        view = linear_view(old)
        if name not in stats:
            rows.append(layer_row(name, "prune.wanda", old, None,
                                  skipped="it did not run on the calibration data (no input norms to score by)"))
            continue
        if pattern and view.in_features % config.m:
            rows.append(layer_row(name, "prune.wanda", old, None, skipped=f"its {view.in_features} inputs per "
                                  f"output are not a multiple of m={config.m}"))
            continue
        norms = stats[name].l2
        mask = wanda_mask(wanda_scores(view.weight, norms), config.amount, config.n, config.m)
        new = copy.deepcopy(old)
        with torch.no_grad():
            new.weight.masked_fill_(~(mask.t() if is_conv1d(new) else mask), 0)
        bias_bytes = 0 if new.bias is None else new.bias.numel() * new.bias.element_size()
        if pattern:
            kept = view.weight.numel() * config.n // config.m
            sparse, encoding = kept * new.weight.element_size() + (kept * index_bits + 7) // 8, pattern
        else:
            sparse, encoding = sparse_encoding_bytes(linear_view(new).weight)
        detail = {"sparsity": 1.0 - int(torch.count_nonzero(mask)) / max(mask.numel(), 1),
                  "weighted_error": _weighted_error(view.weight, mask, norms),
                  "calibration_rows": stats[name].rows}
        if pattern:
            detail["pattern"] = pattern
        rows.append(layer_row(name, "prune.wanda", old, new, error=relative_error(old.weight, new.weight),
                              sparse_bytes=sparse + bias_bytes, sparse_encoding=encoding, detail=detail))
        del mask, old
        hand_over(ctx, replacements, name, new)
    notes = [f"Wanda scored each weight by |w| x the L2 norm of its input channel over "
             f"{max((s.rows for s in stats.values()), default=0):,} calibration token rows per layer, and pruned "
             f"{pattern or f'{config.amount:.0%}'} of each output row; kept weights are unchanged (no update)."]
    if pattern:
        notes.append(f"{pattern} sparsity is run faster only by hardware with sparse tensor cores (NVIDIA Ampere "
                     "or later, for 2:4); on this CPU it runs as dense, no faster and no smaller in memory.")
    else:
        notes.append("Unstructured pruning zeroes weights inside dense tensors: the model takes the same memory "
                     "and runs no faster (dense kernels multiply the zeros too).")
    return MethodResult(replacements, rows, notes)
