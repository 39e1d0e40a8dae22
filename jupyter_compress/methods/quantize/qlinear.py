"""Quantized Linear modules whose whole state is plain tensors (int8 / packed int4 + scales as buffers).

torch.ao's own ``nn.quantized.dynamic.Linear`` keeps its weight in an opaque packed object that is neither a
parameter nor a buffer: ``state_dict`` then holds a tuple and a dtype, and byte counts see nothing. These
modules keep the quantized weight as buffers (so size, hashing and safetensors work) and hand it to
torch's own int8 kernel (``quantized::linear_dynamic``, fbgemm / x86 / qnnpack) packed once, lazily.
"""

from __future__ import annotations

import torch
from torch import nn

from .._common import LayerStandIn, linear_view
from ._common import held_count, quiet

__all__ = ["DynamicInt8Linear", "WeightOnlyLinear", "quantize_rows", "quantize_groups"]


def quantize_rows(weight: torch.Tensor, per_channel: bool, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of a 2-D weight: ``(q int8, scale float32 per row)``; q in [-(2^(b-1)-1), ...]."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    amax = w.abs().amax(dim=1) if per_channel else w.abs().amax().expand(w.shape[0])
    scale = (amax / qmax).clamp_min(1e-12)
    q = torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax).to(torch.int8)
    return q, scale.contiguous()


def quantize_groups(weight: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric group-wise quantization along the input dimension: ``(q int8 (out, in), scale (out, in/group))``."""
    out_f, in_f = weight.shape
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float().reshape(out_f, in_f // group, group)
    scale = (w.abs().amax(dim=2) / qmax).clamp_min(1e-12)
    q = torch.clamp(torch.round(w / scale[..., None]), -qmax, qmax).to(torch.int8)
    return q.reshape(out_f, in_f), scale.contiguous()


class DynamicInt8Linear(LayerStandIn, nn.Module):
    """y = x W^T + b with W in int8 (symmetric, per output channel or per tensor) and x quantized per call.

    Replaces an ``nn.Linear`` or a transformers ``Conv1D``; ``weight`` reads as the replaced layer's (a
    :class:`~jupyter_compress.methods._common.WeightStandIn`: float dtype and layout, dequantized when used).
    """

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, per_channel: bool,
                 layer: nn.Module | None = None):
        super().__init__()
        self._keep_layer(layer, None if layer is not None else {"weight": qweight})  # no layer: a float32 Linear
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.per_channel = per_channel
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._packed = None

    @classmethod
    def from_linear(cls, linear: nn.Module, per_channel: bool = True) -> DynamicInt8Linear:
        """From an ``nn.Linear`` or a transformers ``Conv1D``."""
        view = linear_view(linear)
        q, scale = quantize_rows(view.weight, per_channel)
        return cls(q, scale, view.bias, per_channel, layer=linear)

    def dequantized_weight(self) -> torch.Tensor:
        """The int8 weight times its scales: (out, in) float32, the layout of ``nn.Linear``."""
        return self.qweight.float() * self.scale[:, None]

    dense_weight = dequantized_weight

    def held_parameters(self, nonzero: bool = False) -> int:
        """The int8 weight and the bias count as parameters (core.metrics.count_params)."""
        return held_count((self.qweight, self.bias), nonzero)

    def _pack(self):
        with quiet():
            if self.per_channel:
                zeros = torch.zeros(self.out_features, dtype=torch.long)
                qw = torch.quantize_per_channel(self.qweight.float() * self.scale[:, None], self.scale.double(),
                                                zeros, 0, torch.qint8)
            else:
                qw = torch.quantize_per_tensor(self.dequantized_weight(), float(self.scale[0]), 0, torch.qint8)
            return torch.ops.quantized.linear_prepack(qw, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            self._packed = self._pack()
        # fbgemm / x86 kernels use 7-bit activations to avoid int16 overflow without VNNI; qnnpack does not
        reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86")
        with quiet():
            y = torch.ops.quantized.linear_dynamic(x.float(), self._packed, reduce_range)
        return y.to(x.dtype)

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None  # the packed kernel weight is rebuilt from the buffers on first use
        return state

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weights=int8 {'per-channel' if self.per_channel else 'per-tensor'}, activations=dynamic int8")


class WeightOnlyLinear(LayerStandIn, nn.Module):
    """Weights stored in int8 or int4 (two per byte), group-wise scales; dequantized to float at each call.

    Saves memory and storage, not time: no int4 / weight-only kernel is used on CPU here. Replaces an
    ``nn.Linear`` or a transformers ``Conv1D`` (whose ``weight`` and ``nf`` it keeps).
    """

    def __init__(self, linear: nn.Module, bits: int, group: int, *, weight: torch.Tensor | None = None,
                 input_scale: torch.Tensor | None = None):
        super().__init__()
        self._keep_layer(linear)
        view = linear_view(linear)
        self.in_features, self.out_features, self.bits, self.group = view.in_features, view.out_features, bits, group
        q, scale = quantize_groups(view.weight if weight is None else weight, bits, group)
        if bits == 4:  # pack two signed 4-bit values per byte (low nibble = even column)
            u = (q + 8).to(torch.uint8).reshape(self.out_features, -1, 2)
            q = (u[..., 0] | (u[..., 1] << 4)).contiguous()
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale.to(view.weight.dtype if view.weight.is_floating_point() else
                                               torch.float32))
        self.register_buffer("bias", None if view.bias is None else view.bias.detach().clone())
        # optional per-input-channel multiplier applied to x first (activation-aware scaling kept in the layer)
        self.register_buffer("input_scale", None if input_scale is None else input_scale.detach().clone())

    @classmethod
    def from_weight(cls, linear: nn.Module, weight: torch.Tensor, bits: int, group: int,
                    input_scale: torch.Tensor | None = None) -> WeightOnlyLinear:
        """Replace ``linear`` (its bias, attributes and stand-in weight), quantizing ``weight`` (out, in) instead
        of its own; ``input_scale`` (in,): multiply the input by it first."""
        return cls(linear, bits, group, weight=weight, input_scale=input_scale)

    def dense_weight(self) -> torch.Tensor:
        w, m = self.dequantized_weight(), getattr(self, "input_scale", None)  # modules pickled before: none
        return w if m is None else w * m.to(w.dtype)[None, :]

    def held_parameters(self, nonzero: bool = False) -> int:
        """The int8 / int4 weight elements (two per byte for int4) and the bias count as parameters."""
        if not nonzero:
            return self.out_features * self.in_features + held_count((self.bias,), False)
        q = self.qweight
        zeros = int(torch.count_nonzero((q & 0x0F) == 8) + torch.count_nonzero((q >> 4) == 8)) if self.bits == 4 \
            else q.numel() - int(torch.count_nonzero(q))
        return self.out_features * self.in_features - zeros + held_count((self.bias,), True)

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) in the scales' dtype, the layout of ``nn.Linear``."""
        q = self.qweight
        if self.bits == 4:
            q = torch.stack([(q & 0x0F).to(torch.int8) - 8, (q >> 4).to(torch.int8) - 8], dim=-1)
        q = q.reshape(self.out_features, -1, self.group).to(self.scale.dtype)
        return (q * self.scale[..., None]).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = getattr(self, "input_scale", None)
        if m is not None:
            x = x * m.to(x.dtype)
        return nn.functional.linear(x, self.dequantized_weight().to(x.dtype),
                                    None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int{self.bits}, group={self.group}"
                + (", input_scale" if getattr(self, "input_scale", None) is not None else ""))
