"""Training data for distillation: arrays shuffled by a seeded generator, fixed lists of batches, or any
iterable of batches (a DataLoader), plus a list of sentences for models that tokenize (sentence-transformers).

Each batch comes with a key for the teacher-output cache: sample indices for arrays, the batch index for a
list of batches, None for a stream (a DataLoader may augment or reshuffle, so its batches are not cached).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ...core.data import iter_batches
from ...core.metrics import call_model
from ...errors import InvalidConfigError

__all__ = ["Source", "to_device", "model_device", "call"]


def _is_array(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray))


def _tensor(x: Any) -> Any:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def to_device(value: Any, device: torch.device, what: str = "The data") -> Any:
    """Move CPU tensors (what a DataLoader yields) to ``device``; data already on another device is an error."""
    if isinstance(value, torch.Tensor):
        if value.device == device:
            return value
        if value.device.type == "cpu":
            return value.to(device)
        raise InvalidConfigError(f"{what} is on {value.device} but the model is on {device}; move one of them "
                                 f"(e.g. .to('{device}')).")
    if isinstance(value, dict) or hasattr(value, "keys") and hasattr(value, "items"):
        return {k: to_device(v, device, what) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device, what) for v in value)
    return value


def call(model: torch.nn.Module, inputs: Any) -> Any:
    """Run ``model`` on a batch (``core.inputs.call_model``: a mapping goes whole to a forward that takes one
    features argument, such as sentence-transformers', as keyword arguments to others, such as Hugging Face's)."""
    return call_model(model, inputs)


class Source:
    """Batches of ``(key, inputs, targets)``, an epoch at a time."""

    def __init__(self, data: Any, batch_size: int, *, tokenize: Any = None, name: str = "data"):
        if data is None:
            raise InvalidConfigError(f"distill needs {name}: pass (X, y), a tensor X, a list of batches or a "
                                     f"DataLoader (labels are optional).")
        if isinstance(data, (list, tuple)) and data and all(isinstance(s, str) for s in data):
            if tokenize is None:
                raise InvalidConfigError(f"{name} is a list of strings but the model has no tokenizer "
                                         f"(.tokenize); tokenize them and pass a list of feature dicts.")
            data = [dict(tokenize(list(data[i:i + batch_size]))) for i in range(0, len(data), batch_size)]
        self.X = self.y = self.batches = self.stream = None
        self.batch_size = batch_size
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(_is_array(d) for d in data):
            self.X, self.y = (_tensor(d) for d in data)
            if len(self.X) != len(self.y):
                raise InvalidConfigError(f"{name}=(X, y) needs as many targets as inputs; got {len(self.X)} "
                                         f"inputs and {len(self.y)} targets.")
        elif _is_array(data):
            self.X = _tensor(data)
        elif isinstance(data, Mapping):  # one batch of named inputs (a tokenizer's output)
            self.batches = [(data, None)]
        elif isinstance(data, Sequence):
            self.batches = list(iter_batches(data))
        else:
            self.stream = data
        if self.X is not None and len(self.X) == 0:
            raise InvalidConfigError(f"{name} is empty (shape {tuple(self.X.shape)}); give at least one example.")
        self.labelled = self.y is not None

    @property
    def cacheable(self) -> bool:
        return self.stream is None

    def __len__(self) -> int | None:
        if self.X is not None:
            return -(-len(self.X) // self.batch_size)
        if self.batches is not None:
            return len(self.batches)
        return len(self.stream) if hasattr(self.stream, "__len__") else None

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[Any, Any, Any]]:
        """One pass; shuffled by ``generator`` (samples of arrays, order of fixed batches), in order if None."""
        if self.X is not None:
            n = len(self.X)
            order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
            for idx in order.split(self.batch_size):
                yield idx, self.X[idx], None if self.y is None else self.y[idx]
        elif self.batches is not None:
            n = len(self.batches)
            order = torch.randperm(n, generator=generator).tolist() if generator is not None else range(n)
            for i in order:
                yield i, *self.batches[i]
        else:
            for inputs, targets in iter_batches(self.stream):
                yield None, inputs, targets
