"""Quantization-aware fine-tuning: fake quantization (torch.ao ``FakeQuantize``) during the user's training.

A copy of the model gets each selected Conv / Linear (with its BatchNorm folded in, ReLU fused) wrapped in
:class:`FakeQuantLayer`; only those layers are trainable. ``train(model)``, the user's own loop, runs with
grad on; then the observers' ranges and the trained weights become :class:`StaticInt8Layer` s.

``train`` is the function itself, or a NAME: a plan (a file, a notebook cell, a saved artifact) holds only
the name, and the function comes from the caller (``compress(..., functions={NAME: fn})``, the CLI's
``--train NAME=module:function``, a notebook's own namespace). A plan never imports a module or calls a
function it names. A saved model's plan is replayed without training (the file holds the trained values).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize
from torch.ao.quantization.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ...core.config import Boolean, Constraint, MethodConfig, param
from ...core.modules import swap_submodule
from ...core.registry import MethodResult, register_method
from ...errors import CompressError, shown
from .._common import LINEAR_TYPES, LayerStandIn, layer_row, linear_view, parent_reads_weight
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

__all__ = ["QATConfig", "FakeQuantLayer"]


class TrainFunction(Constraint):
    """'' (no training), a name of at most 200 characters, or a callable."""

    def check(self, value: Any) -> bool:
        return callable(value) or (isinstance(value, str) and len(value) <= 200)

    def describe(self) -> str:
        return "a function, or its name (at most 200 characters) given with compress(..., functions={name: fn})"


def function_name(fn: Any) -> str:
    """The name a plan records for a training function passed as an object: 'module:qualname'."""
    return f"{getattr(fn, '__module__', None) or '__main__'}:{getattr(fn, '__qualname__', type(fn).__name__)}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class QATConfig(MethodConfig):
    """Fake-quantized fine-tuning by the user's training function, then static int8 (per-channel weights)."""

    train: Any = param("", help="the training function, called as train(model) with fake quantization in place, "
                       "or its name given with compress(..., functions={name: fn}) ('' = no training: calibrate "
                       "on the data only)", check=TrainFunction())

    fuse: bool = param(True, help="fold Conv-BatchNorm and fuse a following ReLU first", check=Boolean())

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if callable(out["train"]):
            out["train"] = function_name(out["train"])  # a plan holds the name only (see the module docstring)
        return out

    def requirements(self) -> frozenset[str]:
        return frozenset({"train"}) if self.train else frozenset()


def _activation_fq() -> FakeQuantize:
    top = 127 if torch.backends.quantized.engine in ("fbgemm", "x86") else 255  # 7-bit without VNNI
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=top, dtype=torch.quint8,
                        qscheme=torch.per_tensor_affine)


class FakeQuantLayer(LayerStandIn, nn.Module):
    """A float Conv / Linear / transformers Conv1D that rounds its input, weight and output as the int8 kernel
    will. Keeps the layer's attributes; ``weight`` is the wrapped layer's own (float, trainable) parameter."""

    def __init__(self, layer: nn.Module, relu: bool):
        super().__init__()
        self._keep_layer(layer)
        self.layer, self.relu = layer, relu
        with quiet():
            self.input_fq, self.output_fq = _activation_fq(), _activation_fq()
            self.weight_fq = FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-127,
                                          quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                          ch_axis=0)

    @property
    def weight(self) -> torch.Tensor:
        return self.layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_fq(x)
        if isinstance(self.layer, LINEAR_TYPES):
            view = linear_view(self.layer)
            y = nn.functional.linear(x, self.weight_fq(view.weight), view.bias)
        else:
            w = self.weight_fq(self.layer.weight)
            y = self.layer._conv_forward(x, w, self.layer.bias)
        return self.output_fq(torch.relu(y) if self.relu else y)


def _resolve(spec: Any, ctx: Any):
    """The training function: the object itself, or the caller's function of that name. Never an import."""
    if callable(spec):
        return spec
    functions = getattr(ctx, "functions", None) or {}
    fn = functions.get(spec)
    if fn is None and ":" in spec:  # '__main__:my_train' given as functions={'my_train': fn}
        fn = functions.get(spec.rpartition(":")[2])
    if fn is None:
        named = shown(spec, 62)
        raise CompressError(f"QATConfig's train names {named}, and no function of that name was passed; a plan "
                            f"never imports code: pass compress(..., functions={{{named}: my_train}}), or "
                            f"--train {spec[:60]}=module:function on the command line.")
    if not callable(fn):
        raise CompressError(f"The function passed for QATConfig's train {shown(spec, 62)} is not callable.")
    return fn


