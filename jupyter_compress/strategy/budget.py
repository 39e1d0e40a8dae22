"""The candidates ``compare`` measures at a matched size budget, read from the methods' declarations.

``budget`` is the fraction of the targeted layers' parameters to keep (0.5 = half). Each method that
declares ``compare = (label, fn)`` joins: ``fn(model, budget, example_inputs=, data=, labelled=)`` gives
its configs at that budget (a list, or a zero-argument callable that finds them when the candidate is
measured, e.g. a search for the amount that meets the budget), an empty list when the model has nothing
it acts on, or a string saying why it cannot run here. Methods declaring the same label form one
candidate (SVD for the Linear layers and Tucker for the convolutions make one low-rank row).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from ..core.registry import Method, methods_in_order

__all__ = ["Candidate", "default_candidates"]

# How each requirement reads in the "needs data?" column, most demanding first.
_NEEDS_TEXT = (("train", "yes: a training function"), ("labels", "yes: labelled data"), ("data", "yes: data"), ("calibration", "yes: calibration data"),
               ("example_inputs", "example inputs"))
_MISSING_TEXT = {"example_inputs": "needs example_inputs (or data) to run the model",
                 "data": "needs data", "calibration": "needs calibration data", "labels": "needs labelled data (data=(X, y))",
                 "train": "needs a training function: measure it with an explicit run"}


@dataclasses.dataclass
class Candidate:
    """One row of a comparison: the configs of one or more methods sharing a label."""

    label: str
    family: str
    methods: tuple[str, ...]
    plan: Callable[[], list[Any]] | list[Any]  # configs; a callable is resolved lazily (searches)
    requires: frozenset[str] = frozenset()  # what the candidate needs (the methods', plus labels if asked)
    skip: str | None = None  # why the candidate cannot run on this model / data
    stages: frozenset[str] = frozenset()  # the declared stages of its methods
    trains: bool = False  # a whole-model training run (not a per-layer change)

    @property
    def needs_data(self) -> bool:
        return bool(self.requires)

    @property
    def needs_text(self) -> str:
        return next((text for key, text in _NEEDS_TEXT if key in self.requires), "no")


def _answer(method: Method, model: nn.Module, budget: float, labelled: bool, given: dict[str, Any]) -> Any:
    got = method.compare[1](model, budget, labelled=labelled, **given)
    return got if isinstance(got, str) or callable(got) else list(got)


def _group(label: str, methods: list[Method], model: nn.Module, budget: float, *, example_inputs: Any, data: Any,
           labelled: bool) -> Candidate:
    given = {"example_inputs": example_inputs, "data": data}
    requires = frozenset().union(*(m.requires for m in methods))
    answers = {}
    for m in methods:  # asked with and without labels (answers are cheap: searches are left lazy)
        with_labels, without = _answer(m, model, budget, True, given), _answer(m, model, budget, False, given)
        if isinstance(without, str) and not isinstance(with_labels, str):
            requires |= {"labels"}  # it runs with labels and refuses without them
        answers[m.name] = with_labels if labelled else without
    acting = [m for m in methods if not isinstance(answers[m.name], str) and (callable(answers[m.name])
                                                                           or answers[m.name])]
    names = tuple(m.name for m in (acting or methods))
    shown = label
    if len(methods) > 1 or label == methods[0].family:  # a family or a group: say which method(s) ran
        shown = f"{label} ({' + '.join(names)})"
    have = ({"example_inputs"} if example_inputs is not None or data is not None else set()) | (
        {"data", "calibration"} if data is not None else set()) | ({"labels"} if labelled else set())
    skip = None
    if not acting:
        reasons = [a for a in answers.values() if isinstance(a, str)]
        kinds = sorted({t.__name__ for m in methods for t in m.supported})
        skip = reasons[0] if reasons else f"no layer it acts on ({', '.join(kinds)}) in this model"
    elif requires - have:
        skip = _MISSING_TEXT.get(sorted(requires - have)[0], "needs " + ", ".join(sorted(requires - have)))
    lazy = [answers[m.name] for m in acting]

    def plan() -> list[Any]:
        return [c for a in lazy for c in (a() if callable(a) else a)]

    return Candidate(shown, methods[0].family, names, plan if any(callable(a) for a in lazy) else plan(),
                     requires, skip, frozenset(m.stage for m in methods),
                     any(m.whole_model and m.stage == "recovery" for m in methods))


def default_candidates(model: nn.Module, budget: float, *, example_inputs: Any = None, data: Any = None,
                       labelled: bool = False) -> list[Candidate]:
    """One candidate per declared label with its configs at ``budget``; candidates that cannot run here
    carry ``skip`` with the reason. Families come in step order (a family's place is its earliest stage),
    and within a family the candidates needing least first."""
    groups: dict[str, list[Method]] = {}
    first_stage: dict[str, tuple] = {}
    for method in methods_in_order():
        if method.compare is not None:
            groups.setdefault(method.compare[0], []).append(method)
            first_stage.setdefault(method.family, method.stage_index)

    def order(item: tuple[str, list[Method]]) -> tuple:
        methods = item[1]
        return first_stage[methods[0].family], min(len(m.requires) for m in methods), methods[0].stage_index

    return [_group(label, methods, model, budget, example_inputs=example_inputs, data=data, labelled=labelled)
            for label, methods in sorted(groups.items(), key=order)]
