"""Dynamic int8 LSTM / GRU on torch's quantized recurrent kernels.

torch's quantized recurrent modules keep their weights in opaque packed objects, which neither
safetensors nor our size accounting can see. This wrapper holds what defines them as plain tensors
(int8 weights, their scale and zero point, float biases: saved, hashed and counted like any buffer)
and builds torch's module from them on first use (``set_weight_bias``: bit-exact, tested).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .._common import LayerStandIn
from ._common import held_count, quiet

__all__ = ["DynamicInt8Recurrent", "quantize_recurrent"]

_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")


class DynamicInt8Recurrent(LayerStandIn, nn.Module):
    """An ``nn.LSTM`` / ``nn.GRU`` with int8 weights (per tensor, symmetric), float activations.

    Keeps the recurrent layer's attributes (``input_size``, ``hidden_size``, ``num_layers``, ``bias``,
    ``batch_first``, ...) and its weights' names (``weight_ih_l0``, ...) as float stand-ins (dequantized
    when their values are used).
    """

    def __init__(self, kind: str, args: dict, weights: dict[str, torch.Tensor], biases: dict[str, torch.Tensor]):
        super().__init__()
        self.kind, self.args = kind, dict(args)
        self.__dict__.update(self.args)
        self._keep_layer(None, {n: q.int_repr() for n, q in weights.items()})
        self.weight_names, self.bias_names = list(weights), list(biases)
        for name, q in weights.items():
            self.register_buffer(f"{name}_int8", q.int_repr().clone())
            self.register_buffer(f"{name}_scale", torch.tensor(float(q.q_scale()), dtype=torch.float64))
            self.register_buffer(f"{name}_zero_point", torch.tensor(int(q.q_zero_point())))
        for name, b in biases.items():
            self.register_buffer(name, b.detach().clone())
        self._runtime = None

    @classmethod
    def from_float(cls, module: nn.LSTM | nn.GRU) -> DynamicInt8Recurrent:
        with quiet():
            q = torch.ao.quantization.quantize_dynamic(nn.Sequential(copy.deepcopy(module)), {type(module)},
                                                       dtype=torch.qint8)[0]
        args = {k: getattr(module, k) for k in _ARGS}
        return cls(type(module).__name__, args, q.get_weight(), q.get_bias())

    def quantized_weights(self) -> dict[str, torch.Tensor]:
        return {n: torch._make_per_tensor_quantized_tensor(getattr(self, f"{n}_int8"),
                                                           float(getattr(self, f"{n}_scale")),
                                                           int(getattr(self, f"{n}_zero_point")))
                for n in self.weight_names}

    def held_parameters(self, nonzero: bool = False) -> int:
        """The int8 weights (a zero weight is the zero point) and the biases count as parameters."""
        weights = sum(held_count((getattr(self, f"{n}_int8"),), nonzero, int(getattr(self, f"{n}_zero_point")))
                      for n in self.weight_names)
        return weights + held_count([getattr(self, n) for n in self.bias_names], nonzero)

    def dequantized(self) -> dict[str, torch.Tensor]:
        return {n: q.dequantize() for n, q in self.quantized_weights().items()}

    def materialize(self, key: str) -> torch.Tensor:
        q = self.quantized_weights()[key]
        return q.dequantize().to(device=self._standin_device, dtype=self._standin_dtype)

    def __getattr__(self, name: str):
        shapes = self.__dict__.get("_standin_shapes")
        if shapes is not None and name in shapes:  # weight_ih_l0, ...: the float weights' stand-ins
            return self._standin(name)
        return super().__getattr__(name)

    def runtime(self) -> nn.Module:
        if self._runtime is None:
            import torch.ao.nn.quantized.dynamic as nnqd

            with quiet():
                module = getattr(nnqd, self.kind)(**self.args, dtype=torch.qint8)
                module.set_weight_bias({**self.quantized_weights(), **{n: getattr(self, n) for n in self.bias_names}})
            object.__setattr__(self, "_runtime", module)  # not a submodule: its packed state is not ours to save
        return self._runtime

    def forward(self, *args, **kwargs):
        with quiet():
            return self.runtime()(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        object.__setattr__(self, "_runtime", None)
        super()._load_from_state_dict(*args, **kwargs)

    def __deepcopy__(self, memo):
        new = copy.copy(self)
        new.__dict__ = {k: copy.deepcopy(v, memo) for k, v in self.__dict__.items() if k != "_runtime"}
        object.__setattr__(new, "_runtime", None)
        return new

    def extra_repr(self) -> str:
        return f"{self.kind} int8 ({', '.join(f'{k}={v}' for k, v in self.args.items())})"


def quantize_recurrent(module: nn.Module) -> DynamicInt8Recurrent:
    return DynamicInt8Recurrent.from_float(module)
