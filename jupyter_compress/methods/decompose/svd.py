"""SVD of ``nn.Linear``: W (out x in) ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T).

The layer (an ``nn.Linear`` or a transformers ``Conv1D``) becomes :class:`LowRankLinear`, an
``nn.Sequential(Linear(in, r, bias=False), Linear(r, out))`` (children ``0`` and ``1``, as before), which holds
r * (in + out) weights instead of in * out and keeps the replaced layer's attributes (``in_features``,
``out_features``, ``bias``, a Conv1D's ``nf``) and a ``weight`` stand-in (its product, computed when used). The SVD runs through tensorly (``svd_interface``)
inside ``tl.backend_context("pytorch")``; the global backend is never set. The exact solver
computes the full spectrum once per weight version (cached), so any later rank is a truncation;
the randomized solver (Halko et al., tensorly's ``randomized_svd``) computes only the leading r.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import NamedTuple

import torch
from torch import nn

from ...core.config import Boolean, IntAtLeast, MethodConfig, param
from ...core.registry import MagicOption, MethodResult, register_method
from ...core.textvalues import parse_number
from ...errors import InvalidConfigError
from .._common import (
    LINEAR_TYPES,
    LayerStandIn,
    LinearView,
    is_conv1d,
    layer_row,
    linear_view,
    parent_reads_weight,
    submodule,
)
from .._head import KEEP_HEAD_HELP, split_head
from ._layers import SKIP_NO_SAVING, as_float, rank_too_large
from .cache import cached, weight_digest
from .ranks import RankRule, choose_rank, parse_any_rank

__all__ = ["SVDConfig", "LowRankLinear", "linear_svd", "randomized_linear_svd", "matrix_factors", "low_rank_linear"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SVDConfig(MethodConfig):
    """Truncated SVD of Linear layers into two smaller Linears."""

    rank: int | float | str = param(
        0.5,
        help="an int rank, a float in (0, 1] = fraction of the layer's parameters to keep, "
        "'energy:E' = smallest rank keeping a fraction E of the squared singular values, "
        "or 'auto' = rank by empirical variational Bayes (VBMF)",
        check=RankRule("int", "fraction", "energy", "auto"),
    )
    solver: str = param("exact", help="'exact' (full spectrum, cached: re-ranking is instant) or "
                        "'randomized' (leading singular vectors only; faster on large layers at small ranks)",
                        choices=("exact", "randomized"))
    round_to: int = param(1, help="round each rank to a multiple of this (e.g. 8 for fast kernels)",
                          check=IntAtLeast(1))
    keep_head: bool = param(True, help=KEEP_HEAD_HELP, check=Boolean())

    def __post_init__(self) -> None:
        super().__post_init__()
        kind, _ = parse_any_rank(self.rank)
        if self.solver == "randomized" and kind in ("energy", "auto"):
            raise InvalidConfigError(
                f"The 'rank' parameter of SVDConfig is {self.rank!r}, which needs the full spectrum; "
                "solver='randomized' computes only the leading part. Use an int or fraction rank, or solver='exact'."
            )


def linear_svd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full (thin) SVD of a 2-D weight through tensorly, in float32 or float64."""
    import tensorly as tl
    from tensorly.tenalg.svd import svd_interface

    work = as_float(weight)
    with tl.backend_context("pytorch"):
        u, s, vh = svd_interface(work, method="truncated_svd", n_eigenvecs=min(work.shape))
    return u, s, vh


def randomized_linear_svd(weight: torch.Tensor, rank: int, seed: int, n_iter: int = 2):
    """Leading ``rank`` singular triplets by tensorly's randomized SVD (seeded: deterministic)."""
    import tensorly as tl
    from tensorly.tenalg.svd import svd_interface

    with tl.backend_context("pytorch"):
        return svd_interface(as_float(weight), method="randomized_svd", n_eigenvecs=rank,
                             random_state=seed, n_iter=n_iter)


