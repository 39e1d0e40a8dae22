"""A static int8 layer: input quantized with a calibrated scale, torch's int8 conv / linear, output dequantized.

State is plain tensors (int8 weight, per-channel scales, bias, activation scales / zero points) so that
hashing, size and safetensors work; torch's packed kernel weight is built lazily from them.
"""

from __future__ import annotations

import torch
from torch import nn

from .._common import LINEAR_TYPES, LayerStandIn
from ._common import held_count, quiet

__all__ = ["StaticInt8Layer"]


class StaticInt8Layer(LayerStandIn, nn.Module):
    """int8 Conv1d / Conv2d / Linear (or transformers Conv1D; optionally with a fused ReLU), float in and out.

    ``weight``: the float weight (out, in) / (out, in / groups, *kernel), in Linear layout for a Conv1D too.
    The module keeps ``layer``'s attributes and reads ``weight`` as it (dequantized when used).
    """

    def __init__(self, layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, w_scale: torch.Tensor,
                 in_qparams: tuple[float, int], out_qparams: tuple[float, int], relu: bool):
        super().__init__()
        self._keep_layer(layer)
        self.kind = "linear" if isinstance(layer, LINEAR_TYPES) else f"conv{weight.dim() - 2}d"
        self.relu = relu
        if self.kind != "linear":
            self.stride, self.padding = layer.stride, layer.padding
            self.dilation, self.groups = layer.dilation, layer.groups
        q = torch.clamp(torch.round(weight / w_scale.view(-1, *([1] * (weight.dim() - 1)))), -127, 127)
        self.register_buffer("qweight", q.to(torch.int8))
        self.register_buffer("w_scale", w_scale.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("in_scale", torch.tensor(float(in_qparams[0])))
        self.register_buffer("in_zero_point", torch.tensor(int(in_qparams[1])))
        self.register_buffer("out_scale", torch.tensor(float(out_qparams[0])))
        self.register_buffer("out_zero_point", torch.tensor(int(out_qparams[1])))
        self._packed = None

    def dequantized_weight(self) -> torch.Tensor:
        return self.qweight.float() * self.w_scale.view(-1, *([1] * (self.qweight.dim() - 1)))

    dense_weight = dequantized_weight

    def held_parameters(self, nonzero: bool = False) -> int:
        """The int8 weight and the bias count as parameters (core.metrics.count_params)."""
        return held_count((self.qweight, self.bias), nonzero)

    def _pack(self):
        zeros = torch.zeros(self.qweight.shape[0], dtype=torch.long)
        qw = torch.quantize_per_channel(self.dequantized_weight(), self.w_scale.double(), zeros, 0, torch.qint8)
        if self.kind == "linear":
            return torch.ops.quantized.linear_prepack(qw, self.bias)
        prepack = getattr(torch.ops.quantized, f"{self.kind}_prepack")
        return prepack(qw, self.bias, list(self.stride), list(self.padding), list(self.dilation), self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with quiet():
            if self._packed is None:
                self._packed = self._pack()
            qx = torch.quantize_per_tensor(x.float(), float(self.in_scale), int(self.in_zero_point), torch.quint8)
            op = getattr(torch.ops.quantized, self.kind + ("_relu" if self.relu else ""))
            y = op(qx, self._packed, float(self.out_scale), int(self.out_zero_point))
            return y.dequantize().to(x.dtype)

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def extra_repr(self) -> str:
        return f"{self.kind}{'+relu' if self.relu else ''}, int8 weights per-channel, int8 activations (static)"
