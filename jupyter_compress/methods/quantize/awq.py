"""AWQ: activation-aware weight quantization (Lin, Tang, Tang, Yang, Dang, Gan, Han 2023, "AWQ:
Activation-aware Weight Quantization for LLM Compression and Acceleration", arXiv:2306.00978).

Weights are quantized group-wise (int4 by default, symmetric scales per ``group_size`` input columns, the
storage of :class:`~.qlinear.WeightOnlyLinear`), but first each input channel j of a layer is scaled:
``W diag(s)`` is quantized, and the input divided by ``s``, so ``Q(W diag(s)) diag(s)^-1 x`` stands for
``W x``. Channels that carry large activations get ``s > 1``: their weights lose less to rounding, where it
matters most. Following the paper, ``s = mean|x|^alpha`` (per channel, over the calibration tokens,
normalised so that ``max(s) min(s) = 1``) and ``alpha`` is searched on a grid of ``grid`` values in [0, 1)
(0 is plain round-to-nearest) to minimise the squared error of the layer outputs on the captured calibration
inputs; layers fed the same tensor by one norm layer (q, k, v after a LayerNorm) share one ``s``, searched on
the sum of their errors. Optional weight clipping (the paper's second search, ``clip``): per output row and
group, the clipping range is shrunk (down to half) where that lowers the group's output error.

Where ``1/s`` goes: into the norm layer that produced the input (its weight and bias divided by ``s``), when
every use of that norm's output is a layer scaled with the same ``s`` (found from tensor identities, see
methods._actstats); otherwise the replacement layer keeps ``1/s`` as a per-input-channel multiplier
(``input_scale``: one multiply per call). Post-LN models (BERT, MiniLM: the norm output also feeds the
residual) therefore use multipliers; pre-LN ones (GPT-2, LLaMA-style) fold. int4 layers run PyTorch's packed
int4 CPU matmul where it fits (the input multiplier is applied before it), int8 layers are dequantized per call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ...core.config import Boolean, IntAtLeast, MethodConfig, param
from ...core.registry import MagicOption, MethodResult, register_method
from ...core.textvalues import parse_number
from ...core.ties import tied_groups
from ...errors import InvalidConfigError, shown
from .._actstats import Group, Layout, _spread, collect, fold_into_norm, pin_layout, skip_reason
from .._common import LINEAR_TYPES, layer_row, linear_view
from ._common import calibration_batches, output_error, sqnr_db, unsupported_note
from .qlinear import WeightOnlyLinear, quantize_groups

__all__ = ["AWQConfig", "search_scale", "search_clip", "fake_quantize"]

_CLIP_ROWS = 512  # calibration rows the clipping search measures on (the paper's reference code: 512 tokens)
_CLIP_STEPS, _CLIP_SHRINK = 20, 0.5  # ranges 1, 0.95, ..., 0.55 of each group's max |w|
_CHUNK = 256  # output rows per step of the clipping search (its (rows, groups, tokens) products stay small)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AWQConfig(MethodConfig):
    """Activation-aware weight-only quantization: per-channel scales searched on calibration data."""

    bits: int = param(4, help="bits per weight: 4 (two values packed per byte) or 8", choices=(4, 8))
    group_size: int = param(128, help="input columns sharing one quantization scale; a layer with fewer inputs "
                            "uses one group per row", check=IntAtLeast(2))
    grid: int = param(20, help="alpha values tried for s = mean|x|^alpha: i/grid for i = 0 .. grid-1 (alpha 0 "
                      "is plain round-to-nearest)", check=IntAtLeast(1, 1000))
    clip: bool = param(True, help="also search each group's clipping range (per output row) on the calibration "
                       "inputs", check=Boolean())
    rows: int = param(1024, help="calibration token rows per layer the searches measure output errors on "
                      "(spread evenly over the batches)", check=IntAtLeast(16, 1_000_000))
    layout: dict | None = param(None, help="where each changed layer's 1/s went, {layer: 'norm' or 'multiplier'}: "
                                "set when a plan is saved, so a replay changes the same layers the same way "
                                "(None: decided on the calibration data)", check=Layout())
    batches: int = param(64, help="calibration batches the activation statistics are gathered on",
                         check=IntAtLeast(1))


def _parse_bits(text: str) -> int:
    value = parse_number(text)
    if value not in (4, 8) or isinstance(value, float):
        raise InvalidConfigError(f"bits {shown(text)} is not 4 or 8.")
    return int(value)


def fake_quantize(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """What :class:`WeightOnlyLinear` computes from ``weight`` (out, in): quantized and dequantized, float32."""
    q, scale = quantize_groups(weight, bits, group)
    out_f, in_f = weight.shape
    return (q.float().reshape(out_f, -1, group) * scale.float()[..., None]).reshape(out_f, in_f)


def search_scale(weights: list[torch.Tensor], x: torch.Tensor, mean_abs: torch.Tensor, bits: int, group: int,
                 grid: int) -> tuple[torch.Tensor, float, float, float]:
    """The per-channel scale ``s`` minimising ``sum_W ||x (Q(W diag(s)) diag(s)^-1)^T - x W^T||^2`` over
    ``s = mean_abs^alpha`` (normalised), alpha in ``{i / grid}``. Returns (s, alpha, its loss, the loss of
    alpha 0, i.e. round-to-nearest). ``weights`` (out, in) float32 share the input ``x`` (rows, in)."""
    refs = [x @ w.t() for w in weights]
    best: tuple[float, float, torch.Tensor] | None = None
    plain = float("nan")
    for i in range(grid):
        alpha = i / grid
        s = mean_abs.float().pow(alpha).clamp_min(1e-4)
        s = s / (s.max() * s.min()).sqrt()
        loss = 0.0
        for w, ref in zip(weights, refs):
            effective = fake_quantize(w * s[None, :], bits, group) / s[None, :]
            loss += float((x @ effective.t() - ref).double().pow(2).sum())
        if i == 0:
            plain = loss
        if best is None or loss < best[0]:  # strict: the smallest alpha wins a tie (0: round-to-nearest)
            best = (loss, alpha, s)
    loss, alpha, s = best
    return s, alpha, loss, plain


def search_clip(weight: torch.Tensor, x: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """``weight`` (out, in) with each (output row, input group) clipped to the range, among 1, 0.95, ...,
    0.55 of its max |w|, that gives the smallest squared error of that group's output on ``x`` (rows, in)."""
    qmax = 2 ** (bits - 1) - 1
    out_f, in_f = weight.shape
    xg = _spread(x, _CLIP_ROWS).float().reshape(-1, in_f // group, group).permute(1, 2, 0)  # (groups, g, rows)
    clipped = torch.empty_like(weight)
    for start in range(0, out_f, _CHUNK):
        wg = weight[start:start + _CHUNK].reshape(-1, in_f // group, group).permute(1, 0, 2)  # (groups, o, g)
        top = wg.abs().amax(-1, keepdim=True)
        ref = wg @ xg  # (groups, o, rows)
        best_err = torch.full(top.shape, float("inf"))
        best_max = top.clone()
        for i in range(int(_CLIP_SHRINK * _CLIP_STEPS)):
            limit = top * (1 - i / _CLIP_STEPS)
            scale = (limit / qmax).clamp_min(1e-12)  # as quantize_groups computes it from the clipped group
            clamped = torch.maximum(torch.minimum(wg, limit), -limit)
            q = torch.clamp(torch.round(clamped / scale), -qmax, qmax) * scale
            err = (q @ xg - ref).pow(2).mean(-1, keepdim=True)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, limit, best_max)
        done = torch.maximum(torch.minimum(wg, best_max), -best_max)
        clipped[start:start + _CHUNK] = done.permute(1, 0, 2).reshape(-1, in_f)
    return clipped


def _skip_reason(model: nn.Module, name: str, tied: set[str], seen: set[str], config: AWQConfig) -> str | None:
    reason = skip_reason(model, name, tied, seen, config.layout,
                         tied_why="its weight is tied to another layer's; quantizing it would untie them",
                         unseen_why="it did not run on the calibration data (no activations to scale by)")
    if reason:
        return reason
    in_f = linear_view(model.get_submodule(name)).in_features
    group = min(config.group_size, in_f)
    if in_f % group or (config.bits == 4 and group % 2):
        return f"its {in_f} input columns do not split into groups of {group}; pick a group_size dividing it"
    return None


@register_method(
    "quantize.awq",
    AWQConfig,
    supported=LINEAR_TYPES,
    family="quantization",
    help="AWQ: weight-only int4 / int8 with per-channel scales searched on calibration activations (folded "
         "into LayerNorms where exact); smaller; int4 runs the packed int4 kernel where it fits, int8 is "
         "dequantized per call.",
    aliases=("awq",),
    requires=("calibration",),
    stage="precision",
    order=2,
    dial="bits",
    options=(MagicOption("--awq", "BITS", _parse_bits, const=4, help_field="bits",
                         help="AWQ activation-aware weight-only quantization (4 alone)"),),
    pin=pin_layout,
    sweep=False,  # a search on calibration data per layer: run when asked for by name
)
def apply_awq(model: nn.Module, names: list[str], config: AWQConfig, ctx: Any) -> MethodResult:
    batches = calibration_batches(ctx, required=True, method="quantize.awq", limit=config.batches)
    cap = collect(model, names, batches, getattr(ctx, "example_inputs", None), keep_rows=config.rows,
                  producers=True)
    tied = {m for group in tied_groups(model) for m, _ in group}
    rows, eligible, skipped = [], [], {}
    for name in names:
        reason = _skip_reason(model, name, tied, set(cap.stats), config)
        if reason:
            skipped[name] = layer_row(name, "quantize.awq", model.get_submodule(name), None, skipped=reason)
        else:
            eligible.append(name)
    replacements: dict[str, nn.Module] = {}
    built: dict[str, Any] = {}
    folded: list[str] = []
    multiplied: list[str] = []
    for group in cap.groups(eligible, config.layout):
        _quantize_group(model, group, cap, config, replacements, built, folded, multiplied)
    for name in names:  # rows in the model's order, each norm right after the layers it holds the scales of
        rows.append(skipped.get(name) or built.pop(name))
        norm_row = built.pop(("norm", name), None)
        if norm_row is not None:
            rows.append(norm_row)
    measured = max((cap.rows[n].shape[0] for n in eligible), default=0)
    notes = [f"AWQ int{config.bits} (group {config.group_size}): per-channel scales s = mean|x|^alpha, alpha "
             f"searched over {config.grid} values per layer group on {measured} calibration rows{' with clipping' if config.clip else ''}; each row's detail gives alpha and the "
             "round-to-nearest output error for comparison."]
    if folded:
        notes.append(f"1/s folded into {len(folded)} norm layer(s) ({', '.join(folded[:3])}"
                     f"{', ...' if len(folded) > 3 else ''}): their every output use is a scaled layer.")
    if multiplied:
        notes.append(f"{len(multiplied)} layer(s) keep 1/s as a per-input-channel multiplier (one multiply per "
                     f"call), as their input's producer could not take it: e.g. {multiplied[0]}.")
    notes.append(f"Weight-only int{config.bits}: weights are dequantized to float at each call (no weight-only "
                 "kernel on this CPU here), so memory and storage shrink but latency does not.")
    notes += unsupported_note(model, LINEAR_TYPES, "quantize.awq")
    return MethodResult(replacements, rows, notes)


def _quantize_group(model: nn.Module, group: Group, cap, config: AWQConfig, replacements: dict, built: dict,
                    folded: list[str], multiplied: list[str]) -> None:
    """Search the group's shared scale, fold 1/s into its norm when exact (else a multiplier per layer), and
    build each layer's replacement and row into ``replacements`` / ``built``."""
    first = group.layers[0]
    olds = {n: model.get_submodule(n) for n in group.layers}
    weights = {n: linear_view(m).weight.detach().float() for n, m in olds.items()}
    in_f = weights[first].shape[1]
    g = min(config.group_size, in_f)
    x = cap.rows[first]
    s, alpha, loss, plain = search_scale(list(weights.values()), x, cap.stats[first].mean_abs, config.bits, g,
                                         config.grid)
    norm_new, why = None, group.why
    if group.norm is not None:
        norm_old = model.get_submodule(group.norm)
        norm_new = fold_into_norm(norm_old, 1.0 / s, cap.probes.get(group.norm))
        why = f"the output of {group.norm} did not scale with its weight on calibration inputs"
    where = group.norm if norm_new is not None else f"input multiplier ({why})"
    for name in group.layers:
        old, w = olds[name], weights[name] * s[None, :]
        if config.clip:
            w = search_clip(w, x / s[None, :], config.bits, g)
        new = WeightOnlyLinear.from_weight(old, w.to(linear_view(old).weight.dtype), config.bits, g,
                                           input_scale=None if norm_new is not None else 1.0 / s)
        if norm_new is not None:  # the layer now expects x / s from its norm
            err = output_error(old, lambda v, new=new: new(v / s.to(v.dtype)), [x])
        else:
            err = output_error(old, new, [x])
        rtn = output_error(old, WeightOnlyLinear(old, config.bits, g), [x])
        view = linear_view(old)
        rows_detail = {"bits": config.bits, "group": g, "alpha": alpha, "clip": config.clip, "scales_into": where,
                       "rtn_output_error": rtn, "group_loss_vs_rtn": (loss / plain) if plain else 1.0,
                       "sqnr_db": round(sqnr_db(view.weight, new.dense_weight() if norm_new is None else
                                                new.dequantized_weight() / s[None, :]), 2)}
        built[name] = layer_row(name, "quantize.awq", old, new, error=err, error_kind="rel_output_error",
                                detail=rows_detail)
        replacements[name] = new
        if norm_new is None:
            multiplied.append(name)
    if norm_new is not None:
        replacements[group.norm] = norm_new
        folded.append(group.norm)
        built[("norm", group.layers[-1])] = layer_row(group.norm, "quantize.awq", norm_old, norm_new,
                                                      detail={"holds_scales_of": list(group.layers)})