def matrix_factors(weight: torch.Tensor, digest: str | None = None):
    """Cached full SVD of a weight (one computation per weight version); ``digest``: the weight's
    :func:`~.cache.weight_digest` when the caller has it."""
    package = sys.modules[__package__]  # looked up at call time: the package-level name is the seam tests patch
    return cached(weight, ("svd",), lambda: package.linear_svd(weight), digest=digest)


class LowRankLinear(LayerStandIn, nn.Sequential):
    """``Sequential(Linear(in, r, bias=False), Linear(r, out))`` standing for a Linear (or Conv1D) layer.

    State-dict keys are those of the plain Sequential (``0.weight``, ``1.weight``, ``1.bias``). ``weight``
    is a stand-in with the replaced layer's shape, dtype and device; its values are ``W1 @ W0`` (transposed
    for a Conv1D), computed only when used. ``bias`` is the second Linear's.
    """

    def __init__(self, first: nn.Linear, second: nn.Linear, layer: nn.Module | None = None) -> None:
        if _MODULE_HOOKS is None or _MODULE_HOOKS or not (isinstance(first, nn.Module)
                                                          and isinstance(second, nn.Module)):
            super().__init__(first, second)
        else:  # what Sequential's add_module does for children "0" and "1" when no global hook is set
            nn.Module.__init__(self)
            self._modules.update({"0": first, "1": second})
        self._keep_layer(layer, None if layer is not None else {
            "weight": first.weight.new_zeros(()).expand(second.out_features, first.in_features)})
        self.__dict__.setdefault("in_features", first.in_features)
        self.__dict__.setdefault("out_features", second.out_features)

    @property
    def bias(self) -> torch.Tensor | None:
        return self[1].bias

    def dense_weight(self) -> torch.Tensor:
        """``W1 @ W0``: (out, in), the layout of ``nn.Linear``."""
        return self[1].weight @ self[0].weight


def low_rank_linear(old: nn.Module, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int,
                    root: torch.Tensor | None = None, view: LinearView | None = None) -> LowRankLinear:
    """:class:`LowRankLinear` from the leading ``rank`` triplets of ``old``'s weight in Linear layout (out, in).
    ``root``: ``s.sqrt()`` when the caller has it cached (its first ``rank`` values are those of
    ``s[:rank].sqrt()``: the same elementwise root); ``view``: ``linear_view(old)`` when the caller has it."""
    view = linear_view(old) if view is None else view
    w = view.weight
    root = s[:rank].sqrt() if root is None else root[:rank]
    first = _linear(view.in_features, rank, (root[:, None] * vh[:rank]).to(device=w.device, dtype=w.dtype), None)
    second = _linear(rank, view.out_features, (u[:, :rank] * root[None, :]).to(device=w.device, dtype=w.dtype),
                     None if view.bias is None else view.bias.detach().clone())
    return LowRankLinear(first, second, layer=old)


