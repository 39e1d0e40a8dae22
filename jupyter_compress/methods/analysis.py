"""Per-layer analyses computed once, so that a new setting is previewed in milliseconds.

What the tuning panel needs while a slider moves: parameters, non-zeros, bytes and the relative
weight error per layer, for any amount / rank. Each is a lookup into data computed once:
- unstructured magnitude pruning: each layer's squared weights, sorted, and their running sum
  (the error of zeroing the k smallest is the root of the k-th partial sum over the total);
- SVD: the singular values (through the decomposition cache), whose tail gives the error.
The numbers equal what ``compress`` reports for the same single-method plan (tested); methods
without an analysis here are marked "on apply" and measured when the plan runs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

from ..core.metrics import count_nonzero, count_params, model_bytes
from ._common import parent_reads_weight
from .decompose._layers import SKIP_NO_SAVING
from .decompose.ranks import choose_rank
from .decompose.svd import matrix_factors

__all__ = ["LayerSetting", "PreviewEngine", "PreviewResult"]

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclasses.dataclass
class LayerSetting:
    """What to do with one layer: an SVD rank spec and / or a pruning amount (None: leave it)."""

    svd: Any = None
    prune: float | None = None


@dataclasses.dataclass
class PreviewResult:
    params_before: int
    params_after: int
    nonzeros_before: int
    nonzeros_after: int
    bytes_before: int
    bytes_after: int
    layers: list[dict[str, Any]]
    exact: bool  # False when two methods stack on a layer (the error is then the root-sum-square estimate)
    seconds: float


class PreviewEngine:
    """Analyses of ``model``'s Linear / Conv layers; :meth:`preview` answers a settings dict at once."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.names = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
        self._sorted: dict[str, tuple[torch.Tensor, float, int]] = {}
        self._svd: dict[str, tuple[torch.Tensor, str | None]] = {}
        self._base = {n: self._layer_stats(model.get_submodule(n)) for n in self.names}
        self.totals_before = (count_params(model), count_nonzero(model), model_bytes(model))
        self.analysis_seconds = 0.0

    @staticmethod
    def _layer_stats(module: nn.Module) -> dict[str, int]:
        w = module.weight
        bias = module.bias.numel() if module.bias is not None else 0
        bias_nz = int(torch.count_nonzero(module.bias)) if module.bias is not None else 0
        return {"weight": w.numel(), "bias": bias, "bias_nz": bias_nz, "weight_nz": int(torch.count_nonzero(w)),
                "itemsize": w.element_size(), "in": w.shape[1] if w.dim() == 2 else 0,
                "out": w.shape[0]}

    def analyse(self, svd: bool = True) -> float:
        """Compute every analysis now (else on first use); returns the seconds it took."""
        start = time.perf_counter()
        for name in self.names:
            self._magnitudes(name)
            if svd and isinstance(self.model.get_submodule(name), nn.Linear):
                self._spectrum(name)
        self.analysis_seconds += time.perf_counter() - start
        return time.perf_counter() - start

    def _magnitudes(self, name: str) -> tuple[torch.Tensor, float, int]:
        if name not in self._sorted:
            w2 = self.model.get_submodule(name).weight.detach().double().flatten() ** 2
            ordered = torch.sort(w2).values
            self._sorted[name] = (torch.cumsum(ordered, 0), float(ordered.sum()), int(w2.numel()))
        return self._sorted[name]

    def _spectrum(self, name: str) -> tuple[torch.Tensor | None, str | None]:
        if name not in self._svd:
            reason = parent_reads_weight(self.model, name)
            s = None if reason else matrix_factors(self.model.get_submodule(name).weight)[1]
            self._svd[name] = (s, reason)
        return self._svd[name]

    # -- answers -----------------------------------------------------------
    def prune_error(self, name: str, amount: float) -> tuple[float, int]:
        """(relative error, zeroed weights) of zeroing the ``amount`` smallest weights of a layer."""
        cumsum, total, n = self._magnitudes(name)
        k = int(round(amount * n))
        if k == 0 or total == 0:
            return 0.0, k
        return float(cumsum[k - 1] / total) ** 0.5, k

    def svd_choice(self, name: str, spec: Any) -> dict[str, Any]:
        s, reason = self._spectrum(name)
        stats = self._base[name]
        if reason:
            return {"skipped": reason}
        out_f, in_f = stats["out"], stats["in"]
        rank = choose_rank(spec, out_f, in_f, s)
        best = (in_f * out_f - 1) // (in_f + out_f)
        if rank > best:
            return {"skipped": f"rank {rank} {SKIP_NO_SAVING}"}
        s2 = s.double() ** 2
        total = float(s2.sum())
        error = float(s2[rank:].sum() / total) ** 0.5 if total > 0 else 0.0
        return {"rank": rank, "weights": rank * (in_f + out_f), "error": error}

    def preview(self, settings: dict[str, LayerSetting]) -> PreviewResult:
        """Totals and per-layer numbers for ``settings`` ({layer name: LayerSetting}); other layers are kept."""
        start = time.perf_counter()
        params_b, nz_b, bytes_b = self.totals_before
        params_a, nz_a, bytes_a = params_b, nz_b, bytes_b
        layers, exact = [], True
        for name, setting in settings.items():
            if name not in self._base or (setting.svd is None and setting.prune is None):
                continue
            st = self._base[name]
            weights, weights_nz, errors, row = st["weight"], st["weight_nz"], [], {"name": name}
            if setting.svd is not None:
                choice = self.svd_choice(name, setting.svd)
                if "skipped" in choice:
                    row["skipped"] = choice["skipped"]
                else:
                    weights = weights_nz = choice["weights"]
                    errors.append(choice["error"])
                    row["rank"] = choice["rank"]
            if setting.prune is not None:
                if setting.svd is not None and "rank" in row:
                    # pruning the factors: zeros counted exactly, error estimated (factors not analysed)
                    k = int(round(setting.prune * weights))
                    weights_nz = weights - k
                    errors.append(setting.prune ** 0.5 * 0.5)
                    exact = False
                else:
                    error, k = self.prune_error(name, setting.prune)
                    weights_nz = min(st["weight_nz"], st["weight"] - k)
                    errors.append(error)
            d_params = weights - st["weight"]
            params_a += d_params
            nz_a += weights_nz - st["weight_nz"]
            bytes_a += d_params * st["itemsize"]
            row.update(params_before=st["weight"] + st["bias"], params_after=weights + st["bias"],
                       nonzeros_after=weights_nz + st["bias_nz"],
                       error=(sum(e * e for e in errors) ** 0.5) if errors else 0.0)
            layers.append(row)
        return PreviewResult(params_b, params_a, nz_b, nz_a, bytes_b, bytes_a, layers, exact,
                             time.perf_counter() - start)
