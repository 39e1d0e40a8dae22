"""Weight-only quantization (int8 / int4, group-wise scales) and fp16 / bf16 casts.

Both save memory and storage. Weight-only int4 also runs faster on CPU where PyTorch's packed int4 matmul
(``aten._weight_int4pack_mm_for_cpu``) applies: float32 / bf16 inputs are computed in bfloat16 there (relative
output error about 3e-3 against the float32 dequantized path, well below int4's own error); other layers, and
all int8 weight-only layers, are dequantized at each call (smaller, not faster). The report says which ran,
per layer. Half precision runs the layer in that dtype (fast where the CPU has fp16 / bf16 instructions, e.g.
AVX512-BF16 / AMX; otherwise it may be slower).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from ...core.config import IntAtLeast, MethodConfig, param
from ...core.registry import MagicOption, MethodResult, register_method
from .._common import LINEAR_TYPES, LayerStandIn, hand_over, layer_row, linear_view, parent_reads_weight
from ._common import (
    calibration_batches,
    capture_inputs,
    output_error,
    run_batches,
    sqnr_db,
    unsupported_note,
)
from .qlinear import INT4_KERNEL, INT4_KERNEL_MODES, WeightOnlyLinear

__all__ = ["WeightOnlyConfig", "HalfConfig", "HalfPrecision"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightOnlyConfig(MethodConfig):
    """Weights in int8 or int4 with one scale per group of input columns; activations stay float."""

    bits: int = param(8, help="bits per weight: 8 or 4 (two int4 values packed per byte)", choices=(8, 4))
    group_size: int = param(128, help="input columns sharing one scale (smaller: more accurate, larger "
                            "scales overhead); a layer with fewer inputs uses one group per row",
                            check=IntAtLeast(2))
    kernel: str = param("auto", help="int4 matmul: 'auto' runs PyTorch's packed int4 CPU kernel (aten."
                        "_weight_int4pack_mm_for_cpu, bf16 activations) on layers it fits (outputs a multiple of 16, "
                        "group 32/64/128/256) where the CPU vectorizes it (AVX2 / AVX512 / aarch64); 'int4pack' "
                        "also on other CPUs; 'dequantize' never (float32 math, no speedup). int8 always dequantizes",
                        choices=INT4_KERNEL_MODES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HalfConfig(MethodConfig):
    """Cast layers to float16 or bfloat16 (inputs cast on the way in, outputs back to the input dtype)."""

    dtype: str = param("bfloat16", help="'float16' or 'bfloat16' (bf16 keeps fp32's range)",
                       choices=("bfloat16", "float16"))


class HalfPrecision(LayerStandIn, nn.Module):
    """Runs ``layer`` (held in a half dtype) on inputs cast to that dtype; returns the caller's dtype.

    Keeps the layer's attributes; ``weight`` and ``bias`` read as the float layer's (dtype ``orig_dtype``,
    the dtype it takes and returns): ``weight`` a stand-in cast when its values are used, ``bias`` a cast copy.
    """

    def __init__(self, layer: nn.Module, dtype: torch.dtype, orig_dtype: torch.dtype = torch.float32):
        super().__init__()
        self._keep_layer(layer)
        self.__dict__["_standin_dtype"] = orig_dtype
        self.layer, self.dtype = layer, dtype

    @property
    def bias(self) -> torch.Tensor | None:
        bias = getattr(self.layer, "bias", None)
        return None if bias is None else bias.to(device=self._standin_device, dtype=self._standin_dtype)

    def materialize(self, key: str) -> torch.Tensor:
        return self.layer.weight.to(device=self._standin_device, dtype=self._standin_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.dtype)).to(x.dtype)


def _half_copy(layer: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``layer`` with floating tensors in ``dtype``, cast one tensor at a time (a deep copy then a
    cast would hold a full float32 copy of the layer first)."""
    memo = {id(t): torch.nn.Parameter(t.detach().to(dtype), t.requires_grad) if isinstance(t, nn.Parameter)
            else t.detach().to(dtype)
            for t in [*layer.parameters(), *layer.buffers()] if t.is_floating_point()}
    return copy.deepcopy(layer, memo)


def _inputs(model: nn.Module, names: list[str], ctx: Any, method: str, linear_only: bool) -> dict[str, list]:
    """Inputs of the layers on up to 8 calibration batches (1024 rows per Linear, else 64 samples per layer)."""
    batches = calibration_batches(ctx, required=False, method=method, limit=8)
    with capture_inputs(model, names, max_rows=1024 if linear_only else 64, flatten=linear_only) as inputs:
        if batches:
            run_batches(model, batches, names, getattr(ctx, "example_inputs", None))
    return inputs


