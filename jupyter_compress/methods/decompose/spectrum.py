"""The spectrum API: singular values per layer and reconstruction error as a function of rank.

``spectrum(model)`` analyses every Linear (one SVD) and ungrouped Conv2d (the SVDs of its two
channel-mode unfoldings, as Tucker-2 uses) once per weight version, through the same cache the
methods use; every question after that (error at a rank, rank for a rule, the whole curve for a
plot or a slider) is answered from the singular values alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ...core.selection import Selector
from .._common import LINEAR_TYPES, linear_view
from ._layers import conv_skip_reason
from .ranks import choose_rank
from .svd import matrix_factors
from .tucker import tucker2_factors, tucker2_params, tucker2_ranks

__all__ = ["LayerAnalysis", "spectrum"]


@dataclasses.dataclass(frozen=True)
class LayerAnalysis:
    """Singular values of one layer: ``(s,)`` for a Linear, ``(s_out, s_in)`` for a Conv2d (its two modes)."""

    name: str
    layer_type: str
    shape: tuple[int, ...]
    singular_values: tuple[torch.Tensor, ...]

    @property
    def max_rank(self) -> tuple[int, ...]:
        return tuple(s.numel() for s in self.singular_values)

    def error_curve(self, mode: int = 0) -> torch.Tensor:
        """Relative Frobenius error of the mode-``mode`` truncation at ranks 0, 1, ..., max (float64).

        For a Linear this is exactly the error of the rank-r SVD; for a conv mode it is the error of
        truncating that mode alone (Tucker-2's error is at most the root of the two squared mode errors).
        """
        s2 = self.singular_values[mode].double() ** 2
        total = s2.sum()
        tail = torch.cat([total.reshape(1), total - torch.cumsum(s2, 0)]).clamp_min(0)
        return (tail / total).sqrt() if total > 0 else torch.zeros_like(tail)

    def energy_curve(self, mode: int = 0) -> torch.Tensor:
        """Share of the squared singular values kept at ranks 1..max."""
        s2 = self.singular_values[mode].double() ** 2
        return torch.cumsum(s2, 0) / s2.sum()

    def error(self, rank) -> float:
        """Relative error at ``rank`` (an int, or (r_out, r_in) for a conv: the HOSVD bound)."""
        ranks = (rank,) * len(self.singular_values) if isinstance(rank, int) else tuple(rank)
        sq = sum(float(self.error_curve(m)[r]) ** 2 for m, r in enumerate(ranks))
        return sq**0.5

    def rank_for(self, spec, round_to: int = 1):
        """The rank a rule (int, fraction, 'energy:E', 'auto', or a tuple for a conv) picks for this layer."""
        if len(self.singular_values) == 1:
            out_f, in_f = self.shape
            return choose_rank(spec, out_f, in_f, self.singular_values[0], round_to=round_to)
        return tucker2_ranks(spec, self.shape, self.singular_values, round_to)

    def params(self, rank) -> int:
        """Weights of the decomposed layer at ``rank`` (biases excluded)."""
        if len(self.singular_values) == 1:
            return rank * sum(self.shape)
        ranks = (rank, rank) if isinstance(rank, int) else tuple(rank)
        return tucker2_params(*self.shape, *ranks)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists for JSON / plotting / widgets."""
        return {"name": self.name, "layer_type": self.layer_type, "shape": list(self.shape),
                "singular_values": [s.double().tolist() for s in self.singular_values],
                "error_curve": [self.error_curve(m).tolist() for m in range(len(self.singular_values))]}


def spectrum(model: nn.Module, layers: Any = None) -> dict[str, LayerAnalysis]:
    """Analyses of the Linear and ungrouped Conv2d layers of ``model`` (cached per weight version).

    ``layers`` picks layers as a :class:`Selector` does: a name, a ``'re:...'`` pattern, a list of
    them, or a Selector. Grouped / depthwise convolutions have no channel spectrum and are left out.
    """
    selector = layers if isinstance(layers, Selector) else Selector(layers=() if layers is None else layers)
    out: dict[str, LayerAnalysis] = {}
    for name in selector.select(model, (*LINEAR_TYPES, nn.Conv2d), "spectrum"):
        module = model.get_submodule(name)
        if isinstance(module, LINEAR_TYPES):  # a Conv1D's (in, out) weight has the same singular values
            _, s, _ = matrix_factors(module.weight)
            out[name] = LayerAnalysis(name, "Linear", tuple(linear_view(module).weight.shape), (s,))
        elif conv_skip_reason(module) is None:
            (_, s_out), (_, s_in) = tucker2_factors(module.weight)
            out[name] = LayerAnalysis(name, "Conv2d", tuple(module.weight.shape), (s_out, s_in))
    return out
