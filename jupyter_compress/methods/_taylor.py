"""First-order Taylor importance |w * dL/dw| from a few batches of the user's data.

Gradients are taken with ``torch.func.functional_call`` on detached copies of the weights, so the
user's model gets no ``.grad`` attributes, no BatchNorm statistic updates (eval mode) and works
whatever the global grad mode or ``requires_grad`` flags are.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.data import iter_batches
from ..core.metrics import call_model, eval_mode, primary_output
from ..errors import InvalidConfigError

__all__ = ["accumulate_grads", "taylor_scores"]


def _loss(output: torch.Tensor, targets, reference: torch.Tensor) -> torch.Tensor:
    if targets is not None and targets.dtype in (torch.int64, torch.int32) and output.dim() == 2:
        return nn.functional.cross_entropy(output, targets.long())
    if targets is not None:
        return nn.functional.mse_loss(output, targets.to(output.dtype).view_as(output))
    if output.dim() == 2 and output.shape[1] > 1:
        # unlabelled classifier: the dense model's own predictions are the targets (a Fisher-style proxy)
        return nn.functional.cross_entropy(output, reference.argmax(dim=1))
    raise InvalidConfigError("Taylor importance needs labelled data (inputs, targets) for a model that is not a "
                             "classifier; pass data=(X, y) or use criterion='magnitude'.")


def taylor_scores(model: nn.Module, names: list[str], data, *, max_batches: int = 4) -> dict[str, torch.Tensor]:
    """``{name: sum over batches of |w * grad w|}`` for the ``weight`` of each named module."""
    weights = {f"{n}.weight": model.get_submodule(n).weight.detach() for n in names}
    scores = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in zip(names, weights.values())}
    with eval_mode(model), torch.enable_grad():
        for inputs, targets in iter_batches(data, max_batches=max_batches):
            leaves = {k: w.clone().requires_grad_(True) for k, w in weights.items()}
            args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
            output = primary_output(torch.func.functional_call(model, leaves, tuple(args)))
            with torch.no_grad():
                reference = output.detach()
            grads = torch.autograd.grad(_loss(output, targets, reference), list(leaves.values()),
                                        allow_unused=True)
            for name, key, grad in zip(names, leaves, grads):
                if grad is not None:
                    scores[name] += (weights[key] * grad).abs().float()
    return scores


def accumulate_grads(model: nn.Module, data, *, max_batches: int = 4) -> None:
    """Backpropagate the data loss into ``.grad`` of ``model``'s parameters (a working copy, never the
    user's model), in eval mode, whatever the global grad mode and ``requires_grad`` flags were."""
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    with eval_mode(model), torch.enable_grad():
        for inputs, targets in iter_batches(data, max_batches=max_batches):
            output = primary_output(call_model(model, inputs))
            _loss(output, targets, output.detach()).backward()
