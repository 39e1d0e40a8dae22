"""SmoothQuant: moving activation outliers into the weights before int8 (Xiao, Lin, Seznec, Wu, Demouth, Han
2022, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models",
arXiv:2211.10438).

Int8 activations are quantized with one scale per tensor, so a few input channels with large values (the
outliers of transformer activations) squeeze every other channel into a few levels. SmoothQuant divides
input channel j by ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (``max|X_j|`` over the calibration
tokens, ``max|W_j|`` over the weight column j of every layer sharing the input) and multiplies weight column
j by ``s_j``: the float function is unchanged, the activations are flatter and the weights take the
difference (``alpha`` 0.5 splits it evenly). A channel that is all zero in the calibration activations or
the weights keeps ``s = 1``.

Where ``1/s`` goes: into the norm layer that produced the input (LayerNorm / RMSNorm weight and bias divided
by ``s``), when every use of its output is a layer smoothed with the same ``s`` (q, k and v after a
LayerNorm share one ``s``; found from tensor identities, see methods._actstats). Elsewhere (a post-LN
model's norms also feed the residual, a layer fed by an activation function): with ``unfoldable=
'multiplier'`` (default) the layer becomes :class:`InputScaled`, a per-channel multiply in float before the
smoothed layer (which an int8 step then quantizes: the multiply runs in float, one elementwise op per call);
with ``'skip'`` such layers are left alone and their rows say why.

This step only changes float weights (the model stays float and equivalent up to float rounding); it runs
before the int8 steps of the same stage (``%compress model --smoothquant --quantize int8``), and, being weight
changes, the exported graphs of the ONNX Runtime / OpenVINO routes carry them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ...core.config import Boolean, IntAtLeast, Interval, MethodConfig, param
from ...core.registry import MagicOption, MethodResult, register_method
from ...core.textvalues import parse_number
from ...core.ties import tied_groups
from ...errors import InvalidConfigError, shown
from .._actstats import (
    Capture,
    Group,
    Layout,
    collect,
    fold_into_norm,
    pin_layout,
    scale_columns,
    skip_reason,
)
from .._common import LINEAR_TYPES, LayerStandIn, layer_row, linear_view
from ._common import calibration_batches, output_error
from .dynamic import simulate_dynamic_int8

__all__ = ["SmoothQuantConfig", "InputScaled", "smoothing_scales"]

_ROWS = 512  # calibration rows kept per layer for the errors in its row


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmoothQuantConfig(MethodConfig):
    """Smooth activation outliers into the weights before int8 (float weights change; the function does not)."""

    alpha: float = param(0.5, help="migration strength: s = max|X|^alpha / max|W|^(1-alpha) (0: nothing moves, "
                         "1: all of the activation range moves to the weights)", check=Interval(0.0, 1.0))
    unfoldable: str = param("multiplier", help="a layer whose input no norm layer can absorb 1/s for: "
                            "'multiplier' (a per-channel multiply before it) or 'skip' (left alone)",
                            choices=("multiplier", "skip"))
    only_if_better: bool = param(True, help="smooth a layer (or the layers sharing a norm) only where that lowers "
                                 "its simulated int8 output error on the calibration rows (else left alone, and "
                                 "its row says so)", check=Boolean())
    layout: dict | None = param(None, help="where each changed layer's 1/s went, {layer: 'norm' or 'multiplier'}: "
                                "set when a plan is saved, so a replay changes the same layers the same way "
                                "(None: decided on the calibration data)", check=Layout())
    batches: int = param(64, help="calibration batches the activation maxima are measured on",
                         check=IntAtLeast(1))


class InputScaled(LayerStandIn, nn.Module):
    """``layer(x * scale)``: the smoothed layer (a plain ``nn.Linear`` / ``Conv1D``, which later steps such as
    int8 select and replace as ``<name>.layer``) after a per-input-channel multiplier kept in float.

    ``weight`` reads as the equivalent dense weight (the smoothed weight times ``scale`` per column), ``bias``
    as the layer's."""

    def __init__(self, layer: nn.Module, scale: torch.Tensor):
        super().__init__()
        self._keep_layer(layer)
        self.layer = layer
        self.register_buffer("scale", scale.detach().clone())

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.layer, "bias", None)

    def dense_weight(self) -> torch.Tensor:
        w = linear_view(self.layer).weight
        return w * self.scale.to(w.dtype)[None, :]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.layer(x * self.scale.to(x.dtype), *args, **kwargs)


