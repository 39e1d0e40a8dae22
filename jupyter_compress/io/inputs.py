"""Example inputs described by shape and dtype, so a plan that traces the model can be replayed
at load time without the user's data (tracing needs shapes, not values)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import CompressError, shown

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


# bounds on a recorded example (a manifest is read from a file that may have been edited): checked before
# anything is allocated; real examples are a small batch (8 x 3 x 224 x 224 is 1.2M elements)
_MAX_ELEMENTS = 1 << 24
_MAX_ENTRIES = 256
_MAX_DEPTH = 8


def synth_inputs(spec: Any, name: str = "") -> Any:
    """Inputs matching ``spec``: ones for floats and for anything named like a mask (a traced model may
    divide by a mask sum), zeros for other integer tensors (valid token ids / labels).

    ``spec`` comes from a file: its structure, dtypes, shapes and total size are checked (all of it, before
    any tensor is made), and anything else is a one-line :class:`CompressError`."""
    if spec is None:
        return None
    plans: list = []
    _check_spec(spec, name, plans, 0)
    total = sum(math.prod(shape) for _, shape, _, _ in plans)
    if total > _MAX_ELEMENTS:
        raise CompressError(f"The recorded example inputs have {total:,} elements, more than {_MAX_ELEMENTS:,}; "
                            f"pass example_inputs= to load() instead.")
    return _build(spec, name)


def _bad(what: str) -> CompressError:
    return CompressError(f"The artifact's recorded example inputs are malformed ({what}); pass example_inputs= "
                         f"to load() instead.")


def _check_spec(spec: Any, name: str, plans: list, depth: int) -> None:
    if depth > _MAX_DEPTH or len(plans) > _MAX_ENTRIES:
        raise _bad("nested too deep or too many entries")
    if not isinstance(spec, dict) or len(spec) > 3:
        raise _bad(f"an entry is {shown(spec, 40)}")
    if "tensor" in spec:
        dtype = _DTYPES.get(spec.get("dtype")) if isinstance(spec.get("dtype"), str) else None
        if dtype is None:
            raise _bad(f"dtype {shown(spec.get('dtype'), 40)} is not one of {', '.join(_DTYPES)}")
        shape = spec["tensor"]
        if not isinstance(shape, list) or len(shape) > 8 or not all(
                isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 1 << 20 for n in shape):
            raise _bad(f"shape {shown(shape, 40)} is not a list of at most 8 sizes in [0, 2**20]")
        values = spec.get("values")
        if values is not None and not (isinstance(values, list) and len(values) <= _MAX_MASK
                                       and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**31
                                               for v in values)):
            raise _bad("mask values are not a short list of ints")
        plans.append((name, shape, dtype, values))
    elif "dict" in spec:
        items = spec["dict"]
        if not isinstance(items, dict) or len(items) > _MAX_ENTRIES:
            raise _bad("'dict' is not a small mapping")
        for k, v in items.items():
            _check_spec(v, str(k), plans, depth + 1)
    elif "tuple" in spec:
        items = spec["tuple"]
        if not isinstance(items, list) or len(items) > _MAX_ENTRIES:
            raise _bad("'tuple' is not a short list")
        for v in items:
            _check_spec(v, "", plans, depth + 1)
    elif "value" in spec:
        value = spec["value"]
        if not (value is None or isinstance(value, (bool, float)) or (isinstance(value, int) and abs(value) < 2**63)
                or (isinstance(value, str) and len(value) <= 1000)):
            raise _bad(f"value {shown(value, 40)} is not a number, a short string or null")
    else:
        raise _bad(f"an entry has keys {shown(sorted(map(str, spec)), 40)}")


def _build(spec: Any, name: str) -> Any:
    if "tensor" in spec:
        dtype, shape = _DTYPES[spec["dtype"]], spec["tensor"]
        values = spec.get("values")
        if isinstance(values, list) and len(values) == math.prod(shape) <= _MAX_MASK:
            return torch.tensor(values, dtype=torch.int64).reshape(shape).to(dtype)
        ones = dtype.is_floating_point or dtype == torch.bool or "mask" in name
        return (torch.ones if ones else torch.zeros)(shape, dtype=dtype)
    if "dict" in spec:
        return {k: _build(v, k) for k, v in spec["dict"].items()}
    if "tuple" in spec:
        return tuple(_build(v, "") for v in spec["tuple"])
    return spec["value"]