def _weight_of(layer: nn.Module) -> torch.Tensor:
    """The weight with output channels first (a transformers Conv1D's transposed to Linear layout)."""
    return linear_view(layer).weight if isinstance(layer, LINEAR_TYPES) else layer.weight


@register_method(
    "quantize.qat",
    QATConfig,
    supported=(nn.Conv1d, nn.Conv2d, *LINEAR_TYPES),
    family="quantization",
    help="Quantization-aware fine-tuning (fake quantization during your training function), then static int8.",
    requires=("calibration",),
    stage="precision",
    order=4,
    function_fields=("train",),
)
def apply_qat(model: nn.Module, names: list[str], config: QATConfig, ctx: Any) -> MethodResult:
    # replaying a saved plan (load): the file holds the trained values, the training is not run again
    train = _resolve(config.train, ctx) if config.train and not getattr(ctx, "replay", False) else None
    batches = calibration_batches(ctx, required=True, method="quantize.qat")
    rows = [layer_row(n, "quantize.qat", model.get_submodule(n), None, skipped=parent_reads_weight(model, n))
            for n in names if parent_reads_weight(model, n)]
    names = [n for n in names if not parent_reads_weight(model, n)]
    fusions, notes = find_fusions(model, names) if config.fuse else ({}, [])
    with capture_inputs(model, names, max_rows=64) as inputs:
        run_batches(model, batches, names, getattr(ctx, "example_inputs", None))
    work = copy.deepcopy(model)  # the user's training loop runs on this copy; the model itself is not touched
    for p in work.parameters():
        p.requires_grad_(False)
    floats, fq = {}, {}
    for name in names:
        bn_name, relu = fusions.get(name, (None, False))
        floats[name] = fuse_conv_bn_eval(model.get_submodule(name), model.get_submodule(bn_name)) if bn_name \
            else model.get_submodule(name)
        trainable = copy.deepcopy(floats[name]).requires_grad_(True)
        fq[name] = FakeQuantLayer(trainable, relu)
        swap_submodule(work, name, fq[name])
        if bn_name:
            swap_submodule(work, bn_name, nn.Identity())
    with quiet():
        if train is not None:
            with torch.enable_grad():
                train(work)
        run_batches(work, batches, names, getattr(ctx, "example_inputs", None))  # settle the activation ranges
    replacements = {}
    for name in names:
        bn_name, relu = fusions.get(name, (None, False))
        layer, f = fq[name].layer, fq[name]
        weight, bias = _weight_of(layer).detach().float(), linear_view(layer).bias if isinstance(
            layer, LINEAR_TYPES) else layer.bias
        w_scale = (weight.abs().flatten(1).amax(dim=1) / 127).clamp_min(1e-12)
        with quiet():
            in_q, out_q = f.input_fq.calculate_qparams(), f.output_fq.calculate_qparams()
        new = StaticInt8Layer(layer, weight, None if bias is None else bias.detach(), w_scale,
                              (float(in_q[0]), int(in_q[1])), (float(out_q[0]), int(out_q[1])), relu)
        ref = floats[name]
        err = output_error((lambda x, r=ref: torch.relu(r(x))) if relu else ref, new, inputs.get(name, []))
        replacements[name] = new
        rows.append(layer_row(name, "quantize.qat", model.get_submodule(name), new, error=err,
                              error_kind="rel_output_error",
                              detail={"sqnr_db": round(sqnr_db(_weight_of(ref), new.dequantized_weight()), 2),
                                      "trained": train is not None, "fused": "bn" if bn_name else "-"}))
        if bn_name:
            replacements[bn_name] = nn.Identity()
            rows.append(layer_row(bn_name, "quantize.qat", model.get_submodule(bn_name), nn.Identity(),
                                  detail={"folded into": name}))
            folded_rows(rows[-2], rows[-1], model.get_submodule(name), new)
    notes.append("QAT trains only the quantized layers (others are frozen, so the model outside them is unchanged);"
                 " the rel. error column compares each int8 layer with the float layer before training.")
    notes += unsupported_note(model, (nn.Conv1d, nn.Conv2d, *LINEAR_TYPES), "quantize.qat")
    return MethodResult(replacements, rows, notes)
