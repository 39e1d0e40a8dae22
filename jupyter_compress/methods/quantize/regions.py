"""Regions for the ONNX Runtime route: the largest submodules, called as a unit, that hold selected Linears."""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ...core.metrics import count_nonzero, count_params, model_bytes, relative_error
from ...core.modules import swap_submodule
from ...core.report import LayerRow
from ...core.ties import tied_groups
from .._common import linear_view
from ._common import output_error, sqnr_db
from .ort import _flatten, export_quantized

__all__ = ["plan_regions", "record_calls", "build_region_rows", "compare_routes"]


_SCALARS = (bool, int, float, str, type(None))
MAX_CALLS = 32  # recorded calls per region: NNCF's calibration set (its default subset is 300 samples)


def _flat_args(call) -> bool:
    """Called with tensors and plain constants only: such a call can be exported with its constants kept."""
    args, kwargs, _ = call
    return all(isinstance(a, (torch.Tensor, *_SCALARS)) for a in (*args, *kwargs.values())) and any(
        isinstance(a, torch.Tensor) for a in (*args, *kwargs.values()))


class _Planner:
    def __init__(self, model: nn.Module, names: list[str]):
        self.model, self.names = model, names
        self.calls: dict[str, tuple[tuple, dict, Any]] = {}
        self.ties = tied_groups(model)

    def _tied_outside(self, path: str) -> bool:
        """A parameter of ``path`` shared with a layer outside it (BERT's decoder = word embeddings): the
        region would hold its own copy in the ONNX graph and untie it, so a smaller region is used."""
        for group in self.ties:
            inside = [m.startswith(path + ".") or m == path for m, _ in group]
            if any(inside) and not all(inside):
                return True
        return False

    def regions(self, climb: bool = False) -> list[tuple[str | None, list[str]]]:
        """``(region, linears)`` pairs; ``region`` None means 'each Linear on its own (torch route)'.

        With ``climb``, a region grows to its outermost ancestor that was called with tensors and constants,
        holds no other region's Linears and shares no weight outside: the whole called model (a BERT model
        with its embeddings) runs in the runtime, without PyTorch glue between its parts (at batch 1 that
        glue costs as much as the int8 MatMuls save)."""
        parts = [n.split(".") for n in self.names]
        common = []
        for level in zip(*parts):
            if len(set(level)) != 1:
                break
            common.append(level[0])
        found = self._visit(".".join(common), list(self.names))
        if not climb:
            return found
        out = []
        for region, group in found:
            if region is not None:
                others = [n for r, g in found if r != region for n in g]
                while "." in region:
                    parent = region.rsplit(".", 1)[0]
                    if (parent not in self.calls or not _flat_args(self.calls[parent]) or self._tied_outside(parent)
                            or any(n.startswith(parent + ".") for n in others)):
                        break
                    region = parent
                group = group + [n for r, g in found if r is None for n in g
                                 if n.startswith(region + ".") and n not in group]
            out.append((region, group))
        taken = {n for r, g in out if r is not None for n in g}
        return [(r, g) if r is not None else (r, [n for n in g if n not in taken]) for r, g in out
                if r is not None or any(n not in taken for n in g)]

    def _visit(self, path: str, group: list[str]) -> list[tuple[str | None, list[str]]]:
        module = self.model.get_submodule(path)
        if (path and path in self.calls and len(group) >= 2 and not isinstance(module, nn.Linear)
                and not self._tied_outside(path)):
            return [(path, group)]
        if group == [path]:
            return [(None, group)]
        children: dict[str, list[str]] = {}
        for name in group:
            rel = name[len(path) + 1:] if path else name
            children.setdefault(f"{path}.{rel.split('.')[0]}" if path else rel.split(".")[0], []).append(name)
        out: list[tuple[str | None, list[str]]] = []
        for child, members in children.items():
            out += self._visit(child, members)
        return out


