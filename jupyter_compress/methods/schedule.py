"""Gradual pruning: reach a target in k steps, fine-tuning between steps, and a preview.

Pruning in small steps with training in between recovers better than one shot (Zhu & Gupta
2017, "To prune, or not to prune"); their cubic schedule removes much early, when the network
has most redundancy, and little near the end.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.apply import compress_, forget_undo
from ..core.metrics import count_nonzero, count_params, model_bytes
from ..core.plan import Plan, Step
from ..core.report import Report
from ..errors import InvalidConfigError
from ._common import layer_row
from .prune import PruneConfig
from .structured import StructuredPruneConfig

__all__ = ["prune_gradually", "schedule_amounts"]


def schedule_amounts(target: float, steps: int, schedule: str = "cubic") -> list[float]:
    """Cumulative fraction removed after each of ``steps`` steps, ending at ``target``.

    linear: ``target * i / k``; cubic (Zhu & Gupta): ``target * (1 - (1 - i / k) ** 3)``.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InvalidConfigError(f"steps must be an int >= 1. Got {steps!r} instead.")
    if schedule not in ("linear", "cubic"):
        raise InvalidConfigError(f"schedule must be 'linear' or 'cubic'. Got {schedule!r} instead.")
    if schedule == "linear":
        return [target * i / steps for i in range(1, steps + 1)]
    return [target * (1 - (1 - i / steps) ** 3) for i in range(1, steps + 1)]


def _relative(cumulative: list[float]) -> list[float]:
    """Structured steps act on what is left: remove (a_i - a_{i-1}) / (1 - a_{i-1}) of the current units."""
    out, prev = [], 0.0
    for a in cumulative:
        out.append((a - prev) / (1 - prev))
        prev = a
    return out


def prune_gradually(
    model: nn.Module,
    config: PruneConfig | StructuredPruneConfig,
    *,
    steps: int = 3,
    schedule: str = "cubic",
    fine_tune: Callable[[nn.Module, int], Any] | None = None,
    layers: Any = None,
    exclude: Any = None,
    eval: Callable[[nn.Module], Any] | None = None,
    example_inputs: Any = None,
    data: Any = None,
    seed: int = 0,
) -> tuple[nn.Module, Report]:
    """Prune a copy of ``model`` to ``config.amount`` in ``steps`` steps, calling ``fine_tune(model, step)``
    after each step (in place, on the copy). ``model`` is never changed.

    Unstructured pruning keeps its zeros through fine-tuning (the mask is re-applied after each
    call). The returned report's plan holds the k steps actually run, so the architecture can be
    rebuilt by replaying it.
    """
    if not isinstance(config, (PruneConfig, StructuredPruneConfig)):
        raise InvalidConfigError(f"prune_gradually takes a PruneConfig or StructuredPruneConfig; got "
                                 f"{type(config).__name__}.")
    cumulative = schedule_amounts(config.amount, steps, schedule)
    amounts = _relative(cumulative) if isinstance(config, StructuredPruneConfig) else cumulative
    work = copy.deepcopy(model)
    originals = dict(model.named_modules())
    metrics_before = {} if eval is None else dict(eval(model))
    start = time.perf_counter()
    plan_steps, notes, history = [], [], []
    for index, amount in enumerate(amounts):
        step_config = dataclasses.replace(config, amount=min(amount, 0.999))
        plan_steps.append(Step(step_config, _selector(layers, exclude)))
        report = compress_(work, Plan([plan_steps[-1]], seed=seed), example_inputs=example_inputs, data=data)
        forget_undo(work)
        notes += [n for n in report.notes if n not in notes]
        if fine_tune is not None:
            masks = {n: m.weight != 0 for n, m in work.named_modules()
                     if isinstance(config, PruneConfig) and isinstance(getattr(m, "weight", None), nn.Parameter)}
            with torch.enable_grad():
                fine_tune(work, index)
            with torch.no_grad():
                for n, keep in masks.items():
                    # masked_fill_, not mul_: a multiplication leaves -0.0 for negative weights, which a compact
                    # artifact must store as values (only +0.0 is stored as nothing)
                    work.get_submodule(n).weight.masked_fill_(~keep, 0)
            work.eval()
        history.append({"step": index + 1, "cumulative_amount": cumulative[index],
                        **({} if eval is None else dict(eval(work)))})
    rows = [layer_row(n, config.method, originals[n], m) for n, m in work.named_modules()
            if n in originals and n and not list(m.children()) and _changed(originals[n], m)]
    final = work
    notes.append(f"Pruned gradually in {steps} {schedule} steps to {config.amount:g} "
                 f"({', '.join(f'{a:.3f}' for a in cumulative)} cumulative)"
                 + (", fine-tuning after each step." if fine_tune else ", without fine-tuning."))
    report = Report(
        rows=rows, plan=Plan(plan_steps, seed=seed).to_dict(),
        model_params_before=count_params(model), model_params_after=count_params(final),
        model_nonzeros_before=count_nonzero(model), model_nonzeros_after=count_nonzero(final),
        model_bytes_before=model_bytes(model), model_bytes_after=model_bytes(final),
        metrics_before=metrics_before, metrics_after={} if eval is None else dict(eval(final)),
        timings={"compress s": time.perf_counter() - start}, notes=notes, history=history,
    )
    return final, report


def _selector(layers, exclude):
    from ..core.selection import Selector

    return Selector(layers=layers, exclude=exclude) if (layers or exclude) else Selector()


def _changed(old: nn.Module, new: nn.Module) -> bool:
    a, b = old.state_dict(), new.state_dict()
    return a.keys() != b.keys() or any(a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a)
