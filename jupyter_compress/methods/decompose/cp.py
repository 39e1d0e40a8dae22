"""CP of ``nn.Conv2d`` (Lebedev et al. 2015): a rank-R CP kernel as four cheap convolutions.

W[o, i, h, w] ~ sum_r A[o, r] B[i, r] C[h, r] D[w, r] becomes
``Sequential(Conv2d(I, R, 1), Conv2d(R, R, (kh, 1), groups=R), Conv2d(R, R, (1, kw), groups=R), Conv2d(R, O, 1))``
(a :class:`CPConv2d`: same children and state-dict keys, plus the replaced conv's attributes and a
``weight`` stand-in whose values, the reconstructed kernel, are computed only when used).
The CP is fitted by tensorly's ``parafac`` (ALS, SVD initialisation, seeded) inside
``tl.backend_context("pytorch")``. CP factors are not nested (the rank-R solution is not a
truncation of a larger one), so results are cached per weight version *and* rank.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
from torch import nn

from ...core.config import Boolean, IntAtLeast, MethodConfig, param
from ...core.metrics import relative_error
from ...core.registry import MagicOption, MethodResult, register_method
from ...core.textvalues import parse_number
from .._common import LayerStandIn, layer_row
from .._head import KEEP_HEAD_HELP, split_head
from ._layers import SKIP_NO_SAVING, as_float, conv_skip_reason
from .cache import cached
from .ranks import RankRule, parse_any_rank, round_rank

__all__ = ["CPConfig", "CPConv2d", "cp_factors", "cp_conv"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CPConfig(MethodConfig):
    """CP decomposition of Conv2d layers into pointwise and depthwise convolutions."""

    rank: int | float = param(
        0.5,
        help="the CP rank R as an int, or a float in (0, 1] = fraction of the layer's parameters to keep "
        "(CP has no spectrum, so no energy or VBMF rule)",
        check=RankRule("int", "fraction"),
    )
    n_iter: int = param(100, help="maximum ALS iterations of tensorly's parafac", check=IntAtLeast(1))
    round_to: int = param(1, help="round each rank to a multiple of this (e.g. 8 for fast kernels)",
                          check=IntAtLeast(1))
    keep_head: bool = param(True, help=KEEP_HEAD_HELP, check=Boolean())


def cp_factors(weight: torch.Tensor, rank: int, seed: int, n_iter: int):
    """Cached (weights, [A_out, B_in, C_h, D_w]) of a rank-``rank`` CP of a 4-D kernel."""

    def compute():
        import tensorly as tl
        from tensorly.decomposition import parafac

        with tl.backend_context("pytorch"), warnings.catch_warnings():
            # ranks above a mode's size: tensorly's SVD init says so and pads with seeded random columns
            warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
            cp = parafac(as_float(weight), rank, n_iter_max=n_iter, init="svd", random_state=seed, tol=1e-7)
        return cp.weights, list(cp.factors)

    return cached(weight, ("cp", rank, seed, n_iter), compute)


class CPConv2d(LayerStandIn, nn.Sequential):
    """``Sequential(1x1, kx1 depthwise, 1xk depthwise, 1x1 conv)`` standing for a Conv2d: keeps its attributes
    (``in_channels``, ``kernel_size``, ``stride``, ...), ``bias`` (the last conv's) and ``weight`` (a stand-in)."""

    def __init__(self, *convs: nn.Conv2d, layer: nn.Conv2d) -> None:
        super().__init__(*convs)
        self._keep_layer(layer)

    @property
    def bias(self) -> torch.Tensor | None:
        return self[-1].bias

    def dense_weight(self) -> torch.Tensor:
        return reconstruct(self)


def cp_conv(old: nn.Conv2d, lam: torch.Tensor, factors, rank: int) -> CPConv2d:
    a, b, c, d = factors
    w = old.weight
    kh, kw = old.kernel_size
    pad = old.padding
    if isinstance(pad, str):
        pad_h = pad_w = pad
    else:
        pad_h, pad_w = (pad[0], 0), (0, pad[1])
    kwargs = dict(device=w.device, dtype=w.dtype, bias=False)
    first = nn.Conv2d(old.in_channels, rank, 1, **kwargs)
    vertical = nn.Conv2d(rank, rank, (kh, 1), stride=(old.stride[0], 1), padding=pad_h,
                         dilation=(old.dilation[0], 1), groups=rank, padding_mode=old.padding_mode, **kwargs)
    horizontal = nn.Conv2d(rank, rank, (1, kw), stride=(1, old.stride[1]), padding=pad_w,
                           dilation=(1, old.dilation[1]), groups=rank, padding_mode=old.padding_mode, **kwargs)
    last = nn.Conv2d(rank, old.out_channels, 1, device=w.device, dtype=w.dtype, bias=old.bias is not None)
    with torch.no_grad():
        first.weight.copy_(b.T[:, :, None, None].to(w.dtype))
        vertical.weight.copy_(c.T[:, None, :, None].to(w.dtype))
        horizontal.weight.copy_(d.T[:, None, None, :].to(w.dtype))
        last.weight.copy_((a * lam[None, :])[:, :, None, None].to(w.dtype))
        if old.bias is not None:
            last.bias.copy_(old.bias)
    return CPConv2d(first, vertical, horizontal, last, layer=old)


def reconstruct(seq: nn.Sequential) -> torch.Tensor:
    first, vertical, horizontal, last = (m.weight.double() for m in seq)
    return torch.einsum("or,ri,rh,rw->oihw", last[:, :, 0, 0], first[:, :, 0, 0], vertical[:, 0, :, 0],
                        horizontal[:, 0, 0, :])


@register_method(
    "cp",
    CPConfig,
    supported=(nn.Conv2d,),
    family="decomposition",
    help="CP (Lebedev et al. 2015): each Conv2d becomes 1x1, kx1 and 1xk depthwise, and 1x1 convolutions.",
    aliases=("decompose.cp",),
    stage="factorization",
    order=2,
    dial="rank",
    options=(MagicOption("--cp", "RANK", parse_number, help="CP decomposition of Conv2d layers"),),
    sweep=False,  # slow on every layer and answers the question Tucker and SVD answer
)
def apply_cp(model: nn.Module, names: list[str], config: CPConfig, ctx) -> MethodResult:
    replacements, rows = {}, []
    kind, value = parse_any_rank(config.rank)
    names, head_rows, head_notes = split_head(model, names, "cp", config.keep_head, ctx,
                                                  skip=lambda n: conv_skip_reason(model.get_submodule(n)))
    for name in names:
        old: nn.Conv2d = model.get_submodule(name)
        reason = conv_skip_reason(old)
        if reason:
            rows.append(layer_row(name, "cp", old, None, skipped=reason))
            continue
        o, i, kh, kw = old.weight.shape
        per_rank = o + i + kh + kw
        best = (o * i * kh * kw - 1) // per_rank  # the largest rank that still saves parameters
        rank = int(value) if kind == "int" else max(1, int(math.floor(value * o * i * kh * kw / per_rank)))
        if config.round_to > 1:
            rank = round_rank(rank, config.round_to, max(best, 1))
        if rank > best:
            rows.append(layer_row(name, "cp", old, None, skipped=f"rank {rank} {SKIP_NO_SAVING} "
                                  f"(it must be <= {best} for this {i} -> {o} {kh}x{kw} conv)"))
            continue
        lam, factors = cp_factors(old.weight, rank, ctx.seed, config.n_iter)
        new = cp_conv(old, lam, factors, rank)
        error = relative_error(old.weight, reconstruct(new))
        rows.append(layer_row(name, "cp", old, new, error=error,
                              detail={"rank": rank, "max_rank": best, "rule": str(config.rank)}))
        replacements[name] = new
    notes = ["CP turns a conv into pointwise and depthwise convs: few parameters, but ALS fitting is slow "
             "on large layers, the error is higher than Tucker's at equal size, and fine-tuning is usually needed."]
    return MethodResult(replacements, rows + head_rows, notes + head_notes)
