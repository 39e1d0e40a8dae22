"""Tucker-2 of ``nn.Conv2d`` (Kim et al. 2016): decompose the output- and input-channel modes.

W (O x I x kh x kw) ~ core (R_o x R_i x kh x kw) x_0 U_o (O x R_o) x_1 U_i (I x R_i), which is
``Sequential(Conv2d(I, R_i, 1), Conv2d(R_i, R_o, (kh, kw), stride, padding, dilation), Conv2d(R_o, O, 1))``
(a :class:`TuckerConv2d`: same children and state-dict keys, plus the replaced conv's attributes and a
``weight`` stand-in whose values, the reconstructed kernel, are computed only when used).
The mode factors come from the SVDs of the two unfoldings (a truncated HOSVD), through tensorly in
``tl.backend_context("pytorch")``; the full mode spectra are cached per weight version, so a new
rank only truncates them and projects the kernel (no new decomposition).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ...core.config import Boolean, IntAtLeast, MethodConfig, param
from ...core.metrics import relative_error
from ...core.registry import MagicOption, MethodResult, register_method
from ...core.textvalues import parse_number
from .._common import LayerStandIn, layer_row
from .._head import KEEP_HEAD_HELP, split_head
from ._layers import SKIP_NO_SAVING, as_float, conv_skip_reason, rank_too_large
from .cache import cached
from .ranks import RankRule, energy_rank, parse_any_rank, round_rank

__all__ = ["TuckerConfig", "TuckerConv2d", "tucker2_factors", "tucker2_ranks", "tucker2_conv", "tucker2_params"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TuckerConfig(MethodConfig):
    """Tucker-2 of Conv2d layers into 1x1, kxk core and 1x1 convolutions."""

    rank: int | float | str | tuple = param(
        0.5,
        help="(out, in) ranks as a tuple, one int for both modes, a float in (0, 1] = fraction of the "
        "layer's parameters to keep, 'energy:E' per mode, or 'auto' = per-mode VBMF (as Kim et al.)",
        check=RankRule("int", "tuple", "fraction", "energy", "auto", tuple_len=2),
    )
    round_to: int = param(1, help="round each rank to a multiple of this (e.g. 8 for fast kernels)",
                          check=IntAtLeast(1))
    keep_head: bool = param(True, help=KEEP_HEAD_HELP, check=Boolean())

    def to_dict(self):
        data = super().to_dict()
        data["rank"] = list(self.rank) if isinstance(self.rank, tuple) else self.rank
        return data


def tucker2_factors(weight: torch.Tensor):
    """Cached ((U_out, s_out), (U_in, s_in)): full SVDs of the mode-0 and mode-1 unfoldings."""

    def compute():
        import tensorly as tl
        from tensorly.tenalg.svd import svd_interface

        work = as_float(weight)
        out = []
        with tl.backend_context("pytorch"):
            for mode in (0, 1):
                unfolded = tl.unfold(work, mode)
                u, s, _ = svd_interface(unfolded, method="truncated_svd", n_eigenvecs=min(unfolded.shape))
                out.append((u, s))
        return tuple(out)

    return cached(weight, ("tucker2",), compute)


def tucker2_params(o: int, i: int, kh: int, kw: int, r_out: int, r_in: int) -> int:
    return i * r_in + r_in * r_out * kh * kw + r_out * o


def tucker2_ranks(spec, weight_shape, spectra=None, round_to: int = 1) -> tuple[int, int]:
    """(r_out, r_in) asked by ``spec`` for a kernel of ``weight_shape`` (O, I, kh, kw)."""
    o, i, kh, kw = weight_shape
    kind, value = parse_any_rank(spec)
    if kind == "int":
        ranks = (value, value)
    elif kind == "tuple":
        ranks = value
    elif kind == "fraction":
        # ranks proportional to the channel counts, r = a * (O, I): solve
        # a^2 O I kh kw + a (O^2 + I^2) = f O I kh kw for a, then floor.
        qa, qb, qc = o * i * kh * kw, o * o + i * i, value * o * i * kh * kw
        a = (-qb + math.sqrt(qb * qb + 4 * qa * qc)) / (2 * qa)
        ranks = (max(1, int(a * o)), max(1, int(a * i)))
    elif kind == "energy":
        ranks = (energy_rank(spectra[0], value), energy_rank(spectra[1], value))
    else:  # auto: VBMF on each unfolding, as Kim et al.
        from .vbmf import vbmf_rank

        ranks = (max(1, vbmf_rank(spectra[0], (o, i * kh * kw))), max(1, vbmf_rank(spectra[1], (i, o * kh * kw))))
    if round_to > 1:
        ranks = (round_rank(ranks[0], round_to, o), round_rank(ranks[1], round_to, i))
    return int(ranks[0]), int(ranks[1])


class TuckerConv2d(LayerStandIn, nn.Sequential):
    """``Sequential(1x1 conv, kxk core conv, 1x1 conv)`` standing for a Conv2d: keeps its attributes
    (``in_channels``, ``kernel_size``, ``stride``, ...), ``bias`` (the last conv's) and ``weight`` (a stand-in)."""

    def __init__(self, first: nn.Conv2d, middle: nn.Conv2d, last: nn.Conv2d, layer: nn.Conv2d) -> None:
        super().__init__(first, middle, last)
        self._keep_layer(layer)

    @property
    def bias(self) -> torch.Tensor | None:
        return self[-1].bias

    def dense_weight(self) -> torch.Tensor:
        return reconstruct(self)


def tucker2_conv(old: nn.Conv2d, factors, ranks: tuple[int, int]) -> TuckerConv2d:
    """The three convolutions for given ranks, from the cached mode factors."""
    import tensorly as tl
    from tensorly.tenalg import multi_mode_dot

    (u_out, _), (u_in, _) = factors
    r_out, r_in = ranks
    w = old.weight
    a, b = u_out[:, :r_out], u_in[:, :r_in]
    with tl.backend_context("pytorch"):
        core = multi_mode_dot(as_float(w), [a.T, b.T], modes=[0, 1])
    kw = dict(device=w.device, dtype=w.dtype)
    first = nn.Conv2d(old.in_channels, r_in, 1, bias=False, **kw)
    middle = nn.Conv2d(r_in, r_out, old.kernel_size, stride=old.stride, padding=old.padding,
                       dilation=old.dilation, bias=False, padding_mode=old.padding_mode, **kw)
    last = nn.Conv2d(r_out, old.out_channels, 1, bias=old.bias is not None, **kw)
    with torch.no_grad():
        first.weight.copy_(b.T[:, :, None, None].to(w.dtype))
        middle.weight.copy_(core.to(w.dtype))
        last.weight.copy_(a[:, :, None, None].to(w.dtype))
        if old.bias is not None:
            last.bias.copy_(old.bias)
    return TuckerConv2d(first, middle, last, old)


def reconstruct(seq: nn.Sequential) -> torch.Tensor:
    first, middle, last = seq
    core = middle.weight.double()
    return torch.einsum("or,rshw,si->oihw", last.weight[:, :, 0, 0].double(), core, first.weight[:, :, 0, 0].double())


def _at_budget(model: nn.Module, budget: float, **_: object) -> list[TuckerConfig]:
    return [TuckerConfig(rank=budget)] if any(isinstance(m, nn.Conv2d) for m in model.modules()) else []


@register_method(
    "tucker",
    TuckerConfig,
    supported=(nn.Conv2d,),
    family="decomposition",
    help="Tucker-2 (Kim et al. 2016): each Conv2d becomes 1x1, kxk core and 1x1 convolutions.",
    aliases=("decompose.tucker",),
    stage="factorization",
    order=1,
    dial="rank",
    options=(MagicOption("--tucker", "RANK", parse_number, help="Tucker-2 decomposition of Conv2d layers"),),
    probe={"rank": 0.5},
    compare=("low-rank", _at_budget),
)
def apply_tucker(model: nn.Module, names: list[str], config: TuckerConfig, ctx) -> MethodResult:
    replacements, rows = {}, []
    kind, value = parse_any_rank(config.rank)
    names, head_rows, head_notes = split_head(model, names, "tucker", config.keep_head, ctx,
                                                  skip=lambda n: conv_skip_reason(model.get_submodule(n)))
    for name in names:
        old: nn.Conv2d = model.get_submodule(name)
        reason = conv_skip_reason(old)
        if reason:
            rows.append(layer_row(name, "tucker", old, None, skipped=reason))
            continue
        o, i, kh, kw = old.weight.shape
        asked = (value, value) if kind == "int" else value if kind == "tuple" else None
        if asked is not None and (asked[0] > o or asked[1] > i):
            raise rank_too_large("TuckerConfig", config.rank, name, f"Conv2d {i} -> {o}, {kh}x{kw}", (o, i))
        factors = tucker2_factors(old.weight)
        ranks = tucker2_ranks(config.rank, (o, i, kh, kw), (factors[0][1], factors[1][1]), config.round_to)
        params = tucker2_params(o, i, kh, kw, *ranks)
        if params >= o * i * kh * kw:
            rows.append(layer_row(name, "tucker", old, None,
                                  skipped=f"ranks {ranks} {SKIP_NO_SAVING} of this {i} -> {o} {kh}x{kw} conv"))
            continue
        new = tucker2_conv(old, factors, ranks)
        error = relative_error(old.weight, reconstruct(new))
        rows.append(layer_row(name, "tucker", old, new, error=error, detail={
            "rank": list(ranks), "max_rank": [o, i], "rule": str(config.rank)}))
        replacements[name] = new
    notes = ["Tucker-2 keeps the kernel size in a smaller core conv between two 1x1 convs; a short "
             "fine-tune usually recovers most of the accuracy lost (see benchmarks)."]
    return MethodResult(replacements, rows + head_rows, notes + head_notes)
