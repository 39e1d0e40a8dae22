"""Measuring one candidate plan: compress a copy quietly, score it, count what it saves.

The score is the user's ``eval(model)`` (a number, or the chosen key of a dict), or, without an eval,
the fidelity of the compressed model on probe inputs: the mean cosine similarity of its primary output
with the original's (1.0 = identical). ``drop`` is always "how much worse than the original", so it is
positive when the compressed model is worse whichever way the metric points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..core.apply import compress
from ..core.data import iter_batches
from ..core.metrics import call_model, eval_mode, primary_output
from ..core.plan import Plan
from ..errors import CompressError

__all__ = ["Scorer", "compress_quietly", "probe_batches", "storage_bytes"]


def compress_quietly(model: nn.Module, plan: Plan, *, example_inputs: Any = None, data: Any = None):
    """``(new_model, report)`` like ``compress`` but with no eval and no latency timing (a sweep measures
    what it needs itself; timing every candidate would cost seconds each)."""
    return compress(model, plan, example_inputs=example_inputs, data=data, measure=False)


def storage_bytes(report) -> int:
    """Bytes of the compressed model when pruned layers are stored in their sparse encoding."""
    saved = sum(r.bytes_after - r.sparse_bytes for r in report.compressed_rows if r.sparse_bytes is not None)
    return report.model_bytes_after - max(saved, 0)


def _slice(inputs: Any, n: int) -> Any:
    if isinstance(inputs, Mapping):
        return {k: _slice(v, n) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_slice(v, n) for v in inputs)
    return inputs[:n] if isinstance(inputs, torch.Tensor) and inputs.dim() > 0 else inputs


def _count(inputs: Any) -> int:
    first = primary_output(inputs)
    return int(first.shape[0]) if first is not None and first.dim() > 0 else 1


def probe_batches(data: Any, example_inputs: Any, subsample: int | None) -> list[Any]:
    """Input batches used for fidelity: ``data`` (its inputs; targets dropped) else the example inputs,
    cut to the first ``subsample`` examples when given."""
    if data is None and example_inputs is None:
        return []
    source = [x for x, _ in iter_batches(data)] if data is not None else [example_inputs]
    out, total = [], 0
    for batch in source:
        n = _count(batch)
        if subsample is not None and total + n > subsample:
            if subsample - total > 0:
                out.append(_slice(batch, subsample - total))
            break
        out.append(batch)
        total += n
    return out


def _outputs(model: nn.Module, batches: list[Any]) -> list[torch.Tensor]:
    with eval_mode(model), torch.inference_mode():
        return [primary_output(call_model(model, b)).detach().float() for b in batches]


@dataclasses.dataclass
class Scorer:
    """Scores models: ``eval`` (key ``metric``; ``higher_is_better``) or fidelity on ``probes``."""

    eval: Callable[[nn.Module], Any] | None
    probes: list[Any]
    metric: str | None = None
    higher_is_better: bool = True
    reference: list[torch.Tensor] | None = None

    @property
    def name(self) -> str:
        return (self.metric or "metric") if self.eval is not None else "fidelity (output cosine)"

    def prepare(self, model: nn.Module) -> float:
        """Reference outputs (fidelity) and the original model's score."""
        if self.eval is None:
            if not self.probes:
                raise CompressError("Nothing to measure with: pass eval=..., data=... or example_inputs=....")
            self.reference = _outputs(model, self.probes)
        return self.score(model)

    def score(self, model: nn.Module) -> float:
        if self.eval is not None:
            value = self.eval(model)
            if isinstance(value, dict):
                numeric = [k for k, v in value.items() if isinstance(v, (int, float))]
                key = self.metric or (numeric[0] if numeric else None)
                if key not in value:
                    raise CompressError(f"The eval function returned no {key!r}; it returned keys {sorted(value)}. "
                                        f"Pass metric='one of them'.")
                self.metric = key
                value = value[key]
            return float(value)
        outs = _outputs(model, self.probes)
        sims = [nn.functional.cosine_similarity(a.double().reshape(len(a), -1), b.double().reshape(len(b), -1), dim=-1)
                for a, b in zip(self.reference, outs)]
        return float(torch.cat(sims).mean())

    def drop(self, baseline: float, value: float) -> float:
        return baseline - value if (self.higher_is_better or self.eval is None) else value - baseline
