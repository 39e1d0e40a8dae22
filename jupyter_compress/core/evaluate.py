"""One evaluator for the baseline and every compressed model: task, fidelity, speed, memory, size.

    >>> ev = Evaluator(data=(X_test, y_test), reference=model, example_inputs=X_test[:32])
    >>> small, report = compress(model, plan, eval=ev)          # the report gets every metric
    >>> attach_thresholds(report, Thresholds(max_drop=0.01))      # and the limits' status

An ``Evaluator`` caches its result per model and weight version, so the baseline is measured once
however many plans are compared against it.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from .data import iter_batches
from .metrics import call_model, count_nonzero, count_params, eval_mode, primary_output
from .metrics_size import disk_sizes
from .metrics_speed import peak_memory_bytes, speed_metrics
from .metrics_task import classification_metrics, fidelity_metrics, regression_metrics
from .report import Report
from .thresholds import Thresholds, check_thresholds

__all__ = ["Evaluator", "evaluate", "predict", "task_metrics", "attach_thresholds"]


def predict(model: nn.Module, data: Any, *, batch_size: int = 256,
            max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's primary outputs over ``data`` (concatenated) and the targets (None if unlabelled)."""
    outs, targets = [], []
    with eval_mode(model), torch.inference_mode():
        for inputs, y in iter_batches(data, batch_size=batch_size, max_batches=max_batches):
            out = primary_output(call_model(model, inputs))
            if out is None:
                raise TypeError(f"The model returned no tensor for a batch of {type(inputs).__name__}.")
            outs.append(out.float().cpu())
            if y is not None:
                targets.append(torch.as_tensor(y).cpu())
    return torch.cat(outs), (torch.cat(targets) if targets else None)


def task_metrics(outputs: torch.Tensor, targets: torch.Tensor, task: str = "auto") -> dict[str, Any]:
    """Classification metrics when the targets are integer labels and outputs have one score per
    class (``task="auto"``), otherwise regression metrics; ``task`` may force either."""
    if task == "auto":
        integer = not (targets.is_floating_point() or targets.is_complex())
        task = "classification" if integer and outputs.dim() == 2 and outputs.shape[1] > 1 else "regression"
    if task == "classification":
        n = outputs.shape[1] if outputs.dim() == 2 else None
        return classification_metrics(targets, outputs.argmax(-1), num_classes=n)
    if task == "regression":
        return regression_metrics(targets, outputs)
    raise ValueError(f"task must be 'auto', 'classification' or 'regression'; got {task!r}.")


def _weights_key(model: nn.Module) -> tuple:
    # data pointer and version counter of every tensor: any in-place or swapped change alters it
    return tuple((n, t.data_ptr(), t._version) for n, t in model.state_dict(keep_vars=True).items()
                 if isinstance(t, torch.Tensor))


class Evaluator:
    """A callable ``model -> dict`` of metrics, usable as ``compress(..., eval=Evaluator(...))``.

    - ``data``: ``(X, y)``, ``X`` or batches; labelled data gives task metrics (``task`` chooses);
    - ``reference``: the original model; its outputs on ``data`` give fidelity metrics (top-1
      agreement, cosine, KL, SQNR), with or without labels;
    - ``example_inputs``: one batch for latency / throughput (``batch_sizes`` adds more sizes) and,
      with ``memory=True``, peak memory of a pass;
    - ``disk=True``: bytes on disk raw, sparse and through zlib / LZ4 / Zstandard;
    - ``user_eval``: the user's own ``eval(model) -> number | dict``, merged in.
    """

    def __init__(self, data: Any = None, *, reference: nn.Module | None = None, task: str = "auto",
                 example_inputs: Any = None, batch_sizes: tuple[int, ...] | None = None, memory: bool = False,
                 disk: bool = False, user_eval: Any = None, max_batches: int | None = None,
                 latency_max_time_s: float = 2.0):
        self.data, self.reference, self.task = data, reference, task
        self.example_inputs, self.batch_sizes, self.memory, self.disk = example_inputs, batch_sizes, memory, disk
        self.user_eval, self.max_batches, self.latency_max_time_s = user_eval, max_batches, latency_max_time_s
        self._cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict]] = weakref.WeakKeyDictionary()
        self._reference_out: tuple[tuple, torch.Tensor] | None = None

    def _reference_outputs(self) -> torch.Tensor:
        key = _weights_key(self.reference)
        if self._reference_out is None or self._reference_out[0] != key:
            self._reference_out = (key, predict(self.reference, self.data, max_batches=self.max_batches)[0])
        return self._reference_out[1]

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        key = _weights_key(model)
        cached = self._cache.get(model)
        if cached is not None and cached[0] == key:
            return dict(cached[1])
        out: dict[str, Any] = {}
        if self.data is not None:
            outputs, targets = predict(model, self.data, max_batches=self.max_batches)
            if targets is not None:
                out.update(task_metrics(outputs, targets, self.task))
            if self.reference is not None:
                out.update(fidelity_metrics(self._reference_outputs(), outputs))
        if self.user_eval is not None:
            value = self.user_eval(model)
            out.update(value if isinstance(value, dict) else {"metric": float(value)})
        if self.example_inputs is not None:
            out.update(speed_metrics(model, self.example_inputs, batch_sizes=self.batch_sizes,
                                     max_time_s=self.latency_max_time_s))
            if self.memory:
                out["peak_memory_bytes"] = peak_memory_bytes(model, self.example_inputs)
        out["params"], out["nonzeros"] = count_params(model), count_nonzero(model)
        if self.disk:
            sizes = disk_sizes(model)
            out["disk_raw_bytes"], out["disk_sparse_bytes"] = sizes["raw_bytes"], sizes["sparse_bytes"]
            for c in sizes["codecs"]:
                out[f"disk_{c['codec']}_bytes"] = c["compressed_bytes"]
            out["codecs"] = sizes["codecs"]
        self._cache[model] = (key, dict(out))
        return out


def evaluate(model: nn.Module, data: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Every metric :class:`Evaluator` ``(data, **kwargs)`` gives for ``model``, once."""
    return Evaluator(data, **kwargs)(model)


def attach_thresholds(report: Report, thresholds: Thresholds) -> Report:
    """Check ``report`` against ``thresholds``; the result shows in its summary (and ``report.passed``)."""
    report.thresholds = check_thresholds(thresholds, metrics_before=report.metrics_before,
                                         metrics_after=report.metrics_after, bytes_after=report.model_bytes_after)
    return report
