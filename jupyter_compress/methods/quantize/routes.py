"""Choosing the runtime a region runs on by measuring it (issue 21).

Each candidate route (OpenVINO + NNCF int8 with float operations in f32 or bf16, ONNX Runtime int8, torch's
int8 Linears) is built for the region, checked for fidelity on the region's recorded calibration calls (mean
per-sample cosine of its first output to float's) and timed on the example call, interleaved so that a
burst of machine noise hits every route alike. The fastest route within the fidelity budget wins; when none
is within it, the most faithful one does, and the report says so. The choice is pinned in the plan
(``backend=...``): a replay builds that route alone and measures nothing, so it makes the same model.

No library does this choice for a PyTorch module on the user's own inputs (Optimum and OpenVINO's tools
pick a route per export, not by measuring the alternatives), so it is ours.
"""

from __future__ import annotations

import copy
import importlib.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...core.metrics import call_model, eval_mode, primary_output, user_threads
from ...core.metrics_task import fidelity_metrics
from ...core.modules import swap_submodule
from ._common import fresh
from .ort import ort_available
from .ov import nncf_available

__all__ = ["candidate_backends", "Route", "measure_routes", "pick", "routes_note", "bf16_capable"]


def bf16_capable() -> bool:
    """The CPU plugin computes in bf16 here (it reports bf16 as its default inference precision)."""
    if not nncf_available():
        return False
    try:
        import openvino as ov

        return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") == ov.Type.bf16
    except Exception:  # a plugin that cannot say: no bf16 candidate
        return False


def candidate_backends(requested: str, whole_region: bool) -> list[str]:
    """The routes ``backend=requested`` may take, best guess first (the measurement decides)."""
    if requested != "auto":
        return [requested]
    out = []
    if whole_region and nncf_available():
        out.append("openvino")
        if bf16_capable():
            out.append("openvino-bf16")
    if ort_available() and importlib.util.find_spec("onnx") is not None:
        out.append("onnxruntime")
    return out + ["torch"]


@dataclass
class Route:
    backend: str
    module: nn.Module | None = None
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    error: str | None = None
    cosine: float | None = None
    ms: float | None = None


def torch_region(region: nn.Module, rel_paths: list[str], per_channel: bool) -> nn.Module:
    """A copy of the region with its selected Linears on torch's int8 kernels (for timing it)."""
    from .qlinear import DynamicInt8Linear

    alt = copy.deepcopy(region)
    for rel in rel_paths:
        swap_submodule(alt, rel, DynamicInt8Linear.from_linear(alt.get_submodule(rel), per_channel))
    return alt


def _cosine(reference: Any, got: Any) -> float:
    """Mean per-sample cosine of the model's primary output (sentence embedding, logits, ...)."""
    a, b = primary_output(reference), primary_output(got)
    if a is None or b is None or a.shape != b.shape:
        return float("-inf")
    return fidelity_metrics(a.float(), b.float())["cosine"]


def measure_routes(model: nn.Module, region: str, routes: list[Route], batches: list, example: tuple,
                   rounds: int = 5, fidelity_batches: int = 4) -> None:
    """Fill each built route's ``cosine``: the whole model run with the route in place of ``region`` on up to
    ``fidelity_batches`` calibration batches, its primary output against float's (what the user sees, not the
    region's raw output, whose padded positions mean nothing); and ``ms``: the region's median of ``rounds``
    interleaved timings on the example call (the fastest of ``rounds``: the least disturbed by other work on
    the machine), on the user's thread count, after a warm-up. The model is restored whatever happens."""
    built = [r for r in routes if r.module is not None]
    float_region = model.get_submodule(region)
    with torch.inference_mode(), eval_mode(model):
        references = [(b, call_model(model, fresh(b))) for b in batches[:fidelity_batches]]
        for route in built:
            try:
                if region:
                    swap_submodule(model, region, route.module)
                served = model if region else route.module  # region "": the route serves the whole model
                route.cosine = statistics.fmean(_cosine(ref, call_model(served, fresh(b))) for b, ref in references)
            except Exception as exc:  # a route that cannot run these inputs is out of the running
                route.error, route.module = f"{type(exc).__name__}: {str(exc)[:100]}", None
            finally:
                if region:
                    swap_submodule(model, region, float_region)
        built = [r for r in built if r.module is not None]
        args, kwargs = example
        times: dict[int, list[float]] = {id(r): [] for r in built}
        with user_threads():
            for r in built:
                try:
                    r.module(*args, **kwargs)  # warm-up: kernels compiled, weights packed
                except Exception as exc:  # e.g. a call that carries state (a cache) and cannot be repeated
                    r.error, r.module = f"{type(exc).__name__}: {str(exc)[:100]}", None
            built = [r for r in built if r.module is not None]
            for i in range(rounds):
                for r in built[i % len(built):] + built[:i % len(built)]:  # order rotated each round
                    start = time.perf_counter()
                    r.module(*args, **kwargs)
                    times[id(r)].append((time.perf_counter() - start) * 1e3)
        for r in built:
            r.ms = min(times[id(r)])


def pick(routes: list[Route], min_cosine: float) -> tuple[Route, bool]:
    """The fastest route within the budget (True), else the most faithful one (False)."""
    measured = [r for r in routes if r.module is not None and r.ms is not None]
    within = [r for r in measured if r.cosine is not None and r.cosine >= min_cosine]
    if within:
        return min(within, key=lambda r: r.ms), True
    return max(measured, key=lambda r: r.cosine if r.cosine is not None else float("-inf")), False


def routes_note(region: str, routes: list[Route], chosen: Route, within: bool, min_cosine: float,
                float_ms: float | None) -> str:
    parts = []
    for r in routes:
        if r.module is None and r.ms is None:
            parts.append(f"{r.backend}: not built ({r.error})")
            continue
        speed = f", {float_ms / r.ms:.2f}x float" if float_ms and r.ms else ""
        parts.append(f"{r.backend} {r.ms:.1f} ms{speed}, cosine {r.cosine:.4f}")
    verdict = (f"chose {chosen.backend}, the fastest with cosine >= {min_cosine:g}" if within else
               f"no route reached cosine {min_cosine:g}; chose {chosen.backend}, the most faithful")
    return (f"Routes measured for {region} (time on the example call; cosine of the model's output to float's on the calibration data): "
            f"{'; '.join(parts)}; float {float_ms:.1f} ms. {verdict}; the plan records it, so a replay builds "
            f"it without measuring." if float_ms else f"Routes measured for {region}: {'; '.join(parts)}. {verdict}.")


def time_float(region: nn.Module, example: tuple, rounds: int = 5) -> float:
    args, kwargs = example
    with torch.inference_mode(), user_threads():
        region(*args, **kwargs)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            region(*args, **kwargs)
            times.append((time.perf_counter() - start) * 1e3)
    return min(times)


Builder = Callable[[str], Route]
