"""Plot data as plain columns (dicts of lists), computed from a Report, models or sweep points.

No bokeh here: these functions are what the figures show, tested on their own numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.report import Report

__all__ = ["layer_sizes", "layer_errors", "layer_weights", "weight_layers", "weight_histogram",
           "spectrum_data", "chosen_rank", "latency_data", "pareto_front", "pareto_data"]


def _by_layer(report: Report) -> dict[str, list]:
    """Rows grouped by the layer of the model they started from: a later step on a factor of a
    replaced layer (``a.0`` after ``a`` was split) joins the group of ``a``."""
    out: dict[str, list] = {}
    for r in report.compressed_rows:
        root = next((g for g in out if r.name == g or r.name.startswith(g + ".")), r.name)
        out.setdefault(root, []).append(r)
    return out


def layer_sizes(report: Report) -> dict[str, list]:
    """Per compressed layer: parameters, non-zeros and bytes before the first step and after all steps
    (the first step's result plus the change each later step made to the layer or its parts)."""
    cols: dict[str, list] = {k: [] for k in ("layer", "params_before", "params_after", "nonzeros_after",
                                             "bytes_before", "bytes_after")}
    for name, rows in _by_layer(report).items():
        first = rows[0]
        cols["layer"].append(name)
        cols["params_before"].append(first.params_before)
        cols["bytes_before"].append(first.bytes_before)
        for key in ("params", "nonzeros", "bytes"):
            after = getattr(first, f"{key}_after") + sum(
                getattr(r, f"{key}_after") - getattr(r, f"{key}_before") for r in rows[1:])
            cols[f"{key}_after"].append(after)
    return cols


def layer_errors(report: Report) -> dict[str, list]:
    """Per layer and step with a measured error: ``layer``, ``method``, ``error`` and its kind."""
    cols: dict[str, list] = {"layer": [], "method": [], "error": [], "error_kind": []}
    for r in report.compressed_rows:
        if r.error is not None and math.isfinite(r.error):
            cols["layer"].append(r.name)
            cols["method"].append(r.method)
            cols["error"].append(float(r.error))
            cols["error_kind"].append(r.error_kind)
    return cols


def layer_weights(model: nn.Module, layer: str) -> torch.Tensor:
    """Every weight the layer holds, flattened (a factorised layer gives all its factors' weights)."""
    module = model.get_submodule(layer)
    parts = [p.detach().float().reshape(-1) for n, p in module.named_parameters() if n.rsplit(".", 1)[-1] == "weight"]
    return torch.cat(parts) if parts else torch.zeros(0)


def weight_layers(before: nn.Module, after: nn.Module) -> list[str]:
    """Layers with a weight in both models (the names a histogram can be drawn for)."""
    names_after = {n for n, _ in after.named_modules()}
    out = []
    for name, module in before.named_modules():
        if name and name in names_after and isinstance(getattr(module, "weight", None), torch.Tensor):
            out.append(name)
    return out


def weight_histogram(before: nn.Module, after: nn.Module, layer: str, bins: int = 40) -> dict[str, Any]:
    """Counts of the layer's weights before and after on shared bins, and the share of exact zeros."""
    wb, wa = layer_weights(before, layer), layer_weights(after, layer)
    both = torch.cat([wb, wa])
    lo, hi = (float(both.min()), float(both.max())) if both.numel() else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return {
        "left": edges[:-1].tolist(), "right": edges[1:].tolist(),
        "before": torch.histc(wb.double(), bins, lo, hi).tolist() if wb.numel() else [0.0] * bins,
        "after": torch.histc(wa.double(), bins, lo, hi).tolist() if wa.numel() else [0.0] * bins,
        "zeros_before": float((wb == 0).double().mean()) if wb.numel() else 0.0,
        "zeros_after": float((wa == 0).double().mean()) if wa.numel() else 0.0,
        "count_before": wb.numel(), "count_after": wa.numel(),
    }


def chosen_rank(report: Report, layer: str) -> int | None:
    """The rank the report's decomposition step chose for ``layer`` (first int of ``detail['rank']``)."""
    for r in report.compressed_rows:
        if r.name == layer and "rank" in r.detail:
            rank = r.detail["rank"]
            return int(rank[0] if isinstance(rank, (list, tuple)) else rank)
    return None


def spectrum_data(model: nn.Module, layer: str, rank: int | None = None) -> dict[str, Any]:
    """Singular values of the layer's weight (a conv unfolded along its output channels), the share of
    squared singular values kept at each rank, and the error of truncating there; ``rank`` is marked."""
    w = model.get_submodule(layer).weight.detach().double()
    s = torch.linalg.svdvals(w.reshape(w.shape[0], -1))
    s2 = s**2
    energy = torch.cumsum(s2, 0) / s2.sum() if s2.sum() > 0 else torch.ones_like(s2)
    return {"rank": list(range(1, s.numel() + 1)), "singular_value": s.tolist(), "energy": energy.tolist(),
            "error": (1 - energy).clamp_min(0).sqrt().tolist(), "chosen_rank": rank}


def latency_data(metrics_before: dict[str, Any], metrics_after: dict[str, Any]) -> dict[str, list]:
    """Median latency before and after for each measured input size (``latency_ms``, ``latency_ms@b``)."""
    keys = [k for k in metrics_before if k.startswith("latency_ms") and k in metrics_after]
    keys.sort(key=lambda k: (k != "latency_ms", int(k.split("@")[1]) if "@" in k else 0))
    label = {k: ("given batch" if k == "latency_ms" else f"batch {k.split('@')[1]}") for k in keys}
    return {"case": [label[k] for k in keys], "before": [float(metrics_before[k]) for k in keys],
            "after": [float(metrics_after[k]) for k in keys],
            "ratio": [float(metrics_after[k]) / float(metrics_before[k]) if metrics_before[k] else math.nan
                      for k in keys]}


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[bool]:
    """For each point, whether no other point has x <= its x and y >= its y with one strict
    (smaller size or latency ``x`` is better, higher metric ``y`` is better)."""
    flags = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        dominated = any((xo <= x and yo >= y) and (xo < x or yo > y) for j, (xo, yo) in enumerate(zip(xs, ys))
                        if j != i)
        flags.append(not dominated)
    return flags


def pareto_data(points: Sequence[dict[str, Any]], x: str, y: str, label: str = "plan") -> dict[str, list]:
    """Columns for a Pareto plot from sweep points (dicts holding ``x``, ``y`` and a ``label``);
    points missing either value are left out. ``frontier`` flags the non-dominated ones."""
    kept = [p for p in points if isinstance(p.get(x), (int, float)) and isinstance(p.get(y), (int, float))]
    xs, ys = [float(p[x]) for p in kept], [float(p[y]) for p in kept]
    return {"x": xs, "y": ys, "label": [str(p.get(label, "")) for p in kept], "frontier": pareto_front(xs, ys)}