def _linear(in_features: int, out_features: int, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """The ``nn.Linear(in_features, out_features, bias=bias is not None)`` holding ``weight`` and ``bias`` (as new
    Parameters), made without ``nn.Linear.__init__``: its random initialisation (even on the meta device, a
    dozen Python calls) would be overwritten at once and cost more than the truncation itself (re-ranking is
    meant to be instant). Same attributes, parameters and registration hooks as the constructor's."""
    layer = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(layer)
    layer.__dict__.update(in_features=in_features, out_features=out_features)  # plain ints, as __setattr__ stores them
    weight, bias = nn.Parameter(weight), None if bias is None else nn.Parameter(bias)
    if _PARAMETER_HOOKS is None or _PARAMETER_HOOKS:  # someone registered a global hook: go through it
        layer.register_parameter("weight", weight)
        layer.register_parameter("bias", bias)
    else:  # what register_parameter does when no hook is registered (its checks hold for a fresh Linear)
        layer._parameters.update(weight=weight, bias=bias)
    return layer


# torch's global parameter / module registration hooks (register_module_parameter_registration_hook,
# register_module_module_registration_hook); None when this torch keeps them elsewhere: then every
# parameter and child goes through register_parameter / add_module
_PARAMETER_HOOKS = getattr(sys.modules["torch.nn.modules.module"], "_global_parameter_registration_hooks", None)
_MODULE_HOOKS = getattr(sys.modules["torch.nn.modules.module"], "_global_module_registration_hooks", None)


def _factors(old: nn.Module, fn, digest: str | None = None, weight: torch.Tensor | None = None):
    """``fn(weight)`` -> (u, s, vh) of ``old``'s weight in Linear layout. A Conv1D's is factored as stored,
    (in, out), and the factors swapped (exact for the full SVD): the cache entry is then shared with every
    other reader of its weight (spectra, sensitivity). ``digest``: passed on to ``fn`` when given;
    ``weight``: ``old.weight`` when the caller has it."""
    weight = old.weight if weight is None else weight
    u, s, vh = fn(weight) if digest is None else fn(weight, digest=digest)
    return (vh.T, s, u.T) if is_conv1d(old) else (u, s, vh)


class _Rerank(NamedTuple):
    """What re-ranking one weight version reads besides its factors (cached with them, computed once):
    ``root`` = sqrt(s); ``energy`` = :func:`_energy` (for the tail error); ``weight_nz``: the weight's
    non-zeros; ``first_nz[r]`` / ``second_nz[r]``: the non-zeros of the two factors :func:`low_rank_linear`
    builds at rank r, ``sqrt(S_r) V_r^T`` and ``U_r sqrt(S_r)`` in the layer's dtype and device."""

    root: torch.Tensor
    energy: tuple[torch.Tensor, float]
    weight_nz: int
    first_nz: list[int]
    second_nz: list[int]


def _rerank_facts(weight: torch.Tensor, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor,
                  like: torch.Tensor) -> _Rerank:
    """:class:`_Rerank` of ``weight`` (as stored) from its factors in Linear layout; ``like``: the weight in
    Linear layout (the factors' dtype and device as built). Truncating to r keeps the first r rows of the one
    factor and the first r columns of the other, with the same values elementwise, so their counts are prefix
    sums of the full-rank products' per-row / per-column counts: no recount for any later rank."""
    root = s.sqrt()
    first = (root[:, None] * vh).to(device=like.device, dtype=like.dtype)
    second = (u * root[None, :]).to(device=like.device, dtype=like.dtype)
    first_nz, second_nz = ([0, *torch.cumsum(counts.cpu(), 0).tolist()]
                           for counts in (torch.count_nonzero(first, dim=1), torch.count_nonzero(second, dim=0)))
    return _Rerank(root, _energy(s), int(torch.count_nonzero(weight)), first_nz, second_nz)


def _energy(s: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The squared singular values (float64) and their sum: what every tail error of this spectrum reads."""
    s2 = s.double() ** 2
    return s2, float(s2.sum())


def _tail_error(s: torch.Tensor, rank: int, energy: tuple[torch.Tensor, float] | None = None) -> float:
    """sqrt(sum(s[rank:]^2) / sum(s^2)); ``energy``: :func:`_energy` of ``s`` when the caller has it cached."""
    s2, total = _energy(s) if energy is None else energy
    return float(s2[rank:].sum() / total) ** 0.5 if total > 0 else 0.0


def _at_budget(model: nn.Module, budget: float, **_: object) -> list[SVDConfig]:
    return [SVDConfig(rank=budget)] if any(isinstance(m, nn.Linear) for m in model.modules()) else []


def _preview(config: SVDConfig, model: nn.Module, layers: list[str]):
    """The panel's instant preview answers the exact solver without rounding (methods.analysis); the head
    SVD leaves alone (keep_head) is left alone in the preview too."""
    if config.solver != "exact" or config.round_to != 1:
        return None
    layers, _, _ = split_head(model, layers, SVDConfig.method, config.keep_head)
    return {layer: ("svd", config.rank) for layer in layers}


@register_method(
    "svd",
    SVDConfig,
    supported=LINEAR_TYPES,
    family="decomposition",
    help="Truncated SVD: each Linear (or transformers Conv1D) becomes two smaller Linears (fewer parameters and "
         "multiply-adds).",
    aliases=("decompose.svd",),
    stage="factorization",
    dial="rank",
    options=(MagicOption("--svd", "RANK", parse_number, help="truncated SVD of Linear layers"),),
    probe={"rank": 0.5},
    compare=("low-rank", _at_budget),
    preview=_preview,
)
def apply_svd(model: nn.Module, names: list[str], config: SVDConfig, ctx) -> MethodResult:
    replacements, rows = {}, []
    kind, _ = parse_any_rank(config.rank)
    # one walk over the model for every look-up below (layers, their parents, the head), and each layer's
    # fused-parent check made once: re-ranking from the cache must not pay per-layer walks
    modules = dict(model.named_modules())
    fused = {name: parent_reads_weight(model, name, modules) for name in names}
    names, head_rows, head_notes = split_head(model, names, SVDConfig.method, config.keep_head, ctx,
                                              skip=fused.get, modules=modules)
    rule = str(config.rank)
    for name in names:
        old = submodule(model, name, modules)
        view = linear_view(old)
        out_f, in_f = view.out_features, view.in_features
        reason = fused[name]
        if reason:
            rows.append(layer_row(name, "svd", old, None, skipped=reason))
            continue
        max_rank = min(out_f, in_f)
        if kind == "int" and config.rank > max_rank:
            raise rank_too_large("SVDConfig", config.rank, name, f"Linear {in_f} -> {out_f}", max_rank)
        # every cached analysis of this layer (factors, energies, non-zeros) hangs off one digest of its weight
        weight = old.weight  # as stored (a Conv1D's is (in, out)); read once: a parameter read is a Python call
        digest = weight_digest(weight)
        if config.solver == "randomized":
            rank = choose_rank(config.rank, out_f, in_f, round_to=config.round_to)
            # on the (out, in) matrix as for a Linear: a random projection of W and of W^T differ
            u, s, vh = cached(view.weight, ("rsvd", rank, ctx.seed),
                              lambda w=view.weight, r=rank: randomized_linear_svd(w, r, ctx.seed))
            facts = None
        else:
            u, s, vh = _factors(old, matrix_factors, digest, weight)
            rank = choose_rank(config.rank, out_f, in_f, s, round_to=config.round_to)
            # one more entry per weight version: what every rank's layer and row read besides the factors
            facts = cached(weight, ("svd", "rerank", view.conv1d, weight.dtype, weight.device),
                           lambda f=(weight, u, s, vh, view.weight): _rerank_facts(*f), digest=digest)
        best = (in_f * out_f - 1) // (in_f + out_f)
        if rank > best:
            rows.append(layer_row(name, "svd", old, None, skipped=f"rank {rank} {SKIP_NO_SAVING} "
                                  f"(it must be <= {best} for this {in_f} -> {out_f} layer)"))
            continue
        bias_nz = 0 if view.bias is None else int(torch.count_nonzero(view.bias))
        if facts is None:  # randomized: the error and the new factors' non-zeros measured as built
            from ...core.metrics import relative_error

            new = low_rank_linear(old, u, s, vh, rank)
            error = relative_error(view.weight, new.dense_weight())
            weight_nz = cached(weight, ("nonzeros",), lambda w=weight: int(torch.count_nonzero(w)), digest=digest)
            nonzeros_after = None
        else:  # every count read from the weight version's cached facts: nothing recounted at a new rank
            new = low_rank_linear(old, u, s, vh, rank, root=facts.root, view=view)
            error = _tail_error(s, rank, facts.energy)
            weight_nz = facts.weight_nz
            nonzeros_after = facts.first_nz[rank] + facts.second_nz[rank] + bias_nz  # the new bias: a copy of the old
        detail = {"rank": rank, "max_rank": max_rank, "rule": rule, "solver": config.solver}
        rows.append(layer_row(name, "svd", old, new, error=error, detail=detail,
                              nonzeros_before=weight_nz + bias_nz, nonzeros_after=nonzeros_after))
        replacements[name] = new
    notes = ["SVD replaces each layer by two smaller ones: parameters and multiply-adds fall by the same "
             "ratio; whether latency follows depends on the layer size and batch (see benchmarks)."]
    return MethodResult(replacements, rows + head_rows, notes + head_notes)
