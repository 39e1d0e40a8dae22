"""Small helpers shared by the decomposition methods: what cannot be replaced, and error texts."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InvalidConfigError

__all__ = ["conv_skip_reason", "rank_too_large", "as_float", "SKIP_NO_SAVING"]

SKIP_NO_SAVING = "would not reduce parameters"


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
