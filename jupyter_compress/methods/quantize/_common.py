"""Shared pieces of the quantization methods: errors, SQNR, calibration batches and per-layer capture."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ...core.inputs import INPUT_ERRORS
from ...core.metrics import call_model, eval_mode, relative_error
from ...errors import CompressError
from .._common import Conv1D

__all__ = ["unsupported_note", "BackendUnavailableError", "CalibrationDataError", "sqnr_db", "calibration_batches", "capture_inputs",
           "run_batches", "fresh", "quiet", "output_error", "expected_shape", "held_count"]


class BackendUnavailableError(CompressError, ImportError):
    """A quantization backend the machine lacks was asked for."""


class CalibrationDataError(CompressError, ValueError):
    """Calibration data is missing or does not fit the model."""


_WEIGHT_LAYERS = (nn.Linear, Conv1D, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d, nn.Embedding, nn.EmbeddingBag, nn.LSTM, nn.GRU, nn.RNN)


def unsupported_note(model: nn.Module, supported: tuple[type, ...], method: str) -> list[str]:
    """A note naming the weight layers (Embedding, LSTM, Conv, ...) this method leaves in float."""
    left: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHT_LAYERS) and not isinstance(module, supported):
            left.setdefault(type(module).__name__, []).append(name)
    if not left:
        return []
    parts = [f"{kind} x{len(found)} ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})"
             for kind, found in sorted(left.items())]
    return [f"Left in float, as {method} does not handle their type: {'; '.join(parts)}."]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence torch.ao's deprecation warnings (quantized tensors, eager quantization API) inside our calls, and
    torch.onnx's note on exporting advanced indexing (Hugging Face attention masks): a route whose graph
    computed wrongly would fail its fidelity check against the float model, which is what the user sees."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning,
                                message=r".*(quantiz|deprecat|TracerWarning|Exporting aten::index).*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def held_count(tensors, nonzero: bool, zero: Any = 0) -> int:
    """Elements (or non-zero elements: those not equal to ``zero``) of the tensors a quantized layer holds
    in place of its parameters; None entries (no bias) are skipped. See ``core.metrics.count_params``."""
    tensors = [t for t in tensors if t is not None]
    if not nonzero:
        return sum(t.numel() for t in tensors)
    return sum(int(torch.count_nonzero(t.detach() != zero)) if zero != 0 else int(torch.count_nonzero(t.detach()))
               for t in tensors)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10 log10(||ref||^2 / ||ref - approx||^2) in dB (inf when exact)."""
    # float64 sums over slices (as core.metrics.relative_error): a few MB of work for any layer size
    ref, app = reference.detach().reshape(-1), approx.detach().reshape(-1)
    noise = signal = 0.0
    for start in range(0, ref.numel(), 1 << 20):
        r = ref[start:start + (1 << 20)].double()
        d = r - app[start:start + (1 << 20)].double()
        signal += float(torch.dot(r, r))
        noise += float(torch.dot(d, d))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(torch.log10(torch.tensor(signal / noise))) if signal > 0 else float("-inf")


def calibration_batches(ctx: Any, *, required: bool, method: str, limit: int = 64) -> list[Any]:
    """The batches to calibrate on: ``ctx.data`` (one batch, or a list / iterable of batches), else
    ``ctx.example_inputs`` (one batch). Raises :class:`CalibrationDataError` when required and absent."""
    data = getattr(ctx, "data", None)
    example = getattr(ctx, "example_inputs", None)
    if data is None:
        batches = [] if example is None else [example]
    elif _labelled_pair(data, example):
        # (X, y) as everywhere else in jupyter_compress (core.data): calibrate on X, in batches
        from ...core.data import iter_batches

        batches = [inputs for inputs, _ in iter_batches(data, max_batches=limit)]
    elif isinstance(data, (torch.Tensor, Mapping, tuple)):
        batches = [data]
    else:
        try:
            batches = []
            for batch in data:
                batches.append(batch[0] if _labelled_pair(batch, example) else batch)
                if len(batches) >= limit:
                    break
        except TypeError as exc:
            raise CalibrationDataError(f"The calibration data for {method!r} must be a batch (tensor, tuple or "
                                       f"dict of model inputs) or a list of batches; got a "
                                       f"{type(data).__name__}.") from exc
    if required and not batches:
        raise CalibrationDataError(f"{method!r} needs calibration data: pass data=<a batch or a list of batches> "
                                   f"(or example_inputs=) to compress.")
    return batches