def _parse_alpha(text: str) -> float:
    value = parse_number(text)
    if isinstance(value, str) or not 0.0 <= float(value) <= 1.0:
        raise InvalidConfigError(f"alpha {shown(text)} is not a number in [0, 1] (e.g. 0.5).")
    return float(value)


def smoothing_scales(act_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` over the layers' weight columns (weights (out, in));
    1 where the activation or the weight column is all zero."""
    w_max = torch.stack([w.detach().abs().float().amax(dim=0) for w in weights]).amax(dim=0)
    a = act_max.float()
    s = a.pow(alpha) / w_max.pow(1.0 - alpha)
    s = torch.where((a > 0) & (w_max > 0) & torch.isfinite(s), s, torch.ones_like(s))
    return s.clamp_min(1e-5)


def _outliers(act_max: torch.Tensor) -> float:
    """How far the largest channel's max|x| stands above the median channel's."""
    med = float(act_max.float().median())
    return float(act_max.max()) / med if med > 0 else float("inf")


def _skip_reason(model: nn.Module, name: str, tied: set[str], seen: set[str],
                 config: SmoothQuantConfig) -> str | None:
    return skip_reason(model, name, tied, seen, config.layout,
                       tied_why="its weight is tied to another layer's; scaling its columns would change the other's",
                       unseen_why="it did not run on the calibration data (no activation maxima)")


@register_method(
    "quantize.smoothquant",
    SmoothQuantConfig,
    supported=LINEAR_TYPES,
    family="quantization",
    help="SmoothQuant: move activation outliers into the weights (per-channel scales folded into LayerNorms) "
         "so an int8 step after it loses less; the model stays float and equivalent.",
    aliases=("smoothquant",),
    requires=("calibration",),
    stage="precision",
    order=-1,  # before every int8 step of the stage (quantize.dynamic is 0, static 1)
    dial="alpha",
    options=(MagicOption("--smoothquant", "ALPHA", _parse_alpha, const=0.5, help_field="alpha",
                         help="SmoothQuant before int8 (alone: alpha 0.5; add --quantize int8)"),),
    pin=pin_layout,
    sweep=False,  # changes no size or accuracy alone: measured together with an int8 step
)
def apply_smoothquant(model: nn.Module, names: list[str], config: SmoothQuantConfig, ctx: Any) -> MethodResult:
    batches = calibration_batches(ctx, required=True, method="quantize.smoothquant", limit=config.batches)
    cap = collect(model, names, batches, getattr(ctx, "example_inputs", None), keep_rows=_ROWS, producers=True)
    tied = {m for group in tied_groups(model) for m, _ in group}
    built: dict[Any, Any] = {}
    eligible = []
    for name in names:
        reason = _skip_reason(model, name, tied, set(cap.stats), config)
        if reason:
            built[name] = layer_row(name, "quantize.smoothquant", model.get_submodule(name), None, skipped=reason)
        else:
            eligible.append(name)
    replacements: dict[str, nn.Module] = {}
    counts = {"folded": [], "multiplier": [], "skipped": []}
    for group in cap.groups(eligible, config.layout):
        _smooth_group(model, group, cap, config, replacements, built, counts)
    rows = []
    for name in names:  # each norm's row right after the last layer it holds the scales of
        rows.append(built.pop(name))
        if ("norm", name) in built:
            rows.append(built.pop(("norm", name)))
    done = [r for r in rows if r.skipped is None and r.error is not None]
    worst = max((r.error for r in done), default=0.0)
    notes = [f"SmoothQuant (alpha {config.alpha:g}) moved activation outliers into the weights of {len(done)} "
             f"layer(s); the model is still float and computes the same function (largest relative output "
             f"change of a layer on the calibration rows: {worst:.1e}). Quantize it to int8 next (--quantize "
             "int8); each row gives the simulated int8 output error before and after smoothing."]
    if counts["folded"]:
        notes.append(f"1/s folded into {len(counts['folded'])} norm layer(s) ({', '.join(counts['folded'][:3])}"
                     f"{', ...' if len(counts['folded']) > 3 else ''}).")
    if counts["multiplier"]:
        notes.append(f"{len(counts['multiplier'])} layer(s) got a per-channel input multiplier in float "
                     f"(InputScaled: no norm layer could absorb 1/s, e.g. {counts['multiplier'][0]}); int8 steps "
                     "quantize the smoothed layer inside it.")
    if counts["skipped"]:
        notes.append(f"{len(counts['skipped'])} layer(s) left alone: smoothing would not lower their simulated "
                     "int8 error, or (unfoldable='skip') no norm layer could absorb 1/s; their rows say which.")
    return MethodResult(replacements, rows, notes)


def _smooth_group(model: nn.Module, group: Group, cap: Capture, config: SmoothQuantConfig, replacements: dict,
                  built: dict, counts: dict[str, list[str]]) -> None:
    """One shared ``s`` for the group's layers; fold 1/s into its norm when exact, else a multiplier (or
    skip); left alone where it would not lower the simulated int8 error (``only_if_better``); rows into
    ``built``."""
    olds = {n: model.get_submodule(n) for n in group.layers}
    act_max = torch.stack([cap.stats[n].abs_max for n in group.layers]).amax(dim=0)
    s = smoothing_scales(act_max, [linear_view(m).weight for m in olds.values()], config.alpha)
    norm_new, why = None, group.why
    if group.norm is not None:
        norm_old = model.get_submodule(group.norm)
        norm_new = fold_into_norm(norm_old, 1.0 / s, cap.probes.get(group.norm))
        why = f"the output of {group.norm} did not scale with its weight on calibration inputs"
    where = group.norm if norm_new is not None else f"input multiplier ({why})"

    def leave(reason: str, details: dict | None = None) -> None:
        for name in group.layers:
            built[name] = layer_row(name, "quantize.smoothquant", olds[name], None, skipped=reason,
                                    detail=(details or {}).get(name, {}))
            counts["skipped"].append(name)

    if norm_new is None and config.unfoldable == "skip":
        return leave(f"no norm layer can absorb 1/s: {why}")
    scaled, details = {}, {}
    for name, old in olds.items():
        scaled[name] = scale_columns(old, s)
        inputs = [cap.rows[name]] if name in cap.rows else []
        smoothed = simulate_dynamic_int8(scaled[name], True)
        details[name] = {"alpha": config.alpha, "scales_into": where,
                         "act_outlier_ratio_before": round(_outliers(act_max), 2),
                         "act_outlier_ratio_after": round(_outliers(act_max / s), 2),
                         "int8_error_before": output_error(old, simulate_dynamic_int8(old, True), inputs),
                         "int8_error_after": output_error(old, lambda v, f=smoothed: f(v / s.to(v.dtype)), inputs)}
    before = sum(d["int8_error_before"] or 0.0 for d in details.values())
    after = sum(d["int8_error_after"] or 0.0 for d in details.values())
    if config.only_if_better and config.layout is None and after >= before:
        summed = f", summed over the layers after {group.norm}" if len(group.layers) > 1 else ""
        return leave(f"smoothing would not lower its simulated int8 output error on the calibration rows "
                     f"({before:.4f} -> {after:.4f}{summed})", details)
    for name, old in olds.items():
        new = scaled[name] if norm_new is not None else InputScaled(scaled[name], 1.0 / s)
        inputs = [cap.rows[name]] if name in cap.rows else []
        err = output_error(old, lambda v, f=scaled[name]: f(v / s.to(v.dtype)), inputs)
        built[name] = layer_row(name, "quantize.smoothquant", old, new, error=err, error_kind="rel_output_error",
                                detail=details[name])
        replacements[name] = new
        if norm_new is None:
            counts["multiplier"].append(name)
    if norm_new is not None:
        replacements[group.norm] = norm_new
        counts["folded"].append(group.norm)
        built[("norm", group.layers[-1])] = layer_row(group.norm, "quantize.smoothquant", norm_old, norm_new,
                                                      detail={"holds_scales_of": list(group.layers),
                                                              "alpha": config.alpha})