def _kernel_notes(bits: int, kernels: dict[str | None, int]) -> list[str]:
    """What the quantized layers run: ``kernels`` counts them by why they dequantize (None: the int4 kernel)."""
    notes = []
    fast, total = kernels.get(None, 0), sum(kernels.values())
    if fast:
        notes.append(f"Weight-only int4: {fast} of {total} layers run the int4 kernel {INT4_KERNEL} on CPU "
                     f"float32 / bf16 inputs (activations rounded to bf16, float32 accumulation, output rounded to "
                     f"bf16: relative output error about 3e-3 against the float32 dequantized path): smaller and "
                     f"faster at small batches.")
    slow = {why: n for why, n in kernels.items() if why is not None}
    if slow:
        parts = "; ".join(f"{n} of {total} layers: {why}" for why, n in sorted(slow.items()))
        notes.append(f"Weight-only int{bits}, dequantized to float at each call ({parts}): memory and storage "
                     f"shrink, latency does not.")
    return notes


@register_method(
    "quantize.weight",
    WeightOnlyConfig,
    supported=LINEAR_TYPES,
    family="quantization",
    help="Weight-only int8 / int4 with group-wise scales: smaller weights; int4 also faster on CPU (PyTorch's "
         "packed int4 kernel, bf16 activations), int8 dequantized per call.",
    aliases=("int4",),
    streams=True,
    stage="precision",
    order=2,
    options=(MagicOption("--quantize", "MODE", choice="int4", fields={"bits": 4},
                         help="int4 (weight-only, group-wise; packed int4 CPU kernel where it fits)"),
             MagicOption("--quantize", "MODE", choice="int8-weight", fields={"bits": 8}, help="int8-weight")),
)
def apply_weight_only(model: nn.Module, names: list[str], config: WeightOnlyConfig, ctx: Any) -> MethodResult:
    inputs = _inputs(model, names, ctx, "quantize.weight", linear_only=True)
    replacements, rows, kernels = {}, [], {}
    for name in names:
        old = model.get_submodule(name)
        view = linear_view(old)
        if parent_reads_weight(model, name):
            rows.append(layer_row(name, "quantize.weight", old, None, skipped=parent_reads_weight(model, name)))
            continue
        group = min(config.group_size, view.in_features)
        if view.in_features % group or (config.bits == 4 and group % 2):
            rows.append(layer_row(name, "quantize.weight", old, None, skipped=f"its {view.in_features} input "
                                  f"columns do not split into groups of {group}; pick a group_size dividing it"))
            continue
        new = WeightOnlyLinear(old, config.bits, group, kernel=config.kernel)
        err = output_error(old, new, inputs.get(name, []))
        why = new.kernel_unusable()
        kernels[why] = kernels.get(why, 0) + 1
        rows.append(layer_row(name, "quantize.weight", old, new, error=err, error_kind="rel_output_error",
                              detail={"bits": config.bits, "group": group, "kernel": new.kernel_label(),
                                      "sqnr_db": round(sqnr_db(view.weight, new.dequantized_weight()), 2)}))
        hand_over(ctx, replacements, name, new)
    notes = _kernel_notes(config.bits, kernels)
    notes += unsupported_note(model, LINEAR_TYPES, "quantize.weight")
    return MethodResult(replacements, rows, notes)


@register_method(
    "quantize.half",
    HalfConfig,
    supported=(*LINEAR_TYPES, nn.Conv1d, nn.Conv2d, nn.Conv3d),
    family="quantization",
    help="fp16 / bf16 casts of Linear (and transformers Conv1D) and Conv layers (half the bytes).",
    aliases=("fp16", "bf16"),
    streams=True,
    stage="precision",
    order=3,
    options=(MagicOption("--quantize", "MODE", choice="fp16", fields={"dtype": "float16"}, help="fp16"),
             MagicOption("--quantize", "MODE", choice="bf16", fields={"dtype": "bfloat16"}, help="bf16")),
)
def apply_half(model: nn.Module, names: list[str], config: HalfConfig, ctx: Any) -> MethodResult:
    dtype = getattr(torch, config.dtype)
    inputs = _inputs(model, names, ctx, "quantize.half", linear_only=False)
    replacements, rows = {}, []
    for name in names:
        old = model.get_submodule(name)
        if parent_reads_weight(model, name):
            rows.append(layer_row(name, "quantize.half", old, None, skipped=parent_reads_weight(model, name)))
            continue
        if old.weight.dtype == dtype:
            rows.append(layer_row(name, "quantize.half", old, None, skipped=f"already {config.dtype}"))
            continue
        new = HalfPrecision(_half_copy(old, dtype), dtype, orig_dtype=old.weight.dtype)
        err = output_error(old, new, inputs.get(name, []))
        rows.append(layer_row(name, "quantize.half", old, new, error=err, error_kind="rel_output_error",
                              detail={"dtype": config.dtype,
                                      "sqnr_db": round(sqnr_db(old.weight, new.layer.weight.float()), 2)}))
        hand_over(ctx, replacements, name, new)
    return MethodResult(replacements, rows, [f"{config.dtype} layers compute in {config.dtype}; whether that is "
                                             f"faster depends on the CPU's half-precision instructions."])