def _labelled_pair(data: Any, example: Any) -> bool:
    """``(inputs, targets)``: two tensors / arrays of the same length, for a model whose example inputs
    are a single tensor (a model taking two inputs is given them as a tuple of example inputs)."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return False
    if isinstance(example, (tuple, list)) and len(example) == 2:
        return False
    x, y = data
    return all(hasattr(v, "shape") and len(v.shape) > 0 for v in (x, y)) and len(x) == len(y)


def _shapes(batch: Any) -> list[tuple[str, torch.Tensor]]:
    if isinstance(batch, torch.Tensor):
        return [("input", batch)]
    if isinstance(batch, Mapping):
        return [(str(k), v) for k, v in batch.items() if isinstance(v, torch.Tensor)]
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1 and isinstance(batch[0], Mapping):  # (features,): one mapping passed whole
            return _shapes(batch[0])
        return [(f"input {i}", v) for i, v in enumerate(batch) if isinstance(v, torch.Tensor)]
    return []


def expected_shape(model: nn.Module, names: list[str], example_inputs: Any) -> str:
    """Words for the input shape the model expects: from the example inputs, else from the first layer."""
    if example_inputs is not None and _shapes(example_inputs):
        return ", ".join(f"{k} (N, {', '.join(map(str, v.shape[1:]))})" for k, v in _shapes(example_inputs))
    for name in names:
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Linear):
            return f"(..., {layer.in_features}) at its first layer {name!r}"
        if isinstance(layer, nn.Conv2d):
            return f"(N, {layer.in_channels}, H, W) at its first layer {name!r}"
        if isinstance(layer, nn.Conv1d):
            return f"(N, {layer.in_channels}, L) at its first layer {name!r}"
    return "the shape of its example inputs"


def _check_batch(index: int, batch: Any, example_inputs: Any, expected: str) -> None:
    if example_inputs is None:
        return
    ref, got = _shapes(example_inputs), _shapes(batch)
    mismatch = len(ref) != len(got)
    for (_, r), (_, g) in zip(ref, got):
        if r.dim() != g.dim() or (r.is_floating_point() and r.shape[1:] != g.shape[1:]):
            mismatch = True
    if mismatch:
        got_text = ", ".join(f"{k} {tuple(v.shape)}" for k, v in got) or type(batch).__name__
        raise CalibrationDataError(f"Calibration batch {index} has shape {got_text}, but the model expects "
                                   f"{expected}; pass batches shaped like example_inputs.")


def fresh(batch: Any) -> Any:
    """A shallow copy of a dict batch: sentence-transformers writes its outputs into the features dict it is
    given, and a batch run twice must not carry the first run's outputs into the second."""
    if isinstance(batch, Mapping):
        return dict(batch)
    if isinstance(batch, tuple):
        return tuple(fresh(b) for b in batch)
    return batch


def run_batches(model: nn.Module, batches: list[Any], names: list[str], example_inputs: Any,
                stop: type[BaseException] | None = None) -> None:
    """Run ``model`` on each batch (eval mode, no grad), turning shape errors into a clear message. ``stop``:
    an exception class a hook raises to end the current batch early (the next batch then runs)."""
    expected = expected_shape(model, names, example_inputs)
    ended = () if stop is None else stop
    with eval_mode(model), torch.no_grad():
        for i, batch in enumerate(batches):
            _check_batch(i, batch, example_inputs, expected)
            try:
                call_model(model, fresh(batch))
            except ended:
                continue
            except INPUT_ERRORS as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                got = ", ".join(f"{k} {tuple(v.shape)}" for k, v in _shapes(batch)) or type(batch).__name__
                raise CalibrationDataError(f"Calibration batch {i} ({got}) does not fit the model ({first}); "
                                           f"the model expects {expected}.") from exc


@contextlib.contextmanager
def capture_inputs(model: nn.Module, names: list[str], max_rows: int = 4096,
                   flatten: bool = False) -> Iterator[dict[str, list]]:
    """Record the first positional input of each named layer while the model runs: at most ``max_rows``
    rows (rows of the last dimension when ``flatten``, for Linears; else samples along dim 0)."""
    store: dict[str, list] = {n: [] for n in names}
    counts = dict.fromkeys(names, 0)

    def hook_for(name: str):
        def hook(module, args):
            if args and isinstance(args[0], torch.Tensor) and counts[name] < max_rows:
                x = args[0].detach()
                if flatten:
                    x = x.reshape(-1, x.shape[-1])[: max_rows - counts[name]]
                store[name].append(x)
                counts[name] += x.shape[0] if x.dim() else 1
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def output_error(reference_fn, approx_fn, inputs: list[torch.Tensor]) -> float | None:
    """Relative output error ||f(x) - g(x)|| / ||f(x)|| over the recorded inputs (None without inputs)."""
    if not inputs:
        return None
    with torch.no_grad():
        ref = torch.cat([reference_fn(x).reshape(-1) for x in inputs])
        out = torch.cat([approx_fn(x).reshape(-1) for x in inputs])
    return relative_error(ref, out)
