"""Example inputs described by shape and dtype, so a plan that traces the model can be replayed
at load time without the user's data (tracing needs shapes, not values)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["input_spec", "synth_inputs"]


def input_spec(value: Any) -> Any:
    """A JSON-able description of ``value``: tensors become {"shape", "dtype"}; containers recurse."""
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, Mapping):
        return {"dict": {str(k): input_spec(v) for k, v in value.items()}}
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
        dtype = getattr(torch, spec["dtype"])
        ones = dtype.is_floating_point or dtype == torch.bool or "mask" in name
        return (torch.ones if ones else torch.zeros)(spec["tensor"], dtype=dtype)
    if "dict" in spec:
        return {k: synth_inputs(v, k) for k, v in spec["dict"].items()}
    if "tuple" in spec:
        return tuple(synth_inputs(v) for v in spec["tuple"])
    return spec["value"]
