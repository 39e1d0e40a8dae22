"""Example inputs described by shape and dtype, so a plan that traces the model can be replayed
at load time without the user's data (tracing needs shapes, not values)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["input_spec", "synth_inputs"]

# dtypes a recorded example input may name (a file's text never reaches getattr(torch, ...))
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool)}


# A mask of at most this many elements is recorded by value: padding decides which branch a Hugging Face
# model takes (and so the graph an ONNX Runtime route exports), so replay needs the same padding.
_MAX_MASK = 4096


def input_spec(value: Any, name: str = "") -> Any:
    """A JSON-able description of ``value``: tensors become {"shape", "dtype"} (a small padding mask also
    its values); containers recurse."""
    if isinstance(value, torch.Tensor):
        spec = {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        if "mask" in name and not value.is_floating_point() and value.numel() <= _MAX_MASK \
                and not bool(value.all()):
            spec["values"] = value.detach().cpu().to(torch.int64).reshape(-1).tolist()
        return spec
    if isinstance(value, Mapping):
        return {"dict": {str(k): input_spec(v, str(k)) for k, v in value.items()}}
    if isinstance(value, (tuple, list)):
        return {"tuple": [input_spec(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot describe an example input of type {type(value).__name__}")


def synth_inputs(spec: Any, name: str = "") -> Any:
    """Inputs matching ``spec``: ones for floats and for anything named like a mask (a traced model may
    divide by a mask sum), zeros for other integer tensors (valid token ids / labels)."""
    if spec is None:
        return None
    if "tensor" in spec:
        dtype = _DTYPES.get(str(spec["dtype"]))
        if dtype is None:
            raise ValueError(f"unknown dtype {spec['dtype']!r} in the recorded example inputs")
        shape = [int(n) for n in spec["tensor"]]
        if len(shape) > 8 or any(n < 0 or n > 1 << 20 for n in shape) or math.prod(shape) > 1 << 26:
            raise ValueError(f"recorded example input shape {shape} is out of bounds")
        values = spec.get("values")
        if isinstance(values, list) and len(values) == math.prod(shape) <= _MAX_MASK:
            return torch.tensor([int(v) for v in values], dtype=torch.int64).reshape(shape).to(dtype)
        ones = dtype.is_floating_point or dtype == torch.bool or "mask" in name
        return (torch.ones if ones else torch.zeros)(shape, dtype=dtype)
    if "dict" in spec:
        return {k: synth_inputs(v, k) for k, v in spec["dict"].items()}
    if "tuple" in spec:
        return tuple(synth_inputs(v) for v in spec["tuple"])
    return spec["value"]
