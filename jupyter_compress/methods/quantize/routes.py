"""Choosing the runtime a region runs on by measuring it (issue 21).

Each candidate route (OpenVINO + NNCF int8 with float operations in f32 or bf16, ONNX Runtime int8, torch's
int8 Linears) is built for the region, checked for fidelity on the region's recorded calibration calls (mean
per-sample cosine of its first output to float's) and timed on the example call, interleaved so that a
burst of machine noise hits every route alike; where the example is a batch, its first row (cut to its real
length) is timed too, since latency-bound serving is batch 1 and the routes do not rank alike at both (MiniLM
int8 here: 45 ms at batch 32 and 2.3 ms at batch 1, each route's share of the two differing), and a route's
score is the geometric mean of the two times. The fastest route within the fidelity budget wins; when none
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

__all__ = ["candidate_backends", "Route", "measure_routes", "pick", "routes_note", "bf16_capable", "single_row",
           "timing_text"]


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
    ms: float | None = None  # the score routes are ranked by: geometric mean of ms_example and ms_one, if timed
    ms_example: float | None = None  # on the example call
    ms_one: float | None = None  # on its first row (batch 1), when the example is a batch
    batch: int | None = None  # the example's batch size


def single_row(example: tuple) -> tuple | None:
    """The example call's first row, cut to its real length when a right-padded 2-D ``attention_mask`` says
    what it is: the call batch-1 serving makes. None when the call has no batch axis > 1 shared by every tensor
    (a broadcast or a state tensor: which axis is the batch is not ours to guess), or nests its tensors."""
    args, kwargs = example
    values = [*args, *kwargs.values()]
    if any(isinstance(v, (list, tuple, dict)) for v in values):
        return None
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors or any(t.dim() == 0 for t in tensors):
        return None
    batch = tensors[0].shape[0]
    if batch < 2 or any(t.shape[0] != batch for t in tensors):
        return None
    mask = kwargs.get("attention_mask")
    length = None
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        real = int((mask[0] != 0).sum())
        if 0 < real < mask.shape[1] and bool((mask[0, :real] != 0).all()):
            length = real

    def cut(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if length is not None and value.dim() == 2 and value.shape == mask.shape:
            return value[:1, :length].contiguous()
        return value[:1].contiguous()

    return tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}


def timing_text(route: Route) -> str:
    """'12.30 ms at batch 32, 1.45 ms at batch 1' (or the example's time alone)."""
    if route.ms_example is None:
        return "not timed"
    if route.ms_one is None:
        return f"{route.ms_example:.2f} ms"
    return f"{route.ms_example:.2f} ms at batch {route.batch}, {route.ms_one:.2f} ms at batch 1"


def _batch(example: tuple) -> int | None:
    args, kwargs = example
    return next((v.shape[0] for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.dim()), None)


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
    region's raw output, whose padded positions mean nothing); and its times: the fastest of ``rounds``
    interleaved timings (the least disturbed by other work on the machine) on the example call and, when it is
    a batch, on its first row (``single_row``), on the user's thread count, after a warm-up; ``ms`` is their
    geometric mean (the example's time alone when a route cannot run the single row: then no route's batch-1
    time counts). The model is restored whatever happens."""
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
        one = single_row(example)
        with user_threads():
            for r in built:
                try:
                    r.module(*args, **kwargs)  # warm-up: kernels compiled, weights packed
                except Exception as exc:  # e.g. a call that carries state (a cache) and cannot be repeated
                    r.error, r.module = f"{type(exc).__name__}: {str(exc)[:100]}", None
            built = [r for r in built if r.module is not None]
            if one is not None:
                try:
                    for r in built:
                        r.module(*one[0], **one[1])
                except Exception:  # a route that cannot take one row: batch 1 is left out for every route
                    one = None
            if built:
                _time(built, example, one, rounds)


def _time(routes: list[Route], example: tuple, one: tuple | None, rounds: int) -> None:
    """Each route's fastest of ``rounds`` timings on the example call and (``one``) its single row, the fastest
    of 3 each round (a short call), interleaved with the order rotated each round; warmed up by the caller."""
    args, kwargs = example
    times: dict[int, list[float]] = {id(r): [] for r in routes}
    ones: dict[int, list[float]] = {id(r): [] for r in routes}
    for i in range(rounds):
        for r in routes[i % len(routes):] + routes[:i % len(routes)]:
            start = time.perf_counter()
            r.module(*args, **kwargs)
            times[id(r)].append((time.perf_counter() - start) * 1e3)
            for _ in range(3 if one is not None else 0):
                start = time.perf_counter()
                r.module(*one[0], **one[1])
                ones[id(r)].append((time.perf_counter() - start) * 1e3)
    for r in routes:
        r.ms_example, r.ms_one, r.batch = min(times[id(r)]), min(ones[id(r)]) if one is not None else None, \
            _batch(example)
        r.ms = r.ms_example if r.ms_one is None else (r.ms_example * r.ms_one) ** 0.5


def pick(routes: list[Route], min_cosine: float) -> tuple[Route, bool]:
    """The fastest route within the budget (True), else the most faithful one (False)."""
    measured = [r for r in routes if r.module is not None and r.ms is not None]
    within = [r for r in measured if r.cosine is not None and r.cosine >= min_cosine]
    if within:
        return min(within, key=lambda r: r.ms), True
    return max(measured, key=lambda r: r.cosine if r.cosine is not None else float("-inf")), False


def routes_note(region: str, routes: list[Route], chosen: Route, within: bool, min_cosine: float,
                float_route: Route | None) -> str:
    parts = []
    float_ms = float_route.ms if float_route is not None else None
    for r in routes:
        if r.module is None and r.ms is None:
            parts.append(f"{r.backend}: not built ({r.error})")
            continue
        speed = f", {_ratio(float_route, r):.2f}x float" if float_ms and r.ms else ""
        parts.append(f"{r.backend} {timing_text(r)}{speed}, cosine {r.cosine:.4f}")
    verdict = (f"chose {chosen.backend}, the fastest with cosine >= {min_cosine:g}" if within else
               f"no route reached cosine {min_cosine:g}; chose {chosen.backend}, the most faithful")
    timed = "times on the example call and on its first row, ranked by their geometric mean" \
        if chosen.ms_one is not None else "time on the example call"
    return (f"Routes measured for {region} ({timed}; cosine of the model's output to float's on the calibration "
            f"data): {'; '.join(parts)}; "
            f"float {timing_text(float_route)}. {verdict}; the plan records it, so a replay builds it without "
            f"measuring." if float_ms else f"Routes measured for {region}: {'; '.join(parts)}. {verdict}.")


def _ratio(slow: Route, fast: Route) -> float:
    """slow / fast on the scores both have (the example's time alone when one lacks the batch-1 time)."""
    if (slow.ms_one is None) != (fast.ms_one is None):
        return slow.ms_example / fast.ms_example
    return slow.ms / fast.ms


def time_float(region: nn.Module, example: tuple, rounds: int = 5) -> Route:
    """The float region timed as :func:`measure_routes` times a route (the example call, its first row)."""
    route = Route("float", region)
    args, kwargs = example
    one = single_row(example)
    with torch.inference_mode(), user_threads():
        region(*args, **kwargs)
        if one is not None:
            try:
                region(*one[0], **one[1])
            except Exception:  # the float model cannot take one row: its batch-1 time is left out
                one = None
        _time([route], example, one, rounds)
    return route


Builder = Callable[[str], Route]
