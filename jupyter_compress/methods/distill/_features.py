"""Intermediate-feature matching (FitNets, Romero et al. 2015): forward hooks record a teacher layer's and a
student layer's outputs; a learned projection (a Linear on the last dimension, or a 1x1 Conv2d on the
channels of a 4-D map) maps the student's width onto the teacher's when they differ.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...core.metrics import primary_output
from ...errors import InvalidConfigError, SelectorError

__all__ = ["feature_pairs", "Tap", "make_projection"]


def feature_pairs(features: Any, teacher: nn.Module, student: nn.Module) -> list[tuple[str, str]]:
    """``[(teacher layer, student layer)]`` from a dict, a list of pairs or a list of names shared by both."""
    if not features:
        return []
    if isinstance(features, dict):
        pairs = list(features.items())
    else:
        pairs = [(f, f) if isinstance(f, str) else tuple(f) for f in features]
    for model, side, index in ((teacher, "teacher", 0), (student, "student", 1)):
        names = [n for n, _ in model.named_modules() if n]
        for pair in pairs:
            if pair[index] not in names:
                close = difflib.get_close_matches(str(pair[index]), names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SelectorError(f"The {side} has no layer named {pair[index]!r} (features).{hint}")
    return [(str(t), str(s)) for t, s in pairs]


class Tap:
    """Records the (primary) outputs of named layers while active; ``with tap: model(x)``."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.model, self.names, self.out = model, names, {}
        self._hooks: list[Any] = []

    def __enter__(self) -> dict[str, torch.Tensor]:
        self.out = {}
        for name in self.names:
            module = self.model.get_submodule(name)
            self._hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: self.out.__setitem__(name, primary_output(o))))
        return self.out

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def make_projection(student: torch.Tensor, teacher: torch.Tensor, pair: tuple[str, str]) -> nn.Module:
    """Identity for equal shapes; a learned map of the student's width onto the teacher's otherwise."""
    s, t = tuple(student.shape), tuple(teacher.shape)
    if s == t:
        return nn.Identity()
    if len(s) == 4 and len(t) == 4 and s[0] == t[0] and s[2:] == t[2:]:
        return nn.Conv2d(s[1], t[1], 1, bias=False)
    if len(s) == len(t) and s[:-1] == t[:-1]:
        return nn.Linear(s[-1], t[-1], bias=False)
    raise InvalidConfigError(
        f"Cannot match student layer {pair[1]!r} (output {s}) to teacher layer {pair[0]!r} (output {t}): "
        f"only the channel / last dimension may differ; pick layers whose other dimensions agree.")


def parameters(projections: dict[str, nn.Module]) -> Iterator[nn.Parameter]:
    for module in projections.values():
        yield from module.parameters()
