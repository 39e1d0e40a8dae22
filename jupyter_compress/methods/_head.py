"""The model's output layer (a classifier head), which methods leave alone by default.

A classifier's head is small (10 outputs from 512 features) and its rank is at most its output count, so
factoring it saves few parameters and costs the most accuracy: a rank-4 SVD of a 10-class head turns a
0.99 classifier into a 0.70 one. Structured pruning keeps it (it cannot remove classes), and so do the
decompositions (SVD, Tucker-2, CP, TT) unless ``keep_head=False``.

The rule (``keep_head=True``): the head is the last Linear / convolution that a forward pass runs (when the
method traced one, as structured pruning does) or else the last one registered in the model. The
decompositions keep it when it narrows (fewer outputs than inputs per output: a classifier or regressor
head, not a vocabulary projection; a convolution counts channels) and either the method has other selected layers to act on, or the head
is tiny (at most 1/8 as many outputs as inputs: a rank of at most its few outputs, which no truncation
helps). So a model whose only selected layer is a moderately narrow one (64 -> 32) still has it factored,
while a 512 -> 10 classifier head is left alone even when it is the model's only Linear (the report says so).
A head the step's selector names exactly (``layers=["head"]``, ``--layers head``: what per-layer sensitivity
and the accuracy-budget search do) is compressed as asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ._common import LINEAR_TYPES, layer_row, linear_view, submodule

__all__ = ["HEAD_TYPES", "output_layer", "split_head", "KEEP_HEAD_HELP"]

TINY = 8  # a head with outputs * TINY <= inputs is tiny

HEAD_TYPES: tuple[type, ...] = (*LINEAR_TYPES, nn.Conv1d, nn.Conv2d, nn.Conv3d)

KEEP_HEAD_HELP = ("leave the model's output layer (classifier head) as it is when it is narrow (fewer outputs "
                  "than inputs) and other layers are selected; False factors it too")


def output_layer(model: nn.Module, order: list[str] | None = None,
                 modules: dict[str, nn.Module] | None = None) -> str | None:
    """The name of ``model``'s output layer: the last of ``order`` (names in forward-pass order, when the
    caller traced them), else the last Linear / convolution registered; None when there is none.
    ``modules``: ``dict(model.named_modules())`` when the caller has it (saves a walk over the model)."""
    if order:
        return order[-1]
    named = modules.items() if modules is not None else model.named_modules()
    names = [n for n, m in named if isinstance(m, HEAD_TYPES)]
    return names[-1] if names else None


def _shape(module: nn.Module) -> tuple[int, int] | None:
    """(outputs, inputs) of a Linear-like layer, (output channels, input channels per group) of a convolution
    (the modes a decomposition truncates; the kernel's spatial size is not one)."""
    if isinstance(module, LINEAR_TYPES):
        view = linear_view(module)
        return view.out_features, view.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module.out_channels, module.in_channels // module.groups
    return None


def split_head(model: nn.Module, names: list[str], method: str, keep: bool, ctx: Any = None,
               skip: Callable[[str], str | None] | None = None, modules: dict[str, nn.Module] | None = None):
    """``(names to process, skipped rows, notes)``: ``names`` without the output layer when the rule above
    keeps it, with a skipped row and a note that say so; ``names`` unchanged otherwise. ``ctx``: the
    method's context, whose ``selector`` may name the head exactly (then it is not kept). ``skip(name)``: the
    method's reason to leave a layer alone whatever the rank (a fused parent...), or None: layers with one
    are not "other layers the method can act on". ``modules``: ``dict(model.named_modules())`` when the
    caller has it (one walk over the model shared with the caller's own look-ups)."""
    head = output_layer(model, modules=modules) if keep else None
    if head is None or head not in names or head in getattr(getattr(ctx, "selector", None), "layers", ()):
        return list(names), [], []
    module = submodule(model, head, modules)
    shape = _shape(module)
    others = [n for n in names if n != head and (skip is None or not skip(n))]
    if shape is None or shape[0] >= shape[1] or (not others and shape[0] * TINY > shape[1]):
        return list(names), [], []
    out, fan_in = shape
    reason = (f"output layer ({out} outputs from {fan_in} inputs): kept by default, since factoring a narrow "
              f"head saves little and costs the most accuracy; keep_head=False includes it")
    note = (f"{method}: the output layer {head!r} is kept as it is (keep_head=True by default); pass "
            f"keep_head=False to compress it too.")
    return [n for n in names if n != head], [layer_row(head, method, module, None, skipped=reason)], [note]