@contextlib.contextmanager
def plan_regions(model: nn.Module, names: list[str], active: bool, leaves: bool = False) -> Iterator[_Planner]:
    """While the model runs, record the calls (args, kwargs; the first one's output too) of each ancestor
    of ``names`` (and of the named layers themselves with ``leaves``). The instance's ``forward`` is wrapped rather than hooked: callers such as
    sentence-transformers call ``module.forward(...)`` directly, which hooks do not see."""
    planner = _Planner(model, names)
    patched: list[tuple[nn.Module, bool, Any]] = []
    if active:
        ancestors = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
        for path in sorted(ancestors | (set(names) if leaves else set())):
            module = model.get_submodule(path)
            own = "forward" in module.__dict__
            original = module.forward

            def forward(*args, __path=path, __original=original, **kwargs):
                output = __original(*args, **kwargs)
                planner.calls.setdefault(__path, (args, dict(kwargs), output))
                return output

            patched.append((module, own, module.__dict__.get("forward")))
            module.forward = forward
    try:
        yield planner
    finally:
        _unpatch(patched)


def _unpatch(patched) -> None:
    for module, own, previous in patched:
        if own:
            module.forward = previous
        else:
            del module.forward


def record_calls(model: nn.Module, path: str, run: Callable[[], None], limit: int = MAX_CALLS) -> list[tuple]:
    """The first ``limit`` calls (args, kwargs) of submodule ``path`` while ``run()`` runs the calibration data:
    the calibration set of a runtime's own quantizer. Recorded for the chosen region only, after the plan."""
    module = model.get_submodule(path)
    calls: list[tuple] = []
    original = module.forward

    def forward(*args, **kwargs):
        if len(calls) < limit:
            calls.append((args, dict(kwargs)))
        return original(*args, **kwargs)

    patched = [(module, "forward" in module.__dict__, module.__dict__.get("forward"))]
    module.forward = forward
    try:
        run()
    finally:
        _unpatch(patched)
    return calls


def _int8_linear_bytes(linear: nn.Linear) -> int:
    """int8 weights + a float32 scale and an int8 zero point per output channel + the float32 bias."""
    out_f, in_f = linear.weight.shape
    return out_f * in_f + out_f * 5 + (out_f * 4 if linear.bias is not None else 0)


RUNTIMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "openvino-bf16": "OpenVINO"}


