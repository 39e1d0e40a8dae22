"""Basic measures: parameters, bytes by dtype, sparse encodings, latency, accuracy, hashes."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .inputs import call_model

__all__ = [
    "count_params",
    "count_nonzero",
    "layer_counts",
    "bytes_by_dtype",
    "model_bytes",
    "sparse_encoding_bytes",
    "Latency",
    "measure_latency",
    "accuracy",
    "state_dict_hash",
    "relative_error",
    "eval_mode",
    "call_model",
]


def _unique_tensors(module: nn.Module, buffers: bool = True) -> Iterator[torch.Tensor]:
    """What ``module.parameters()`` (then ``module.buffers()``) yields, each tensor once, read straight from each
    submodule's dicts: the same tensors in the same order without a generator chain per submodule."""
    seen: set[int] = set()
    modules = list(module.modules())
    for attr in ("_parameters", "_buffers") if buffers else ("_parameters",):
        for m in modules:
            for t in getattr(m, attr).values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    yield t


def _held(module: nn.Module, nonzero: bool) -> int:
    """Parameter elements that modules hold outside ``nn.Parameter``s.

    A quantized layer keeps its weights as buffers (int8 / packed int4) and an ONNX Runtime region inside a
    graph; they are still the model's parameters. Such a module says how many with a method
    ``held_parameters(nonzero: bool = False) -> int`` (duck-typed: core imports no method module).
    """
    total = 0
    for m in module.modules():
        held = getattr(m, "held_parameters", None)
        if callable(held):
            total += int(held(nonzero=nonzero))
    return total


def count_params(module: nn.Module) -> int:
    """Number of parameter elements (tied parameters counted once), quantized weights included: a layer
    whose weights are stored as int8 / int4 buffers counts them as parameters (see ``held_parameters``)."""
    return sum(p.numel() for p in _unique_tensors(module, buffers=False)) + _held(module, nonzero=False)


def count_nonzero(module: nn.Module) -> int:
    """Number of non-zero parameter elements (quantized weights included, as in :func:`count_params`)."""
    return (sum(int(torch.count_nonzero(p.detach())) for p in _unique_tensors(module, buffers=False))
            + _held(module, nonzero=True))


def bytes_by_dtype(module: nn.Module, buffers: bool = True) -> dict[str, int]:
    """Bytes held in memory by parameters (and buffers), per dtype name."""
    out: dict[str, int] = {}
    for t in _unique_tensors(module, buffers=buffers):
        key = str(t.dtype).replace("torch.", "")
        out[key] = out.get(key, 0) + t.numel() * t.element_size()
    return out


def model_bytes(module: nn.Module, buffers: bool = True) -> int:
    return sum(bytes_by_dtype(module, buffers).values())


def layer_counts(module: nn.Module, nonzeros: bool = True) -> tuple[int, int | None, int]:
    """``(count_params, count_nonzero, model_bytes)`` of ``module`` in one walk over its submodules (what a
    report row needs of a layer); the non-zero count is None with ``nonzeros=False`` (the caller has it)."""
    modules = list(module.modules())
    seen: set[int] = set()
    params, nonzero, nbytes = 0, 0, 0
    for m in modules:
        for p in m._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                n = p.numel()
                params += n
                nbytes += n * p.element_size()
                if nonzeros:
                    nonzero += int(torch.count_nonzero(p.detach()))
    for m in modules:
        for b in m._buffers.values():
            if b is not None and id(b) not in seen:
                seen.add(id(b))
                nbytes += b.numel() * b.element_size()
        held = getattr(m, "held_parameters", None)
        if callable(held):
            params += int(held(nonzero=False))
            if nonzeros:
                nonzero += int(held(nonzero=True))
    return params, (nonzero if nonzeros else None), nbytes


def sparse_encoding_bytes(tensor: torch.Tensor) -> tuple[int, str]:
    """Bytes the tensor would take in the smaller of two sparse encodings, and its name.

    - ``csr``: non-zero values + an int32 column index per value + int32 row pointers;
    - ``bitmap``: non-zero values + one bit per element.
    A dense tensor is cheaper than both when it has few zeros; then ``dense`` is returned.
    """
    t = tensor.detach()
    numel, itemsize = t.numel(), t.element_size()
    nnz = int(torch.count_nonzero(t))
    rows = t.shape[0] if t.dim() > 1 else 1
    candidates = {
        "dense": numel * itemsize,
        "csr": nnz * (itemsize + 4) + (rows + 1) * 4,
        "bitmap": nnz * itemsize + (numel + 7) // 8,
    }
    name = min(candidates, key=lambda k: (candidates[k], k != "dense"))
    return candidates[name], name


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each module's own flag."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


