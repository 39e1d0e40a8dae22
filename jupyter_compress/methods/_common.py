"""Helpers shared by the method modules: report rows, Linear-like layers (``nn.Linear`` and Hugging Face's
``Conv1D``), and the attributes a replacement layer keeps for code that reads them from the layer it replaced.

Model code reads metadata from a layer's weight: T5's feed-forward compares the input's dtype with
``wo.weight.dtype``, ViT casts pixels to ``projection.weight.dtype``. A replacement (two low-rank Linears,
an int8 layer, a TT chain, ...) has no dense weight, so :class:`LayerStandIn` gives it a ``weight`` property:
a :class:`WeightStandIn`, a ``torch.Tensor`` subclass with the replaced weight's shape, dtype and device
but one element of storage (a zero-stride ``expand``). Metadata reads (``dtype``, ``shape``, ``size()``,
``device``, ``isinstance``) cost no more than creating it (a few microseconds, no allocation); any other
operation on it materialises the dense weight from its module (``dense_weight()``: dequantized, or the
product of the factors) and runs on that. It is neither a parameter nor a buffer: ``state_dict``, parameter
counts and byte counts do not see it. It is read-only: an in-place write raises.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..core.metrics import layer_counts
from ..core.report import LayerRow

__all__ = ["describe_module", "layer_row", "Conv1D", "LINEAR_TYPES", "is_conv1d", "hf_conv1d_class",
           "linear_view", "LinearView", "parent_reads_weight", "submodule", "WeightStandIn", "LayerStandIn", "LAYER_ATTRS"]


def hand_over(ctx: Any, replacements: dict[str, nn.Module], name: str, new: nn.Module) -> None:
    """Give the core a finished replacement: swapped in at once when the core streams (methods registered
    with ``streams=True``: the old layer is freed or its undo record moved to disk, so a run on a big model
    holds one layer's work), else collected into ``replacements`` as before. Call it after the layer's
    report row is made: the model then holds the new layer at ``name``."""
    sink = getattr(ctx, "sink", None)
    if sink is None:
        replacements[name] = new
    else:
        sink(name, new)


def describe_module(module: nn.Module) -> str:
    if isinstance(module, nn.Sequential):
        return type(module).__name__ + "(" + ", ".join(type(m).__name__ for m in module) + ")"
    return type(module).__name__


def layer_row(name: str, method: str, old: nn.Module, new: nn.Module | None, *,
              nonzeros_before: int | None = None, nonzeros_after: int | None = None, **extra) -> LayerRow:
    """A report row comparing a layer before and after (``new=None`` for a skipped layer).

    ``nonzeros_before`` / ``nonzeros_after``: the old / new layer's non-zero count when the caller has it
    already (e.g. cached per weight version), since counting is the costliest part of a row.
    """
    after = old if new is None else new
    params_before, nonzeros_old, bytes_before = layer_counts(old, nonzeros=nonzeros_before is None)
    if after is old and nonzeros_old is not None:
        params_after, counted, bytes_after = params_before, nonzeros_old, bytes_before
    else:
        params_after, counted, bytes_after = layer_counts(after, nonzeros=nonzeros_after is None)
    nonzeros_after = counted if nonzeros_after is None else nonzeros_after
    return LayerRow(
        name=name,
        method=method,
        layer_type=describe_module(old),
        new_type=describe_module(after),
        params_before=params_before,
        params_after=params_after,
        nonzeros_before=nonzeros_old if nonzeros_before is None else nonzeros_before,
        nonzeros_after=nonzeros_after,
        bytes_before=bytes_before,
        bytes_after=bytes_after,
        **extra,
    )


# ---------------------------------------------------------------------------------------------------------
# Linear-like layers: nn.Linear, and transformers' Conv1D (GPT-2: y = x @ W + b with W of shape (in, out))

def hf_conv1d_class() -> type | None:
    """``transformers.pytorch_utils.Conv1D`` when transformers is already imported, else None (never imports it:
    a model holding a Conv1D has imported it, and ``import jupyter_compress`` must stay light)."""
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


class _Conv1DMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        if type(obj) is nn.Linear:  # the common case, answered without looking transformers up
            return False
        real = hf_conv1d_class()
        return real is not None and isinstance(obj, real)

    def __subclasscheck__(cls, sub: type) -> bool:
        real = hf_conv1d_class()
        return sub is cls or (real is not None and issubclass(sub, real))


class Conv1D(metaclass=_Conv1DMeta):
    """Stands for ``transformers.pytorch_utils.Conv1D`` in ``isinstance`` checks (and in a method's
    ``supported`` types) without importing transformers; never instantiated."""

    def __new__(cls, *args, **kwargs):
        raise TypeError("jupyter_compress's Conv1D only stands for transformers' Conv1D in isinstance checks")


LINEAR_TYPES: tuple[type, ...] = (nn.Linear, Conv1D)


def is_conv1d(module: Any) -> bool:
    return isinstance(module, Conv1D)


class LinearView(NamedTuple):
    """A Linear-like layer seen as ``nn.Linear``: ``weight`` (out, in) (a view of a Conv1D's transposed
    parameter), ``bias`` (out) or None, the feature counts, and whether it is a Conv1D."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    in_features: int
    out_features: int
    conv1d: bool


def linear_view(module: nn.Module) -> LinearView:
    """``module`` (an ``nn.Linear`` or a transformers ``Conv1D``) as a Linear: weight (out, in), bias, in, out."""
    if is_conv1d(module):
        w = module.weight
        return LinearView(w.t(), module.bias, w.shape[0], w.shape[1], True)
    return LinearView(module.weight, module.bias, module.in_features, module.out_features, False)


# Parents whose forward reads a child Linear's weight VALUES directly (fused attention fast paths): replacing
# that child by another module would break them, so such layers are skipped and named.
_READS_CHILD_WEIGHTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def submodule(model: nn.Module, name: str, modules: dict[str, nn.Module] | None = None) -> nn.Module:
    """``model.get_submodule(name)``, looked up in ``modules`` (``dict(model.named_modules())``, made once by a
    caller that visits many layers) when given; a name it lacks (a module registered twice) is looked up."""
    found = modules.get(name) if modules is not None else None
    return found if found is not None else model.get_submodule(name)


def parent_reads_weight(model: nn.Module, name: str, modules: dict[str, nn.Module] | None = None) -> str | None:
    """A skip reason when the layer's parent reads its weight values directly (fused fast paths), else None.
    ``modules``: ``dict(model.named_modules())`` when the caller has it (see :func:`submodule`)."""
    parent_name = name.rpartition(".")[0]
    parent = submodule(model, parent_name, modules) if parent_name else model
    if isinstance(parent, _READS_CHILD_WEIGHTS):
        return (f"its parent {type(parent).__name__} reads this layer's .weight values directly (fused fast "
                "path), so it cannot be replaced")
    return None


# ---------------------------------------------------------------------------------------------------------
# The weight stand-in

_METADATA = {
    getattr(torch.Tensor, name).__get__
    for name in ("dtype", "shape", "device", "ndim", "layout", "is_cuda", "is_cpu", "is_meta", "is_sparse",
                 "is_quantized", "is_mkldnn", "is_nested", "requires_grad", "is_leaf", "grad", "grad_fn",
                 "itemsize", "nbytes", "_version")
    if hasattr(torch.Tensor, name)
} | {
    getattr(torch.Tensor, name)
    for name in ("size", "dim", "ndimension", "numel", "nelement", "is_floating_point", "is_complex",
                 "is_signed", "element_size", "get_device", "__len__", "__hash__")
}
_INPLACE_DUNDERS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                    "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__",
                    "__imatmul__", "__set__"}
