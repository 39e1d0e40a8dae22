"""User data in the shapes people have it, turned into batches.

Accepted: a ``DataLoader`` or any iterable of batches (each ``inputs`` or ``(inputs, targets)``);
a tuple ``(X, y)`` of tensors / arrays; a single tensor / array ``X`` (unlabelled); one mapping of model inputs
(a dict, a tokenizer's ``BatchEncoding``), alone or with its targets, as one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import InvalidConfigError

__all__ = ["iter_batches", "describe_data"]


def _tensor(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def describe_data(data: Any) -> str:
    if _is_array(data):
        return f"{type(data).__name__} of shape {tuple(data.shape)}"
    return type(data).__name__


def iter_batches(data: Any, *, batch_size: int = 64, max_batches: int | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(inputs, targets_or_None)`` batches from ``data`` (see the module docstring).

    Raises InvalidConfigError, naming what was given, for None, empty data or a shape mismatch.
    """
    if data is None:
        raise InvalidConfigError("This method needs data: pass data=(X, y), a tensor X or a DataLoader.")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(_is_array(d) for d in data):
        X, y = (_tensor(d) for d in data)
        if len(X) != len(y):
            raise InvalidConfigError(f"data=(X, y) needs as many targets as inputs; got {len(X)} inputs and "
                                     f"{len(y)} targets.")
        source = ((X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(X), batch_size))
    elif isinstance(data, Mapping):  # keyword inputs (a tokenizer's output): one batch, not its keys
        source = iter([(data, None)])
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Mapping) and _is_array(data[1]):
        source = iter([(data[0], _tensor(data[1]))])
    elif _is_array(data):
        X = _tensor(data)
        source = ((X[i:i + batch_size], None) for i in range(0, len(X), batch_size))
    else:
        try:
            iterator = iter(data)
        except TypeError:
            raise InvalidConfigError(f"data must be (X, y), a tensor X or an iterable of batches; got "
                                     f"{describe_data(data)}.") from None
        source = ((_tensor(b[0]), _tensor(b[1])) if isinstance(b, (tuple, list)) and len(b) == 2
                  else (_tensor(b), None) for b in iterator)
    count = 0
    for inputs, targets in source:
        if max_batches is not None and count >= max_batches:
            return
        count += 1
        yield inputs, targets
    if count == 0:
        raise InvalidConfigError(f"data is empty ({describe_data(data)}); give at least one batch.")
