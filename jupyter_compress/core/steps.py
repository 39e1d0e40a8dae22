"""The plan's steps run on a model: each method builds replacements, which are swapped in and recorded.

Every swap is recorded (in ``swaps``) before it is made, so whoever runs the steps (core/apply.py) can roll
the model back to the very same modules after an error or an interrupt at any point.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import StoppedError
from . import undo
from .context import Context
from .metrics import model_bytes, single_thread
from .modules import swap_submodule
from .plan import Plan
from .registry import get_method
from .ties import keep_ties, tied_groups

__all__ = ["run_steps", "rollback"]


def _swap_recorded(model: nn.Module, name: str, new: nn.Module, swaps: list[tuple[str, nn.Module]]) -> None:
    """Swap ``new`` in, recording the original *before* the swap: an interrupt between the two can then only
    leave a record of a swap not yet made (undoing it is a no-op), never a swap without its record."""
    swaps.append((name, model.get_submodule(name)))
    swap_submodule(model, name, new)


def rollback(model: nn.Module, swaps: list[tuple[str, nn.Module | None]]) -> None:
    """Undo ``swaps`` newest first, putting back the very same modules."""
    for name, old in reversed(swaps):
        if old is None:  # a copy's layer, dropped when it was replaced: the copy is discarded, not rolled back
            continue
        undo.restore(old)  # an undo record kept on disk: its values back into the same tensors first
        swap_submodule(model, name, old)


def _mark_untouched(rows: list, names: list[str]) -> None:
    for r in rows:
        if r.name in names:
            r.skipped = "its weight is tied to another layer's; compressing it would untie them"
            r.new_type, r.error = r.layer_type, None
            r.params_after, r.nonzeros_after, r.bytes_after = r.params_before, r.nonzeros_before, r.bytes_before
            r.sparse_bytes = r.sparse_encoding = None


def _original_of(model: nn.Module, reference: nn.Module, swaps: list[tuple[str, nn.Module]]):
    """A callable giving the model as it was before the plan: ``reference`` when it is a separate, untouched
    model (``compress``), else a copy of ``model`` with copies of the swapped-out layers put back."""
    def original() -> nn.Module:
        if reference is not model:
            return reference
        rebuilt = copy.deepcopy(model)
        for name, old in reversed(swaps):
            swap_submodule(rebuilt, name, undo.restored_copy(old))
        return rebuilt

    return original


def run_steps(
    model: nn.Module, plan: Plan, swaps: list[tuple[str, nn.Module]], data: Any, example_inputs: Any,
    on_step: Callable[[int, int, str], Any] | None = None,
    reference: nn.Module | None = None,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    replay: bool = False,
    root: list | None = None,
) -> tuple[list, list, dict, Plan]:
    """Run every step of ``plan`` on ``model``; return (report rows, notes, timings, the plan as it ran: steps
    with the fields their methods pinned). ``swaps`` receives each ``(layer name, original module)`` before the
    swap is made (``None`` for a copy's dropped layer). ``root``: a list that receives the module replacing the
    whole model, when a method replaces it (name ``""``: a runtime serving the model as one graph); only a copy
    can be replaced whole, so a compress in place passes None and such methods serve parts of it instead."""
    ran_steps = list(plan.steps)
    rows: list = []
    notes: list[str] = []
    timings: dict[str, float] = {}
    copy_mode = reference is not None and reference is not model
    # an in-place run on a big model keeps its undo record on disk (core/undo.py): memory stays near 1x
    on_disk = not copy_mode and model_bytes(model) >= undo.SPILL_MIN_BYTES
    spilled = [0]

    def put(name: str, new: nn.Module) -> None:
        if name == "":
            if root is None or not copy_mode:
                raise RuntimeError("a method replaced the whole model in a run that cannot replace it")
            new.train(model.training)
            swaps.append(("", None))  # the copy is discarded whole; nothing to roll back
            root.append(new)
            return
        old = model.get_submodule(name)
        new.train(old.training)
        _swap_recorded(model, name, new, swaps)
        if copy_mode:  # the copy's own layer is not needed again (the reference holds the original): free it
            swaps[-1] = (name, None)
        elif on_disk:
            spilled[0] += undo.spill(old, model)

    generator = torch.Generator().manual_seed(plan.seed)
    with torch.random.fork_rng(devices=[]):  # methods may draw random numbers; the user's RNG is left alone
        torch.manual_seed(plan.seed)
        for index, step in enumerate(plan.steps):
            if on_step is not None and on_step(index, len(plan.steps), step.method) is False:
                raise StoppedError(f"Stopped before step {index + 1} of {len(plan.steps)} ({step.method}); the "
                                   f"model is as it was.")
            method = get_method(step.method)
            names = step.selector.select(model, method.supported_for(step.config), method.name)
            start = time.perf_counter()
            streamed_dropped: list[str] = []
            streamed_notes: list[str] = []

            def sink(name: str, new: nn.Module, method_name: str = method.name, gone_names: list = streamed_dropped,
                     step_notes: list = streamed_notes) -> None:
                gone, tie_notes = keep_ties(model, {name: new}, method_name)
                gone_names.extend(gone)
                step_notes.extend(n for n in tie_notes if n not in step_notes)
                if not gone:
                    put(name, new)

            ctx = Context(seed=plan.seed, generator=generator, data=data, example_inputs=example_inputs,
                          step_index=index, original=_original_of(model, reference or model, swaps),
                          selector=step.selector, functions=dict(functions or {}), replay=replay,
                          whole_model_swap=root is not None and copy_mode,
                          # a model with tied parameters takes the whole-step path: keep_ties then sees every
                          # replacement of the step at once (a tie's partners are re-pointed together)
                          sink=sink if method.streams and not tied_groups(model) else None)
            with torch.no_grad(), single_thread():
                result = method.apply(model, names, step.config, ctx)
            dropped, tie_notes = keep_ties(model, result.replacements, method.name)
            _mark_untouched(result.rows, dropped + streamed_dropped)
            result.notes = list(result.notes) + streamed_notes + [n for n in tie_notes if n not in streamed_notes]
            for name, new in list(result.replacements.items()):
                result.replacements.pop(name)
                put(name, new)
            timings[f"step {index + 1} ({method.name}) s"] = time.perf_counter() - start
            rows += result.rows
            notes += [n for n in result.notes if n not in notes]
            if result.pinned:  # validated like any config: a method cannot pin a value its config refuses
                ran_steps[index] = dataclasses.replace(step, config=dataclasses.replace(step.config, **result.pinned))
    if spilled[0]:
        notes.append(f"The undo record ({spilled[0] / 2**20:,.0f} MiB of replaced layers) is kept on disk in "
                     f"{undo.folder_name()} until revert_(model) or forget_undo(model), so the in-place run needs "
                     f"about the model's own memory.")
    return rows, notes, timings, dataclasses.replace(plan, steps=tuple(ran_steps))
