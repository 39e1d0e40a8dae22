"""Helpers shared by the method modules."""

from __future__ import annotations

from torch import nn

from ..core.metrics import count_nonzero, count_params, model_bytes
from ..core.report import LayerRow


def describe_module(module: nn.Module) -> str:
    if isinstance(module, nn.Sequential):
        return "Sequential(" + ", ".join(type(m).__name__ for m in module) + ")"
    return type(module).__name__


def layer_row(name: str, method: str, old: nn.Module, new: nn.Module | None, *,
              nonzeros_before: int | None = None, **extra) -> LayerRow:
    """A report row comparing a layer before and after (``new=None`` for a skipped layer).

    ``nonzeros_before``: the old layer's non-zero count when the caller has it already (e.g. cached
    per weight version), since counting is the costliest part of a row.
    """
    after = old if new is None else new
    return LayerRow(
        name=name,
        method=method,
        layer_type=describe_module(old),
        new_type=describe_module(after),
        params_before=count_params(old),
        params_after=count_params(after),
        nonzeros_before=count_nonzero(old) if nonzeros_before is None else nonzeros_before,
        nonzeros_after=count_nonzero(after),
        bytes_before=model_bytes(old),
        bytes_after=model_bytes(after),
        **extra,
    )
