"""ONNX export of compressed models, verified by running both and comparing.

Uses torch's exporter (the TorchScript-based one, ``dynamo=False``: it needs no extra packages and
handles the standard layers our replacements are built from). When onnxruntime is installed (it is a
dependency), the exported file is run on the same inputs: outputs are compared within stated
tolerances, and ONNX Runtime's latency is measured beside PyTorch's.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.metrics import call_model, eval_mode, measure_latency
from ..errors import CompressError

__all__ = ["ExportResult", "export_onnx"]


@dataclasses.dataclass
class ExportResult:
    path: Path
    bytes: int
    verified: bool | None  # None: onnxruntime not available
    max_abs_error: float | None
    max_rel_error: float | None
    rtol: float
    atol: float
    torch_ms: float | None
    onnxruntime_ms: float | None

    def __repr__(self) -> str:
        if self.verified is None:
            return f"ExportResult({self.path}, {self.bytes:,} bytes, not verified: onnxruntime is not installed)"
        speed = (f"; latency PyTorch {self.torch_ms:.3f} ms, ONNX Runtime {self.onnxruntime_ms:.3f} ms "
                 f"({self.torch_ms / self.onnxruntime_ms:.2f}x)") if self.onnxruntime_ms else ""
        verdict = "outputs agree" if self.verified else "OUTPUTS DIFFER"
        return (f"ExportResult({self.path}, {self.bytes:,} bytes, {verdict}: max abs error {self.max_abs_error:.2e}, "
                f"max rel error {self.max_rel_error:.2e} (rtol {self.rtol:g}, atol {self.atol:g}){speed})")


def _flat_outputs(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict) or hasattr(value, "values"):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat_outputs(v)]
    return []


class _Flat(nn.Module):
    """Calls the model like ``call_model`` does and returns its tensor outputs as a flat tuple."""

    def __init__(self, model: nn.Module, keys: list[str] | None):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *tensors):
        out = call_model(self.model, dict(zip(self.keys, tensors)) if self.keys is not None else tensors)
        return tuple(_flat_outputs(out))


def _inputs(example_inputs: Any) -> tuple[tuple[torch.Tensor, ...], list[str] | None, list[str]]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), None, ["input"]
    if isinstance(example_inputs, Mapping):
        keys = [k for k, v in example_inputs.items() if isinstance(v, torch.Tensor)]
        return tuple(example_inputs[k] for k in keys), keys, [str(k) for k in keys]
    if isinstance(example_inputs, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs), None, [f"input{i}" for i in range(len(example_inputs))]
    raise CompressError("export_onnx takes example inputs as a tensor, a tuple of tensors or a dict of tensors; "
                        f"got {type(example_inputs).__name__}.")


def export_onnx(model: nn.Module, example_inputs: Any, path: str | os.PathLike, *, verify: bool = True,
                rtol: float = 1e-3, atol: float = 1e-4, opset: int = 17, time_it: bool = True) -> ExportResult:
    """Export ``model`` (eval mode) to ONNX at ``path`` with a dynamic batch dimension, then (``verify``)
    run it in ONNX Runtime and compare with PyTorch: every output must satisfy
    ``|onnx - torch| <= atol + rtol * |torch|`` (float32 kernels differ in summation order, hence the
    default 1e-3 / 1e-4). The file is written atomically.
    """
    runs_in_ort = [n for n, m in model.named_modules() if type(m).__name__ == "OrtModule"]
    if runs_in_ort:
        raise CompressError(f"'{runs_in_ort[0]}' already runs in ONNX Runtime (the int8 preset's route), so this "
                            f"model is not exported again; export the float model, or quantize with backend='torch'.")
    tensors, keys, names = _inputs(example_inputs)
    flat = _Flat(model, keys)
    with eval_mode(model), torch.no_grad():
        reference = flat(*tensors)
    if not reference:
        raise CompressError("The model returned no tensors on the example inputs; nothing to export.")
    out_names = [f"output{i}" for i in range(len(reference))]
    axes = {n: {0: "batch"} for n in names + out_names}
    buffer = io.BytesIO()
    try:
        with eval_mode(model), torch.enable_grad():  # grad mode keeps torch's fused fast paths out of the graph
            torch.onnx.export(flat, tensors, buffer, dynamo=False, input_names=names, output_names=out_names,
                              dynamic_axes=axes, opset_version=opset)
    except Exception as exc:  # noqa: BLE001 - the exporter's errors name the op; give the one line that matters
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompressError(f"ONNX export failed ({type(exc).__name__}: {first[:200]}); a layer type the exporter "
                            f"does not support (e.g. a torch-quantized layer) is the usual cause.") from exc
    data = buffer.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    result = ExportResult(path, len(data), None, None, None, rtol, atol, None, None)
    if not verify:
        return result
    try:
        import onnxruntime as ort
    except ImportError:
        return result
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {n: t.detach().cpu().numpy() for n, t in zip(names, tensors)}
    outputs = [torch.from_numpy(o) for o in session.run(None, feed)]
    abs_err = max(float((o - r.cpu()).abs().max()) if r.numel() else 0.0 for o, r in zip(outputs, reference))
    rel_err = max(float((o - r.cpu()).norm() / r.cpu().norm().clamp_min(1e-12)) for o, r in zip(outputs, reference))
    ok = all(o.shape == r.shape and torch.allclose(o, r.cpu().to(o.dtype), rtol=rtol, atol=atol)
             for o, r in zip(outputs, reference))
    result.verified, result.max_abs_error, result.max_rel_error = ok, abs_err, rel_err
    if time_it:
        result.torch_ms = measure_latency(model, example_inputs, max_time_s=1.0).median_ms
        times = []
        start_all = time.perf_counter()
        while len(times) < 30 and (len(times) < 3 or time.perf_counter() - start_all < 1.0):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        result.onnxruntime_ms = sorted(times)[len(times) // 2]
    return result
