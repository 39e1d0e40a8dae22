"""Low-rank decomposition. SVD of ``nn.Linear``: W (out x in) ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T).

The layer becomes ``Sequential(Linear(in, r, bias=False), Linear(r, out))``, which
holds r * (in + out) weights instead of in * out. The SVD runs through tensorly
(``svd_interface``) inside ``tl.backend_context("pytorch")``; the global backend
is never set. tensorly is imported here, lazily, so the core stays light.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..core.config import MethodConfig, RankSpec, param, parse_rank
from ..core.registry import MethodResult, register_method
from ..errors import InvalidConfigError
from ._common import layer_row

__all__ = ["SVDConfig", "choose_rank", "linear_svd"]


# Parents whose forward reads a child Linear's ``.weight`` (fused attention / fast paths):
# replacing that child by two Linears would crash them, so such layers are skipped and named.
_READS_CHILD_WEIGHTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SVDConfig(MethodConfig):
    """Truncated SVD of Linear layers into two smaller Linears."""

    rank: int | float | str = param(
        0.5,
        help="an int rank, a float in (0, 1] = fraction of the layer's parameters to keep, "
        "or 'energy:E' = smallest rank keeping a fraction E of the squared singular values",
        check=RankSpec(),
    )


def linear_svd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full (thin) SVD of a 2-D weight through tensorly, in float32 or float64."""
    import tensorly as tl
    from tensorly.tenalg.svd import svd_interface

    work = weight.detach()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    with tl.backend_context("pytorch"):
        u, s, vh = svd_interface(work, method="truncated_svd", n_eigenvecs=min(work.shape))
    return u, s, vh


def choose_rank(spec, out_features: int, in_features: int, singular_values: torch.Tensor | None = None) -> int:
    """The rank a spec asks for on an (out x in) matrix; see :class:`SVDConfig`."""
    kind, value = parse_rank(spec)
    max_rank = min(out_features, in_features)
    if kind == "int":
        return int(value)
    if kind == "fraction":
        return max(1, int(math.floor(value * out_features * in_features / (out_features + in_features))))
    if singular_values is None:
        raise ValueError("an energy rank needs the singular values")
    energy = torch.cumsum(singular_values.double() ** 2, 0)
    energy = energy / energy[-1]
    return min(max_rank, int(torch.searchsorted(energy, torch.tensor(value, dtype=energy.dtype) - 1e-12)) + 1)


@register_method(
    "svd",
    SVDConfig,
    supported=(nn.Linear,),
    family="decomposition",
    help="Truncated SVD: each Linear becomes two smaller Linears (fewer parameters and multiply-adds).",
    aliases=("decompose.svd",),
)
def apply_svd(model: nn.Module, names: list[str], config: SVDConfig, ctx) -> MethodResult:
    replacements, rows = {}, []
    kind, _ = parse_rank(config.rank)
    for name in names:
        old: nn.Linear = model.get_submodule(name)
        out_f, in_f = old.out_features, old.in_features
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, _READS_CHILD_WEIGHTS):
            rows.append(layer_row(name, "svd", old, None, skipped=f"its parent {type(parent).__name__} reads "
                                  "this layer's .weight directly, so it cannot be split into two layers"))
            continue
        max_rank = min(out_f, in_f)
        if kind == "int" and config.rank > max_rank:
            raise InvalidConfigError(
                f"The 'rank' parameter of SVDConfig is {config.rank}, larger than layer {name!r} "
                f"(Linear {in_f} -> {out_f}) allows: at most {max_rank}. Use a smaller rank or a fraction."
            )
        u, s, vh = linear_svd(old.weight)
        rank = choose_rank(config.rank, out_f, in_f, s)
        if rank * (in_f + out_f) >= in_f * out_f:
            best = (in_f * out_f - 1) // (in_f + out_f)
            rows.append(layer_row(name, "svd", old, None, skipped=f"rank {rank} would not reduce parameters "
                                  f"(it must be <= {best} for this {in_f} -> {out_f} layer)"))
            continue
        root = s[:rank].sqrt()
        first = nn.Linear(in_f, rank, bias=False, device=old.weight.device, dtype=old.weight.dtype)
        second = nn.Linear(rank, out_f, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
        first.weight.copy_((root[:, None] * vh[:rank]).to(old.weight.dtype))
        second.weight.copy_((u[:, :rank] * root[None, :]).to(old.weight.dtype))
        if old.bias is not None:
            second.bias.copy_(old.bias)
        new = nn.Sequential(first, second)
        tail = float((s[rank:].double() ** 2).sum().sqrt() / (s.double() ** 2).sum().sqrt()) if s.numel() else 0.0
        rows.append(layer_row(name, "svd", old, new, error=tail,
                              detail={"rank": rank, "max_rank": max_rank}))
        replacements[name] = new
    notes = ["SVD replaces each layer by two smaller ones: parameters and multiply-adds fall by the same "
             "ratio; whether latency follows depends on the layer size and batch (see benchmarks)."]
    return MethodResult(replacements, rows, notes)
