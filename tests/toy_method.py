"""A method written outside the package, as a user or a new contributor would: one module holding a config, an
apply function and one ``register_method`` call with its declarations. Nothing else in jupyter_compress is
edited for it; ``tests/test_toy_method.py`` finds it in every surface.

The toy shrinks the weights of each selected Linear by ``(1 - amount)``: a real change of the weights that keeps
every shape, so the contract checks (original untouched, bit-exact revert, replay identical) apply to it.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from jupyter_compress.core.config import Interval, MethodConfig, param
from jupyter_compress.core.metrics import relative_error
from jupyter_compress.core.registry import MagicOption, MethodResult, register_method, unregister_method
from jupyter_compress.core.textvalues import parse_amount
from jupyter_compress.methods._common import layer_row

NAME = "toy.shrink"
FLAG = "--shrink"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShrinkConfig(MethodConfig):
    """Scale each Linear's weight by (1 - amount)."""

    amount: float = param(0.5, help="fraction the weights shrink by", check=Interval(0.0, 1.0, "[)"))


def apply_shrink(model: nn.Module, names: list[str], config: ShrinkConfig, ctx) -> MethodResult:
    replacements, rows = {}, []
    for name in names:
        old = model.get_submodule(name)
        new = copy.deepcopy(old)  # apply functions never change the model they are given
        with torch.no_grad():
            new.weight.mul_(1 - config.amount)
        replacements[name] = new
        rows.append(layer_row(name, NAME, old, new, error=relative_error(old.weight, new.weight)))
    return MethodResult(replacements, rows)


def register() -> None:
    register_method(NAME, ShrinkConfig, supported=(nn.Linear,), family="toys", help="Shrink Linear weights (a toy).",
                    stage="sparsity", order=5, dial="amount", probe={"amount": 0.25},
                    options=(MagicOption(FLAG, "AMOUNT", parse_amount, help="shrink the weights (a toy)"),),
                    compare=("shrink (toy)", lambda model, budget, **_: [ShrinkConfig(amount=1 - budget)]))(
        apply_shrink)


def unregister() -> None:
    unregister_method(NAME)