def build_region_rows(model: nn.Module, region: str, group: list[str], call, inputs: dict[str, list],
                      config, simulate: Callable, backend: str = "onnxruntime",
                      calibration: list | None = None) -> tuple[nn.Module, list[LayerRow], list[str]]:
    """The region exported to ``backend`` with int8 MatMuls, and its report rows: one per Linear and one for
    the region's other layers. ONNX Runtime: ``quantize_dynamic`` (per channel); OpenVINO: NNCF's static int8
    on ``calibration`` (the region's recorded calls), its float operations in f32 or (``openvino-bf16``) bf16."""
    module = model.get_submodule(region)
    args, kwargs, output = call
    selected = set(group)
    # Full 8-bit weights: ONNX Runtime's u8s8 AVX2 kernels can saturate without VNNI, and 7-bit weights
    # (reduce_range) avoid that, but 8 bits measured cosine 0.9925 on MiniLM on an AVX2 CPU without VNNI
    # (issue 4) and 0.993 here (VNNI), so the extra bit of precision is kept.
    reduce_range = False
    bits = 8
    paths: dict[str, bool] = {}
    rows: list[LayerRow] = []
    errors: dict[str, float | None] = {}
    for rel, layer in module.named_modules():
        full = f"{region}.{rel}"
        if isinstance(layer, nn.Linear) and rel:
            err = output_error(layer, simulate(layer, config.per_channel, bits), inputs.get(full, [])) if full in selected \
                else None
            errors[full] = err
            paths[rel] = full in selected and not (config.max_error and err is not None and err > config.max_error)
    runtime = RUNTIMES[backend]
    if backend == "onnxruntime":
        new, counts = export_quantized(module, args, kwargs, output, paths, label=f"int8 {type(module).__name__}",
                                       reduce_range=reduce_range)
        how = "int8 MatMuls, per-channel weights; other operations in float32"
    else:
        from .ov import export_openvino

        if not all(paths.values()):  # NNCF would quantize them too: this route is offered only for whole regions
            raise ValueError("the OpenVINO route quantizes every Linear of its region")
        new = export_openvino(module, args, kwargs, output, label=f"int8 {type(module).__name__}",
                              calibration=calibration or [(args, kwargs)], seq_bucket=config.seq_bucket,
                              trim=getattr(config, "trim_padding", "off") != "off")
        new.precision = "bfloat16" if backend == "openvino-bf16" else "float32"
        counts = {rel: 1 for rel in paths}
        how = (f"NNCF static int8 on {len(calibration or [1])} calibration call(s){', transformer preset' if new.transformer else ''}; "
               f"other operations in {new.precision}; {new.shapes_note}")
    with torch.no_grad():
        got = _flatten(new(*args, **kwargs))[0]
    region_error = relative_error(_flatten(output)[0], got)
    sum_params = sum_nz = sum_before = sum_after = 0
    for name in group:
        layer: nn.Linear = model.get_submodule(name)
        rel = name[len(region) + 1:]
        quantized = paths.get(rel, False) and counts.get(rel, 0) > 0
        skipped = None
        if not paths.get(rel, False):
            skipped = f"kept in float: relative output error {errors[name]:.4f} > max_error {config.max_error:g}"
        elif not quantized:
            skipped = f"its MatMul was not found in the exported {runtime} graph, so it runs in float"
        after = _int8_linear_bytes(layer) if quantized else model_bytes(layer)
        p, nz, b = count_params(layer), count_nonzero(layer), model_bytes(layer)
        sum_params, sum_nz, sum_before, sum_after = sum_params + p, sum_nz + nz, sum_before + b, sum_after + after
        rows.append(LayerRow(
            name=name, method=config.method, layer_type="Linear",
            new_type=f"{f'int{bits}' if quantized else 'float32'} MatMul in {runtime} ({region})",
            params_before=p, params_after=p, nonzeros_before=nz, nonzeros_after=nz, bytes_before=b, bytes_after=after,
            error=errors[name], error_kind="rel_output_error", skipped=skipped,
            detail={"backend": backend, "weight_bits": bits,
                    "sqnr_db": round(sqnr_db(linear_view(layer).weight, _dq(layer, config, bits)), 2)}))
    rows.append(LayerRow(
        name=region, method=config.method, layer_type=f"{type(module).__name__} (other layers)",
        new_type=type(new).__name__, params_before=count_params(module) - sum_params,
        params_after=count_params(module) - sum_params, nonzeros_before=count_nonzero(module) - sum_nz,
        nonzeros_after=count_nonzero(module) - sum_nz,
        bytes_before=model_bytes(module) - sum_before, bytes_after=max(0, model_bytes(new) - sum_after),
        error=region_error, error_kind="rel_output_error (whole region)",
        detail={"backend": backend, "graph_bytes": model_bytes(new)}))
    notes = [f"{region} runs in {runtime} ({how}); its output differs from float by {region_error:.4f} (relative) on the first calibration batch."]
    return new, rows, notes


def _dq(layer: nn.Linear, config, bits: int) -> torch.Tensor:
    from .qlinear import quantize_rows

    q, scale = quantize_rows(linear_view(layer).weight, config.per_channel, bits)
    return q.float() * scale[:, None]


def _time_ms(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # warm-up (ONNX Runtime plans, torch packs weights on the first call)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def compare_routes(model: nn.Module, region: str, group: list[str], call, ort_module: nn.Module,
                   per_channel: bool) -> str:
    """A note measuring, on the region's first calibration call, float vs torch int8 vs ONNX Runtime int8:
    latency (median of 3) and relative output error. The choice itself never depends on these timings
    (a replayed plan must give the same model), only on what is installed and on the data given."""
    from .qlinear import DynamicInt8Linear

    module = model.get_submodule(region)
    args, kwargs, output = call
    alt = copy.deepcopy(module)
    for name in group:
        rel = name[len(region) + 1:]
        swap_submodule(alt, rel, DynamicInt8Linear.from_linear(alt.get_submodule(rel), per_channel))
    ref = _flatten(output)[0]
    routes = {"float32 (torch)": module, "int8 Linears (torch)": alt, "int8 (ONNX Runtime)": ort_module}
    parts = []
    with torch.inference_mode():
        base = None
        for label, candidate in routes.items():
            ms = _time_ms(lambda c=candidate: c(*args, **kwargs))
            err = relative_error(ref, _flatten(candidate(*args, **kwargs))[0])
            base = base or ms
            parts.append(f"{label} {ms:.1f} ms ({base / ms:.2f}x), rel. error {err:.4f}")
    return f"Routes measured for {region} on the first calibration batch: " + "; ".join(parts) + "."
