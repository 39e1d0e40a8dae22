"""What an apply function is given besides the model and its layers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["Context"]


@dataclasses.dataclass
class Context:
    """What a method may use besides the model: a seeded generator and optional data."""

    seed: int
    generator: torch.Generator
    data: Any = None
    example_inputs: Any = None
    step_index: int = 0
    # the model as it was before the plan ran (built on first call): a teacher for recovery procedures
    original: Callable[[], nn.Module] | None = None
    # the step's selector: a method may treat layers the user named exactly differently (e.g. keep_head)
    selector: Any = None
    # functions the caller handed over by name (QAT's training loop): a plan names them, never imports them
    functions: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    # rebuilding a saved model (load): the file holds the trained values, so training is not run again
    replay: bool = False
    # the method may return a replacement for the whole model (name ""): compress() on a copy, not in place
    whole_model_swap: bool = False
    # set for methods registered with streams=True: sink(name, new) swaps a layer in as soon as it is made,
    # so a run holds one layer's work at a time (see methods._common.hand_over)
    sink: Callable[[str, nn.Module], None] | None = None
