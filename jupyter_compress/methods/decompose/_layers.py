"""Small helpers shared by the decomposition methods: what cannot be replaced, and error texts."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InvalidConfigError

__all__ = ["parent_reads_weights", "conv_skip_reason", "rank_too_large", "as_float", "SKIP_NO_SAVING"]

# Parents whose forward reads a child Linear's ``.weight`` (fused attention / fast paths):
# replacing that child by other modules would crash them, so such layers are skipped and named.
_READS_CHILD_WEIGHTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)

SKIP_NO_SAVING = "would not reduce parameters"


def parent_reads_weights(model: nn.Module, name: str) -> str | None:
    parent_name = name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, _READS_CHILD_WEIGHTS):
        return (f"its parent {type(parent).__name__} reads this layer's .weight directly, "
                "so it cannot be split into several layers")
    return None


def conv_skip_reason(conv: nn.Conv2d) -> str | None:
    """Why a Conv2d is not decomposed (None when it is). Strided, dilated and padded convs are handled."""
    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels == conv.out_channels else "grouped"
        return (f"{kind} convolution (groups={conv.groups}): its weight holds one small kernel per group, "
                "so a decomposition across channels would mix groups; it is left as is")
    if conv.in_channels < 2 or conv.out_channels < 2:
        return "a single input or output channel leaves nothing to factor"
    return None


def rank_too_large(cls: str, value, name: str, layer: str, max_rank) -> InvalidConfigError:
    return InvalidConfigError(
        f"The 'rank' parameter of {cls} is {value!r}, larger than layer {name!r} ({layer}) allows: "
        f"at most {max_rank}. Use a smaller rank or a fraction."
    )


def as_float(weight: torch.Tensor) -> torch.Tensor:
    """The weight detached, in float32 or float64 (the dtypes the SVD routines handle)."""
    work = weight.detach()
    return work if work.dtype in (torch.float32, torch.float64) else work.float()
