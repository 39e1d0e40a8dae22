"""Speed and memory of inference: latency p50/p95 and throughput at chosen batch sizes; peak memory.

Peak memory is measured with ``torch.profiler`` (``profile_memory=True``): its allocator events
are replayed in time order and the highest running total is the peak extra memory the forward
pass allocated through torch's allocator (activations and workspaces; the weights already held
are reported separately). ``tracemalloc`` cannot see torch's allocations and process RSS is a
high-water mark that never goes down, so neither could measure a single pass.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .metrics import call_model, eval_mode, measure_latency

__all__ = ["batch_of", "speed_metrics", "peak_memory_bytes", "paired_latency"]


def batch_of(inputs: Any, batch_size: int) -> Any:
    """``inputs`` with its leading (batch) dimension cut or tiled to ``batch_size`` (dicts, tuples too)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            return inputs
        reps = -(-batch_size // inputs.shape[0])
        tiled = inputs.repeat(reps, *([1] * (inputs.dim() - 1))) if reps > 1 else inputs
        return tiled[:batch_size]
    if isinstance(inputs, Mapping):
        return {k: batch_of(v, batch_size) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(batch_of(v, batch_size) for v in inputs)
    return inputs


def speed_metrics(model: nn.Module, example_inputs: Any, *, batch_sizes: tuple[int, ...] | None = None,
                  repeats: int = 20, warmup: int = 3, max_time_s: float = 2.0) -> dict[str, float]:
    """``latency_ms`` (p50) and ``latency_p95_ms`` for ``example_inputs`` as given, and for each batch
    size ``b`` in ``batch_sizes``: ``latency_ms@b``, ``latency_p95_ms@b`` and ``throughput@b`` (samples/s)."""
    out: dict[str, float] = {}
    lat = measure_latency(model, example_inputs, repeats=repeats, warmup=warmup, max_time_s=max_time_s)
    out["latency_ms"], out["latency_p95_ms"] = lat.median_ms, lat.p95_ms
    if lat.batch_size:
        out["throughput"] = lat.batch_size / (lat.median_ms / 1e3)
    for b in batch_sizes or ():
        lat = measure_latency(model, batch_of(example_inputs, b), repeats=repeats, warmup=warmup,
                              max_time_s=max_time_s)
        out[f"latency_ms@{b}"], out[f"latency_p95_ms@{b}"] = lat.median_ms, lat.p95_ms
        out[f"throughput@{b}"] = b / (lat.median_ms / 1e3)
    return out


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: the profiler's native layer prints start/stop lines on some builds,
    below Python's ``sys.stderr`` (so ``contextlib.redirect_stderr`` cannot catch them)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor (embedded interpreters): leave it be
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory_bytes(model: nn.Module, example_inputs: Any) -> int:
    """Peak bytes allocated by torch during one forward pass (see the module docstring for the method)."""
    from torch.profiler import ProfilerActivity, profile

    with eval_mode(model), torch.inference_mode():
        call_model(model, example_inputs)  # warm: lazy initialisation must not count
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            call_model(model, example_inputs)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return int(peak)


def paired_latency(a: nn.Module, b: nn.Module, example_inputs: Any, *, rounds: int = 15, warmup: int = 2,
                   max_time_s: float = 4.0) -> tuple[float, float]:
    """Median latency (ms) of ``a`` and ``b`` timed in alternation, so that load from other processes
    hits both alike (their ratio is far steadier than that of two separate measurements)."""
    import statistics
    import time

    times: tuple[list[float], list[float]] = ([], [])
    with eval_mode(a), eval_mode(b), torch.inference_mode():
        for _ in range(warmup):
            call_model(a, example_inputs)
            call_model(b, example_inputs)
        start_all = time.perf_counter()
        for i in range(rounds):
            if i >= 3 and time.perf_counter() - start_all > max_time_s:
                break
            for model, bucket in ((a, times[0]), (b, times[1])) if i % 2 == 0 else ((b, times[1]), (a, times[0])):
                start = time.perf_counter()
                call_model(model, example_inputs)
                bucket.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])
