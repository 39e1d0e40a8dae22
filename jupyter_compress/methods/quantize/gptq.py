"""GPTQ: weight-only int4 / int3 / int8 quantization with second-order error correction from calibration data.

Implemented from the paper: Frantar, Ashkboos, Hoefler & Alistarh (2022), "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers", arXiv:2210.17323 (ICLR 2023). The shared machinery
(Hessians ``H = 2 X^T X`` of each layer's inputs, dampening, the Cholesky factor of ``H^-1``, the column
sweep with lazy batch updates in blocks of 128, forward-order sequential capture) is in ``methods/_obs.py``.

Each input column is rounded to the grid and its rounding error, weighted by the inverse Hessian, is
pushed onto the columns not yet quantized, so the layer's output on the calibration inputs moves far less
than with round-to-nearest. The grid is the one of ``quantize.weight`` (``quantize_groups``): symmetric,
one scale per row and group of ``group_size`` input columns, codes in [-(2^(b-1)-1), 2^(b-1)-1], so the two
are comparable at the same group size and the result is the same ``WeightOnlyLinear`` (3-bit codes held in
its int4 container). A group's scales are computed when the sweep reaches the group's first column, from the
group's weights as updated by then (the reference implementation's behaviour). With ``act_order`` columns are
visited by decreasing ``diag(H)``; groups stay contiguous runs of the original columns (the layout the layer
stores), and a group's scales are computed when the first of its columns in that order is reached (none of its
columns is quantized yet then), from its updated weights: the reference's "static groups" keep the layout
too but take the scales from the weights before any update.

What it buys: the bytes of weight-only int4 (about 1/8 of float32 for the weights, plus scales) at much lower
error than round-to-nearest. Not faster: weights are dequantized per call (no int4 kernel is used here).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ...core.config import Boolean, IntAtLeast, Interval, MethodConfig, param
from ...core.registry import MagicOption, MethodResult, register_method
from ...errors import InvalidConfigError, shown
from .._common import LINEAR_TYPES, layer_row, linear_view
from .._obs import LayerStats, OBSSweep, inverse_factor, relative_output_error, run_layerwise
from ._common import sqnr_db, unsupported_note
from .qlinear import WeightOnlyLinear, quantize_groups

__all__ = ["GPTQConfig", "gptq_quantize"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GPTQConfig(MethodConfig):
    """GPTQ weight-only quantization (calibrated second-order rounding), group-wise symmetric scales."""

    bits: int = param(4, help="bits per weight: 4, 3 (held in the int4 container: int4's bytes) or 8",
                      choices=(4, 3, 8))
    group_size: int = param(128, help="input columns sharing one scale (the grid of quantize.weight); a layer "
                            "with fewer inputs uses one group per row", check=IntAtLeast(2))
    percdamp: float = param(0.01, help="dampening added to diag(H), as a fraction of its mean (larger: more "
                            "stable, closer to round-to-nearest)", check=Interval(0.0, 1.0, "[]"))
    act_order: bool = param(False, help="quantize columns by decreasing diag(H) (the inputs with the largest "
                            "activations first); groups stay contiguous", check=Boolean())
    sequential: bool = param(True, help="compress layers in forward order, each calibrated on the model with "
                             "the earlier ones already quantized (one calibration pass per group of layers); "
                             "False: one pass on the original model", check=Boolean())


def _parse_bits(text: str) -> int:
    try:
        bits = int(str(text).strip())
    except ValueError:
        bits = 0
    if bits not in (3, 4, 8):
        raise InvalidConfigError(f"bits {shown(text)} is not 3, 4 or 8.")
    return bits


def _scale(values: torch.Tensor, qmax: int, dtype: torch.dtype) -> torch.Tensor:
    """Per-row symmetric scales of ``values`` (out, k), as ``quantize_groups`` computes them, rounded to
    ``dtype`` (the dtype the layer stores them in) so the sweep uses exactly the stored grid."""
    scale = (values.abs().amax(dim=1) / qmax).clamp_min(1e-12)
    return scale.to(dtype).float()


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int, group: int, percdamp: float = 0.01,
                  act_order: bool = False, scale_dtype: torch.dtype = torch.float32
                  ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """GPTQ on one weight (out, in) with its Hessian (in, in): ``(codes int8 (out, in), scales (out, in /
    group), facts)``; ``codes * scales`` per group is the quantized weight."""
    w = weight.detach().float().clone()
    out_f, in_f = w.shape
    qmax = 2 ** (bits - 1) - 1
    h = hessian.to(w.device)
    perm = None
    if act_order:
        perm = torch.argsort(torch.diagonal(h), descending=True, stable=True)
        w, h = w[:, perm], h[perm][:, perm]
    upper, facts = inverse_factor(h, w, percdamp)
    original = perm if perm is not None else torch.arange(in_f, device=w.device)
    position = torch.empty_like(original)
    position[original] = torch.arange(in_f, device=w.device)  # original column -> its place in the sweep
    scales = torch.zeros(out_f, in_f // group, device=w.device)
    ready = [False] * (in_f // group)
    codes = torch.zeros(out_f, in_f, dtype=torch.int8, device=w.device)

    def column(p: int, sweep: OBSSweep) -> torch.Tensor:
        col = int(original[p])
        g = col // group
        if not ready[g]:
            scales[:, g] = _scale(sweep.current(position[g * group:(g + 1) * group]), qmax, scale_dtype)
            ready[g] = True
        s = scales[:, g]
        q = torch.clamp(torch.round(sweep.block[:, p - sweep.start] / s), -qmax, qmax)
        codes[:, col] = q.to(torch.int8)
        return q * s

    OBSSweep(w, upper).run(column)
    return codes, scales, facts


def _rtn_weight(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    q, scale = quantize_groups(weight, bits, group)
    out_f, in_f = q.shape
    return (q.float().reshape(out_f, -1, group) * scale[..., None]).reshape(out_f, in_f)


def _layer(name: str, old: nn.Module, stats: LayerStats | None, config: GPTQConfig) -> tuple[Any, Any]:
    view = linear_view(old)
    group = min(config.group_size, view.in_features)
    if view.in_features % group or (config.bits <= 4 and group % 2):
        return None, layer_row(name, "quantize.gptq", old, None, skipped=f"its {view.in_features} input columns "
                               f"do not split into groups of {group}; pick a group_size dividing it")
    if not view.weight.is_floating_point():
        return None, layer_row(name, "quantize.gptq", old, None, skipped=f"its weight is {view.weight.dtype}")
    weight = view.weight.detach()
    dtype = weight.dtype
    if stats is None:  # a saved model rebuilt: its structure only, the saved codes and scales are loaded next
        new = WeightOnlyLinear.from_codes(old, *quantize_groups(weight, config.bits, group), config.bits, group)
        return new, layer_row(name, "quantize.gptq", old, new, detail={"bits": config.bits, "group": group})
    hessian = stats.hessian(view.in_features, weight.device)
    codes, scale, facts = gptq_quantize(weight, hessian, config.bits, group, config.percdamp, config.act_order,
                                        dtype)
    new = WeightOnlyLinear.from_codes(old, codes, scale, config.bits, group)
    quantized = new.dequantized_weight()
    err = relative_output_error(stats, weight, quantized, view.bias)
    rtn = relative_output_error(stats, weight, _rtn_weight(weight, config.bits, group), view.bias)
    detail = {"bits": config.bits, "group": group, "sqnr_db": round(sqnr_db(weight, quantized), 2),
              "rtn_error": None if rtn is None else round(rtn, 6), "act_order": config.act_order,
              "calibration_rows": stats.rows, **facts}
    if config.bits == 3:
        detail["container"] = "int4"
    return new, layer_row(name, "quantize.gptq", old, new, error=err, error_kind="rel_output_error", detail=detail)


@register_method(
    "quantize.gptq",
    GPTQConfig,
    supported=LINEAR_TYPES,
    family="quantization",
    help="GPTQ weight-only int4 / int3 / int8: calibrated second-order rounding, far more accurate than "
         "round-to-nearest at the same size; smaller weights, not faster (dequantized per call, no int4 kernel).",
    aliases=("gptq",),
    requires=("calibration",),
    streams=True,
    stage="precision",
    order=4,
    controls=("bits", "group_size", "act_order", "sequential"),
    sweep=False,  # one calibration pass per group of layers: asked for by name, not probed per layer
    options=(MagicOption("--gptq", "BITS", _parse_bits, lambda bits: {"bits": bits}, const=4, help_field="bits",
                         help="GPTQ weight-only quantization (calibrated; give --calib)"),),
)
def apply_gptq(model: nn.Module, names: list[str], config: GPTQConfig, ctx: Any) -> MethodResult:
    replacements, rows, notes = run_layerwise(
        model, names, ctx, method="quantize.gptq", sequential=config.sequential,
        build=lambda name, old, stats: _layer(name, old, stats, config))
    done = [r for r in rows if r.skipped is None and r.error is not None]
    rtn = [r.detail["rtn_error"] for r in done if r.detail.get("rtn_error") is not None]
    if done and rtn:
        notes.insert(0, f"GPTQ int{config.bits} (groups of {config.group_size}): mean relative output error per "
                     f"layer {sum(r.error for r in done) / len(done):.4f} on the calibration inputs, against "
                     f"{sum(rtn) / len(rtn):.4f} for round-to-nearest at the same group size.")
    notes.append(f"Weight-only int{config.bits}: weights are dequantized to float at each call (no weight-only "
                 f"kernel on this CPU here), so memory and storage shrink but latency does not.")
    if config.bits == 3:
        notes.append("3-bit codes are held in the int4 container (two per byte): int3 takes int4's bytes here.")
    notes += unsupported_note(model, LINEAR_TYPES, "quantize.gptq")
    return MethodResult(replacements, rows, notes)
