"""The teacher's side: its outputs (and tapped features) per batch, cached when the data is fixed, and the
validation metrics computed against it. The teacher only ever runs in eval mode under ``no_grad``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...core.metrics import eval_mode, primary_output
from ...errors import InvalidConfigError
from ._attention import QKVTap
from ._data import Source, call, model_device, to_device
from ._features import Tap
from .losses import output_loss

__all__ = ["TeacherOutputs", "Validator", "METRICS", "qkv_key"]

METRICS = ("accuracy", "agreement", "cosine", "loss")
OUT = "__output__"


def qkv_key(name: str, slot: int) -> str:
    """The key of an attention module's query (0), key (1) or value (2) among the teacher's outputs."""
    return f"{name}\x00{'qkv'[slot]}"


class TeacherOutputs:
    """``outputs(key, inputs) -> {OUT: tensor, layer: tensor}`` on ``device``; cached by sample index (arrays)
    or batch index (fixed batches). The raw output of the first call is kept in ``first_raw``."""

    def __init__(self, teacher: nn.Module, layers: list[str], device: torch.device, cache: bool,
                 attention: list[str] = ()):
        self.teacher, self.layers, self.device, self.cache = teacher, layers, device, cache
        self.attention = list(attention)
        self.tdevice = model_device(teacher)
        self.by_batch: dict[int, dict[str, torch.Tensor]] = {}
        self.by_sample: dict[str, torch.Tensor] = {}
        self.filled: torch.Tensor | None = None
        self.first_raw: Any = None

    def _run(self, inputs: Any) -> dict[str, torch.Tensor]:
        with torch.no_grad(), Tap(self.teacher, self.layers) as feats, QKVTap(self.teacher, self.attention) as qkv:
            raw = call(self.teacher, to_device(inputs, self.tdevice))
        for name, (q, k, v) in qkv.items():
            feats.update({qkv_key(name, 0): q, qkv_key(name, 1): k, qkv_key(name, 2): v})
        if self.first_raw is None:
            self.first_raw = raw
        out = primary_output(raw)
        if out is None:
            raise InvalidConfigError(f"The teacher returned no tensor ({type(raw).__name__}); distill needs a "
                                     f"tensor, a dict of tensors or a tuple of tensors.")
        return {k: v.detach().to(self.device) for k, v in {OUT: out, **feats}.items()}

    def outputs(self, key: Any, inputs: Any, n: int | None = None) -> dict[str, torch.Tensor]:
        if not self.cache or key is None:
            return self._run(inputs)
        if isinstance(key, int):
            if key not in self.by_batch:
                self.by_batch[key] = self._run(inputs)
            return self.by_batch[key]
        if self.filled is not None and bool(self.filled[key].all()):
            return {k: v[key.to(v.device)] for k, v in self.by_sample.items()}
        outs = self._run(inputs)
        if any(v.dim() == 0 or v.shape[0] != len(key) for v in outs.values()):
            self.cache = False  # outputs without a batch dimension cannot be cached per sample
            return outs
        if self.filled is None:
            self.filled = torch.zeros(n, dtype=torch.bool)
            self.by_sample = {k: v.new_empty((n, *v.shape[1:])) for k, v in outs.items()}
        for k, v in outs.items():
            self.by_sample[k][key.to(v.device)] = v
        self.filled[key] = True
        return outs


class Validator:
    """One number per evaluation, higher is better except for 'loss'."""

    def __init__(self, metric: str | Callable[[nn.Module], Any], source: Source | None,
                 teacher: TeacherOutputs | None, kind: str, T: float, alpha: float):
        self.metric, self.source, self.teacher, self.kind, self.T, self.alpha = metric, source, teacher, kind, T, alpha
        self.name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
        if self.name == "<lambda>":
            self.name = "metric"
        self.higher_is_better = metric != "loss"

    def better(self, value: float, best: float, min_delta: float) -> bool:
        return value > best + min_delta if self.higher_is_better else value < best - min_delta

    def __call__(self, model: nn.Module) -> float:
        with eval_mode(model), torch.no_grad():
            if callable(self.metric):
                return _number(self.metric(model))
            return self._on_data(model)

    def _on_data(self, model: nn.Module) -> float:
        device, total, count = model_device(model), 0.0, 0
        n = len(self.source.X) if self.source.X is not None else None
        for key, inputs, targets in self.source.epoch(None):
            s = primary_output(call(model, to_device(inputs, device, "The validation data")))
            t = self.teacher.outputs(key, inputs, n)[OUT]
            rows = s.reshape(-1, s.shape[-1])
            if self.metric == "accuracy":
                y = to_device(targets, device, "The validation data").reshape(-1)
                total += float((rows.argmax(-1) == y).sum())
                count += y.numel()
            elif self.metric == "agreement":
                total += float((rows.argmax(-1) == t.reshape(-1, t.shape[-1]).argmax(-1)).sum())
                count += rows.shape[0]
            elif self.metric == "cosine":
                total += float(F.cosine_similarity(rows.double(), t.reshape(rows.shape).double(), dim=-1).sum())
                count += rows.shape[0]
            else:
                y = None if targets is None else to_device(targets, device, "The validation data")
                total += float(output_loss(self.kind, s, t, y, T=self.T, alpha=self.alpha)) * rows.shape[0]
                count += rows.shape[0]
        return total / count


def _number(value: Any) -> float:
    if isinstance(value, dict):
        if "accuracy" in value:
            return float(value["accuracy"])
        if len(value) == 1:
            return float(next(iter(value.values())))
        raise InvalidConfigError(f"The metric returned a dict with keys {sorted(value)}; return one number "
                                 f"(higher is better) or a dict with an 'accuracy' key.")
    return float(value)