_ZEROS: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _zero(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (dtype, device)
    zero = _ZEROS.get(key)
    if zero is None:
        zero = _ZEROS[key] = torch.zeros((), dtype=dtype, device=device)
    return zero


class WeightStandIn(torch.Tensor):
    """The weight of a replaced layer: its shape, dtype and device without its values until they are used.

    Made by :meth:`LayerStandIn._standin` from a zero-stride view of one zero (no allocation). Metadata
    reads answer from that view; any other torch operation materialises the dense tensor from the owning
    module (held by weak reference) and runs on it. In-place writes raise: the module holds no dense weight.
    """

    @staticmethod
    def make(owner: LayerStandIn, key: str, shape: tuple[int, ...]) -> WeightStandIn:
        view = _zero(owner._standin_dtype, owner._standin_device).expand(shape)
        t = torch.Tensor._make_subclass(WeightStandIn, view)
        t._owner, t._key = weakref.ref(owner), key
        return t

    def materialize(self) -> torch.Tensor:
        """The dense tensor this stands for (dequantized / reconstructed: a new tensor, not a view)."""
        owner = self._owner()
        if owner is None:
            raise RuntimeError(f"The module that owned this {self._key!r} stand-in no longer exists.")
        return owner.materialize(self._key)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        out = kwargs.get("out")
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if ((name in _INPLACE_DUNDERS or (name.endswith("_") and not name.endswith("__")))
                and args and isinstance(args[0], WeightStandIn)) or any(isinstance(o, WeightStandIn) for o in outs):
            target = args[0] if args and isinstance(args[0], WeightStandIn) else next(
                o for o in outs if isinstance(o, WeightStandIn))
            owner = target._owner()
            raise RuntimeError(f"{name or func}: the {'' if owner is None else type(owner).__name__ + ' '}layer "
                               "holds no dense weight (it is computed from the compressed form), so it cannot be "
                               "written in place; change the module's own parameters or buffers instead.")
        memo: dict[int, torch.Tensor] = {}

        def dense(v):
            if isinstance(v, WeightStandIn):
                if id(v) not in memo:
                    memo[id(v)] = v.materialize()
                return memo[id(v)]
            return v

        args, kwargs = tree_map(dense, (tuple(args), kwargs))
        return func(*args, **kwargs)

    def __repr__(self, *args, **kwargs) -> str:
        owner = self._owner()
        return (f"WeightStandIn(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device}, "
                f"of {type(owner).__name__ if owner is not None else 'a deleted module'})")


# Plain attributes a replacement copies from the layer it replaces (Linear, Conv*, Embedding, Conv1D).
LAYER_ATTRS = ("in_features", "out_features", "in_channels", "out_channels", "kernel_size", "stride",
               "padding", "dilation", "groups", "padding_mode", "output_padding", "transposed",
               "num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
               "sparse", "nf", "nx")


class LayerStandIn:
    """Mixin (put before ``nn.Module`` in the bases) for a module that replaces a layer: it keeps the layer's
    plain attributes (``in_features``, ``kernel_size``, ``nf``, ...) and offers ``weight`` as a
    :class:`WeightStandIn` with the replaced weight's shape, dtype and device.

    A class calls :meth:`_keep_layer` in ``__init__`` and implements ``dense_weight()``: the dense weight
    in the layout of ``nn.Linear`` / the conv (a Conv1D's is transposed back here). ``.to()`` / ``.half()``
    move the reported dtype and device along with the module.
    """

    _standin_shapes: dict[str, tuple[int, ...]]
    _standin_dtype: torch.dtype
    _standin_device: torch.device
    _standin_conv1d: bool

    def _keep_layer(self, old: nn.Module | None, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Record ``old``'s attributes and its weight(s) shape, dtype and device (``weights``: name -> tensor,
        default ``{'weight': old.weight}``; a non-float tensor stands for float32). ``old=None``: shapes only."""
        weights = {"weight": old.weight} if weights is None else weights
        first = next(iter(weights.values()))
        d = self.__dict__
        d["_standin_shapes"] = {k: tuple(w.shape) for k, w in weights.items()}
        d["_standin_dtype"] = first.dtype if first.is_floating_point() else torch.float32
        d["_standin_device"] = first.device
        d["_standin_conv1d"] = is_conv1d(old)
        for attr in LAYER_ATTRS if old is not None else ():
            value = old.__dict__.get(attr)
            if attr in old.__dict__ and (value is None or isinstance(value, (int, float, bool, str, tuple))):
                d[attr] = value

    def _standin(self, key: str = "weight") -> WeightStandIn:
        shape = self.__dict__.get("_standin_shapes", {}).get(key)
        if shape is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute {key!r}")
        return WeightStandIn.make(self, key, shape)

    @property
    def weight(self) -> torch.Tensor:
        """The replaced layer's weight: shape, dtype and device at no cost; values computed when used."""
        return self._standin("weight")

    def dense_weight(self) -> torch.Tensor:  # pragma: no cover - every class implements it
        raise NotImplementedError

    def materialize(self, key: str) -> torch.Tensor:
        """The dense tensor named ``key`` in the replaced layer's layout, dtype and device."""
        w = self.dense_weight()
        if self._standin_conv1d:
            w = w.t()
        return w.to(device=self._standin_device, dtype=self._standin_dtype)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        try:  # follow .to(dtype / device), .half(), .cuda(): apply fn to an empty tensor of ours
            probe = fn(torch.empty(0, dtype=self._standin_dtype, device=self._standin_device))
        except Exception:  # a function that needs real data (none of torch's own): keep ours
            return out
        if isinstance(probe, torch.Tensor):
            self.__dict__["_standin_dtype"], self.__dict__["_standin_device"] = probe.dtype, probe.device
        return out
