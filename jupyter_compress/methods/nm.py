"""N:M semi-structured sparsity: in every run of M consecutive input weights of an output
row, only the N largest (by |w|) are kept (2:4 keeps 2 of every 4). A transformers ``Conv1D``
(GPT-2), whose weight is (in, out), is grouped along its inputs (dim 0) as the equivalent Linear.

Sparse tensor cores (NVIDIA Ampere and later) run 2:4 matrices about twice as fast; a CPU
runs them as dense matrices, no faster. The report says so and gives the compressed size
(kept values plus ceil(log2 M) bits of position per kept value).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from ..core.config import IntAtLeast, MethodConfig, param
from ..core.metrics import relative_error
from ..core.registry import MagicOption, MethodResult, register_method
from ..core.textvalues import parse_pair
from ..errors import InvalidConfigError
from ._common import LINEAR_TYPES, hand_over, is_conv1d, layer_row, linear_view

__all__ = ["NMConfig", "nm_mask"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class NMConfig(MethodConfig):
    """N:M semi-structured sparsity masks (keep N of every M consecutive input weights)."""

    n: int = param(2, help="weights kept in each group of M", check=IntAtLeast(1, 1024))
    m: int = param(4, help="group size along the input dimension", check=IntAtLeast(2, 1024))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n >= self.m:
            raise InvalidConfigError(
                f"The 'n' parameter of NMConfig must be smaller than 'm' ({self.m}). Got n={self.n} instead."
            )


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with exactly ``n`` ones in every group of ``m`` consecutive inputs of each row."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    groups = rows.abs().reshape(rows.shape[0], -1, m)
    # stable sort descending: ties go to the earlier position, so masks are deterministic
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    return keep.reshape(weight.shape)


@register_method(
    "prune.nm",
    NMConfig,
    supported=(*LINEAR_TYPES, nn.Conv1d, nn.Conv2d, nn.Conv3d),
    family="pruning",
    help="N:M semi-structured sparsity (e.g. 2:4): faster only on hardware with sparse tensor cores.",
    aliases=("nm",),
    streams=True,
    stage="sparsity",
    order=1,
    options=(MagicOption("--nm", "N:M", parse_pair, lambda v: {"n": v[0], "m": v[1]},
                         help="N:M semi-structured sparsity: keep N of every M consecutive weights (e.g. 2:4)"),),
    sweep=False,  # one fixed pattern: measured when asked for by name
)
def apply_nm(model: nn.Module, names: list[str], config: NMConfig, ctx) -> MethodResult:
    replacements, rows = {}, []
    index_bits = math.ceil(math.log2(config.m))
    for name in names:
        old = model.get_submodule(name)
        conv1d = is_conv1d(old)
        weight = linear_view(old).weight if conv1d else old.weight  # outputs first, inputs after
        fan_in = weight[0].numel()
        if fan_in % config.m:
            rows.append(layer_row(name, "prune.nm", old, None,
                                  skipped=f"its {fan_in} inputs per output are not a multiple of m={config.m}"))
            continue
        new = copy.deepcopy(old)
        mask = nm_mask(weight, config.n, config.m)
        new.weight.mul_((mask.t() if conv1d else mask).to(new.weight.dtype))
        kept = old.weight.numel() * config.n // config.m
        bias_bytes = 0 if new.bias is None else new.bias.numel() * new.bias.element_size()
        sparse = kept * new.weight.element_size() + (kept * index_bits + 7) // 8 + bias_bytes
        rows.append(layer_row(name, "prune.nm", old, new, error=relative_error(old.weight, new.weight),
                              sparse_bytes=sparse, sparse_encoding=f"{config.n}:{config.m}",
                              detail={"pattern": f"{config.n}:{config.m}"}))
        del mask, weight, old
        hand_over(ctx, replacements, name, new)
    notes = [f"{config.n}:{config.m} sparsity is run faster only by hardware with sparse tensor cores (NVIDIA "
             "Ampere or later, for 2:4); on this CPU it runs as dense, no faster and no smaller in memory."]
    return MethodResult(replacements, rows, notes)