@dataclasses.dataclass(frozen=True)
class Latency:
    median_ms: float
    p95_ms: float
    min_ms: float
    repeats: int
    batch_size: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys under which common model families return their main output (sentence-transformers, HF).
_OUTPUT_KEYS = ("sentence_embedding", "logits", "last_hidden_state", "token_embeddings")


@contextlib.contextmanager
def single_thread():
    """Run the enclosed torch math on one thread: results of SVDs, matmuls and reductions can differ in
    the last bit with the thread count, and a plan must give bit-identical weights in a notebook, a
    fresh kernel and the CLI whatever each process's thread setting."""
    threads = torch.get_num_threads()
    _OUTER_THREADS.append(threads)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        _OUTER_THREADS.pop()
        torch.set_num_threads(threads)


_OUTER_THREADS: list[int] = []


@contextlib.contextmanager
def user_threads():
    """Inside :func:`single_thread`, the caller's thread count again: for timing what the user will run
    (a route measured on one thread can rank differently on the user's threads)."""
    if not _OUTER_THREADS:
        yield
        return
    inner = torch.get_num_threads()
    torch.set_num_threads(_OUTER_THREADS[-1])
    try:
        yield
    finally:
        torch.set_num_threads(inner)


def primary_output(output: Any) -> torch.Tensor | None:
    """The tensor that stands for a model's output: the tensor itself, a well-known key of a dict
    (``sentence_embedding``, ``logits``, ...), else the first tensor of a dict, tuple or list; None if none."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) or hasattr(output, "keys"):
        for key in _OUTPUT_KEYS:
            if key in output and isinstance(output[key], torch.Tensor):
                return output[key]
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = primary_output(item)
            if found is not None:
                return found
    return None


def measure_latency(
    model: nn.Module, example_inputs: Any, *, repeats: int = 30, warmup: int = 5, min_time_s: float = 0.0,
    max_time_s: float | None = None,
) -> Latency:
    """Wall-clock latency of one forward pass: median and p95 over ``repeats`` after ``warmup``.

    ``max_time_s`` caps the time spent on a slow model (at least 3 timed runs are kept).
    Runs under ``torch.inference_mode`` in eval mode (flags restored afterwards).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got repeats={repeats}, warmup={warmup}.")
    times: list[float] = []
    with eval_mode(model), torch.inference_mode():
        start_all = time.perf_counter()
        for _ in range(warmup):
            call_model(model, example_inputs)
            if max_time_s is not None and time.perf_counter() - start_all > max_time_s / 4:
                break
        start_all = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start_all < min_time_s:
            if max_time_s is not None and len(times) >= 3 and time.perf_counter() - start_all > max_time_s:
                break
            start = time.perf_counter()
            call_model(model, example_inputs)
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    first = primary_output(example_inputs)
    batch = int(first.shape[0]) if first is not None and first.dim() > 0 else None
    return Latency(statistics.median(times), p95, times[0], len(times), batch)


def accuracy(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int = 512,
    transform: Callable[[Any], torch.Tensor] | None = None,
) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of a classifier on tensors ``inputs``/``targets``."""
    if len(inputs) != len(targets):
        raise ValueError(f"inputs and targets differ in length: {len(inputs)} vs {len(targets)}.")
    if len(inputs) == 0:
        raise ValueError("accuracy needs at least one example; got empty inputs.")
    correct = 0
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            out = model(inputs[start : start + batch_size])
            if transform is not None:
                out = transform(out)
            correct += int((out.argmax(dim=-1) == targets[start : start + batch_size]).sum())
    return correct / len(inputs)


def state_dict_hash(model: nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the state_dict (order-independent)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_CHUNK = 1 << 20  # elements per float64 slice in relative_error


def relative_error(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """||reference - approx||_F / ||reference||_F (0 when both are zero).

    Summed in float64 over slices of a million elements, so that measuring a big layer's error takes a few
    MB, not three float64 copies of the layer (which made the report the peak of a whole compression)."""
    ref, app = reference.detach(), approx.detach()
    if ref.shape != app.shape:
        ref, app = torch.broadcast_tensors(ref, app)
    ref, app = ref.reshape(-1), app.reshape(-1)
    ref_sq = diff_sq = 0.0
    for start in range(0, ref.numel(), _CHUNK):
        r = ref[start:start + _CHUNK].double()
        ref_sq += float(torch.dot(r, r))
        d = r - app[start:start + _CHUNK].double()
        diff_sq += float(torch.dot(d, d))
    denom, diff = math.sqrt(ref_sq), math.sqrt(diff_sq)
    if denom == 0:
        return 0.0 if diff == 0 else float("inf")
    return diff / denom
