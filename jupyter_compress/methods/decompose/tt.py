"""Tensor-Train of large ``nn.Linear`` and ``nn.Embedding`` weights (TT-SVD by tensorly's ``tensor_train``).

The weight (rows x cols) is zero-padded to balanced mode products, reshaped to a d-way tensor whose
k-th mode pairs row mode k with column mode k, and decomposed with TT ranks (r_1, ..., r_{d-1}).
The layer becomes a :class:`TTLinear` / :class:`TTEmbedding`. Results are cached per weight version
and ranks (TT-SVD at lower ranks is not a truncation of the cores).
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
from ...errors import InvalidConfigError, shown
from .._common import LINEAR_TYPES, layer_row, linear_view, parent_reads_weight
from .._head import KEEP_HEAD_HELP, split_head
from ._layers import SKIP_NO_SAVING, as_float, rank_too_large
from .cache import cached
from .ranks import RankRule, parse_any_rank, round_rank
from .tt_modules import TTEmbedding, TTLinear, balanced_modes, tt_matrix

__all__ = ["TTConfig", "tt_layout", "tt_cores"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TTConfig(MethodConfig):
    """Tensor-Train of Linear and Embedding weights."""

    rank: int | float | tuple = param(
        0.5,
        help="TT ranks: one int for every inner rank, a tuple of (cores - 1) ints, or a float in (0, 1] = "
        "fraction of the layer's parameters to keep (largest equal ranks that fit)",
        check=RankRule("int", "tuple", "fraction"),
    )
    # at most 8: a weight reshaped to more cores has factors of 1-2 and the search over shapes grows fast
    cores: int = param(3, help="number of TT cores (the weight is reshaped to a tensor of this order, 2..8)",
                       check=IntAtLeast(2, 8))
    min_params: int = param(256, help="layers with fewer weights are left as they are", check=IntAtLeast(0))
    round_to: int = param(1, help="round each rank to a multiple of this", check=IntAtLeast(1))
    keep_head: bool = param(True, help=KEEP_HEAD_HELP, check=Boolean())

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rank, tuple) and len(self.rank) != self.cores - 1:
            raise InvalidConfigError(
                f"The 'rank' parameter of TTConfig has {len(self.rank)} ranks, but {self.cores} cores need "
                f"{self.cores - 1} (one between each pair of cores). Got {shown(self.rank)} instead."
            )

    def to_dict(self):
        data = super().to_dict()
        data["rank"] = list(self.rank) if isinstance(self.rank, tuple) else self.rank
        return data


def tt_layout(rows: int, cols: int, d: int):
    """(row_modes, col_modes, per-boundary maximal ranks) of a (rows x cols) matrix in d cores."""
    rm, cm = balanced_modes(rows, d), balanced_modes(cols, d)
    sizes = [a * b for a, b in zip(rm, cm)]
    max_ranks = [min(math.prod(sizes[: k + 1]), math.prod(sizes[k + 1:])) for k in range(d - 1)]
    return rm, cm, max_ranks


def tt_params(rm, cm, ranks) -> int:
    full = (1, *ranks, 1)
    return sum(full[k] * rm[k] * cm[k] * full[k + 1] for k in range(len(rm)))


def tt_cores(weight: torch.Tensor, rm, cm, ranks):
    """Cached TT cores (r_{k-1}, row_k, col_k, r_k) of the zero-padded weight."""

    def compute():
        import tensorly as tl
        from tensorly.decomposition import tensor_train

        w = as_float(weight)
        padded = w.new_zeros(math.prod(rm), math.prod(cm))
        padded[: w.shape[0], : w.shape[1]] = w
        d = len(rm)
        t = padded.reshape(*rm, *cm).permute(*[j for k in range(d) for j in (k, d + k)])
        t = t.reshape(*[a * b for a, b in zip(rm, cm)])
        with tl.backend_context("pytorch"):
            factors = tensor_train(t, rank=[1, *ranks, 1])
        return [f.reshape(f.shape[0], rm[k], cm[k], f.shape[-1]) for k, f in enumerate(factors)]

    return cached(weight, ("tt", tuple(rm), tuple(cm), tuple(ranks)), compute)


def _ranks(config: TTConfig, name: str, layer: str, rows: int, cols: int, rm, cm, max_ranks):
    kind, value = parse_any_rank(config.rank)
    if kind in ("int", "tuple"):
        asked = (value,) * len(max_ranks) if kind == "int" else value
        if any(a > m for a, m in zip(asked, max_ranks)) and (kind == "tuple" or value > max(max_ranks)):
            raise rank_too_large("TTConfig", config.rank, name, layer, tuple(max_ranks))
        ranks = [min(a, m) for a, m in zip(asked, max_ranks)]
    else:
        budget, r = value * rows * cols, 1
        while r < max(max_ranks) and tt_params(rm, cm, [min(r + 1, m) for m in max_ranks]) <= budget:
            r += 1
        ranks = [min(r, m) for m in max_ranks]
    if config.round_to > 1:
        ranks = [round_rank(r, config.round_to, m) for r, m in zip(ranks, max_ranks)]
    return ranks


def _tt_skip(model: nn.Module, name: str, config: TTConfig) -> str | None:
    """Why TT leaves a layer alone whatever the rank (too small, a fused parent reads it), or None."""
    old = model.get_submodule(name)
    linear = isinstance(old, LINEAR_TYPES)
    if (linear_view(old).weight if linear else old.weight).numel() < config.min_params:
        return "too small"
    return parent_reads_weight(model, name) if linear else None


@register_method(
    "tt",
    TTConfig,
    supported=(*LINEAR_TYPES, nn.Embedding),
    family="decomposition",
    help="Tensor-Train: large Linear (and transformers Conv1D) and Embedding weights become chains of small cores (TTLinear, TTEmbedding).",
    aliases=("decompose.tt",),
    stage="factorization",
    order=3,
    dial="rank",
    options=(MagicOption("--tt", "RANK", parse_number, help="Tensor-Train decomposition of large Linear / Embedding layers"),),
    sweep=False,  # slow on every layer and answers the question Tucker and SVD answer
)
def apply_tt(model: nn.Module, names: list[str], config: TTConfig, ctx) -> MethodResult:
    replacements, rows_out = {}, []
    names, head_rows, head_notes = split_head(model, names, "tt", config.keep_head, ctx, skip=lambda n: _tt_skip(model, n, config))
    for name in names:
        old = model.get_submodule(name)
        linear = isinstance(old, LINEAR_TYPES)
        w = linear_view(old).weight if linear else old.weight  # (out, in) for a Linear or a Conv1D
        rows, cols = w.shape
        if w.numel() < config.min_params:
            rows_out.append(layer_row(name, "tt", old, None, skipped=f"{w.numel()} weights, fewer than "
                                      f"min_params={config.min_params}"))
            continue
        reason = parent_reads_weight(model, name) if linear else None
        if isinstance(old, nn.Embedding) and old.max_norm is not None:
            reason = "max_norm renormalises rows in place at lookup, which a TT table cannot do"
        if reason:
            rows_out.append(layer_row(name, "tt", old, None, skipped=reason))
            continue
        rm, cm, max_ranks = tt_layout(rows, cols, config.cores)
        layer = f"{type(old).__name__} {rows}x{cols} as modes {rm} x {cm}"
        ranks = _ranks(config, name, layer, rows, cols, rm, cm, max_ranks)
        params = tt_params(rm, cm, ranks)
        if params >= rows * cols:
            rows_out.append(layer_row(name, "tt", old, None, skipped=f"ranks {tuple(ranks)} {SKIP_NO_SAVING} "
                                      f"({params} >= {rows * cols} weights)"))
            continue
        cores = tt_cores(w, rm, cm, ranks)
        full_ranks = (1, *ranks, 1)
        if linear:
            new = TTLinear(cols, rows, rm, cm, full_ranks, bias=old.bias is not None, device=w.device, dtype=w.dtype)
        else:
            new = TTEmbedding(rows, cols, rm, cm, full_ranks, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            for param_, core in zip(new.cores, cores):
                param_.copy_(core.to(w.dtype))
            if linear and old.bias is not None:
                new.bias.copy_(old.bias)
        new._keep_layer(old)  # the replaced layer's attributes, and its weight's layout (a Conv1D's (in, out))
        approx = tt_matrix([c.detach().double() for c in new.cores])[:rows, :cols]
        rows_out.append(layer_row(name, "tt", old, new, error=relative_error(w, approx), detail={
            "rank": list(ranks), "max_rank": list(max_ranks), "modes": [list(rm), list(cm)],
            "rule": str(config.rank)}))
        replacements[name] = new
    notes = ["Tensor-Train stores a weight as a chain of small cores: large savings on big layers, but "
             "the chained contractions are often slower than one dense matmul on CPU."]
    return MethodResult(replacements, rows_out + head_rows, notes + head_notes)
