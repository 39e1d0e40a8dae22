"""Static int8 post-training quantization for CNNs: activations calibrated with observers on sample data.

Each selected Conv / Linear becomes a :class:`StaticInt8Layer` (int8 in, int8 kernel, float out). Where
``torch.fx`` can trace the model, a BatchNorm right after a Conv is folded into it (the BatchNorm becomes
``Identity``) and a ReLU right after is fused into the int8 kernel (the original ReLU stays: applying it
twice changes nothing). Observers come from ``torch.ao.quantization`` (min-max, moving average, histogram).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.ao.quantization import observer as obs
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ...core.config import Boolean, Interval, MethodConfig, param
from ...core.registry import MagicOption, MethodResult, register_method
from .._common import LINEAR_TYPES, layer_row, linear_view, parent_reads_weight
from ._common import (
    calibration_batches,
    capture_inputs,
    output_error,
    quiet,
    run_batches,
    sqnr_db,
    unsupported_note,
)
from .fusion import find_fusions, folded_rows
from .qstatic import StaticInt8Layer

__all__ = ["StaticQuantConfig"]

_OBSERVERS = {"histogram": obs.HistogramObserver, "minmax": obs.MinMaxObserver,
              "moving_average": obs.MovingAverageMinMaxObserver}


@dataclasses.dataclass(frozen=True, kw_only=True)
class StaticQuantConfig(MethodConfig):
    """Static int8: weights per channel, activation scales calibrated on data (needs data= or example_inputs=)."""

    observer: str = param("histogram", help="activation range estimate: 'histogram' (minimises quantization "
                          "error, robust to outliers), 'minmax' or 'moving_average'", choices=tuple(_OBSERVERS))
    fuse: bool = param(True, help="fold Conv-BatchNorm and fuse a following ReLU where the graph allows",
                       check=Boolean())
    max_error: float = param(0.0, help="keep in float any layer whose relative output error on the calibration "
                             "data exceeds this (0 = quantize every selected layer)", check=Interval(0.0, 10.0))


def _observer(kind: str):
    reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86")  # 7-bit activations without VNNI
    with quiet():
        return _OBSERVERS[kind](dtype=torch.quint8, reduce_range=reduce_range)


@register_method(
    "quantize.static",
    StaticQuantConfig,
    supported=(nn.Conv1d, nn.Conv2d, *LINEAR_TYPES),
    family="quantization",
    help="Static int8 post-training quantization (calibrated activations, per-channel weights, Conv-BN-ReLU "
         "fusion) for CNNs.",
    requires=("calibration",),
    stage="precision",
    order=1,
    options=(MagicOption("--quantize", "MODE", choice="static-int8", help="static-int8 (calibrated, give --calib)"),),
)
def apply_static(model: nn.Module, names: list[str], config: StaticQuantConfig, ctx: Any) -> MethodResult:
    batches = calibration_batches(ctx, required=True, method="quantize.static")
    rows = [layer_row(n, "quantize.static", model.get_submodule(n), None, skipped=parent_reads_weight(model, n))
            for n in names if parent_reads_weight(model, n)]
    names = [n for n in names if not parent_reads_weight(model, n)]
    fusions, notes = find_fusions(model, names) if config.fuse else ({}, [])
    in_obs = {n: _observer(config.observer) for n in names}
    out_obs = {n: _observer(config.observer) for n in names}
    handles = []
    for name in names:
        bn, relu = fusions.get(name, (None, False))
        site = model.get_submodule(bn or name)
        handles.append(model.get_submodule(name).register_forward_pre_hook(
            lambda m, a, n=name: in_obs[n](a[0].detach().float())))
        handles.append(site.register_forward_hook(
            lambda m, a, out, n=name, r=relu: out_obs[n](torch.relu(out) if r else out.detach())))
    try:
        with capture_inputs(model, names, max_rows=64) as inputs, quiet():
            run_batches(model, batches, names, getattr(ctx, "example_inputs", None))
    finally:
        for h in handles:
            h.remove()
    replacements = {}
    for name in names:
        old = model.get_submodule(name)
        bn_name, relu = fusions.get(name, (None, False))
        ref = fuse_conv_bn_eval(old, model.get_submodule(bn_name)) if bn_name else old
        weight, bias = linear_view(ref)[:2] if isinstance(ref, LINEAR_TYPES) else (ref.weight, ref.bias)
        weight = weight.detach().float()
        amax = weight.abs().flatten(1).amax(dim=1)
        w_scale = (amax / 127).clamp_min(1e-12)
        with quiet():
            in_q = in_obs[name].calculate_qparams()
            out_q = out_obs[name].calculate_qparams()
        new = StaticInt8Layer(ref, weight, bias, w_scale, (float(in_q[0]), int(in_q[1])),
                              (float(out_q[0]), int(out_q[1])), relu)
        float_fn = (lambda x, f=ref: torch.relu(f(x))) if relu else ref
        err = output_error(float_fn, new, inputs.get(name, []))
        detail = {"sqnr_db": round(sqnr_db(weight, new.dequantized_weight()), 2), "observer": config.observer,
                  "fused": "+".join(["conv" if "conv" in new.kind else "linear"] + (["bn"] if bn_name else [])
                                    + (["relu"] if relu else []))}
        if config.max_error and err is not None and err > config.max_error:
            rows.append(layer_row(name, "quantize.static", old, None, error=err, error_kind="rel_output_error",
                                  detail=detail, skipped=f"kept in float: relative output error {err:.4f} > "
                                  f"max_error {config.max_error:g}"))
            continue
        replacements[name] = new
        rows.append(layer_row(name, "quantize.static", old, new, error=err, error_kind="rel_output_error",
                              detail=detail))
        if bn_name:
            replacements[bn_name] = nn.Identity()
            rows.append(layer_row(bn_name, "quantize.static", model.get_submodule(bn_name), nn.Identity(),
                                  detail={"folded into": name}))
            folded_rows(rows[-2], rows[-1], old, new)
    notes.append("Each int8 layer quantizes its input and dequantizes its output, so consecutive layers pay a "
                 "conversion each; the latency ratio in the report tells whether int8 pays off on this model.")
    notes += unsupported_note(model, (nn.Conv1d, nn.Conv2d, *LINEAR_TYPES), "quantize.static")
    return MethodResult(replacements, rows, notes)
