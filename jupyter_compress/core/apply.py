"""The verbs: ``compress`` (a new model), ``compress_`` (in place, transactional), ``revert_``.

Apply functions never mutate the modules they are given: they return new modules,
and the core swaps them into the model (core/steps.py). An in-place run keeps the swapped-out
originals in an undo record, so an exception or KeyboardInterrupt mid-way (or a
later ``revert_``) puts back the very same module objects: bit-exact by construction.
``Context`` (what a method is given) lives in core/context.py and is importable from here.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CompressError, NothingToRevertError, PlanError
from .context import Context
from .coverage import larger_note, left_alone_note
from .inputs import (
    ACCEPTED_FORMS,
    INPUT_ERRORS,
    InputsError,
    attach_tokenizer,
    auto_example,
    first_line,
    given_tokenizer,
    prepare_data,
    prepare_inputs,
)
from .metrics import (
    call_model,
    count_nonzero,
    count_params,
    eval_mode,
    measure_latency,
    model_bytes,
    primary_output,
    relative_error,
)
from .plan import Plan, current_versions
from .registry import get_method
from .report import Report
from .steps import rollback, run_steps
from .thresholds import metric_number

__all__ = ["compress", "compress_", "revert_", "preview", "forget_undo", "Context", "applied_plans"]

# model -> stack of undo records (each a list of (layer name, original module)), newest last.
_UNDO: weakref.WeakKeyDictionary[nn.Module, list[list[tuple[str, nn.Module]]]] = weakref.WeakKeyDictionary()
# model -> plans applied to it (in place or when it was made by compress), oldest first.
_APPLIED: weakref.WeakKeyDictionary[nn.Module, list[Plan]] = weakref.WeakKeyDictionary()


def applied_plans(model: nn.Module) -> list[Plan]:
    """The plans that made ``model`` what it is (empty for an uncompressed model)."""
    return list(_APPLIED.get(model, []))


def _stats(model: nn.Module) -> tuple[int, int, int]:
    return count_params(model), count_nonzero(model), model_bytes(model)


def _as_metrics(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    number = metric_number(value)  # a Python, numpy or 0-d torch number
    if number is not None:
        return {"metric": number}
    raise CompressError(f"The eval function must return a number or a dict of numbers; it returned {value!r}.")


def _check_example(model: nn.Module, example_inputs: Any, built: str | None = None) -> Any:
    """The model's output on ``example_inputs``; inputs it cannot take are a one-line error, before any change."""
    try:
        with eval_mode(model), torch.inference_mode():
            return call_model(model, example_inputs)
    except INPUT_ERRORS as exc:
        what = f"example inputs built from {built}" if built else f"example inputs ({_describe(example_inputs)})"
        raise InputsError(f"The model does not run on the {what} ({first_line(exc)}); pass example_inputs= as "
                          f"{ACCEPTED_FORMS}, shaped like the model's real input.") from None


def _holds(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if hasattr(value, "keys") and hasattr(value, "items"):
        return f"a {type(value).__name__} with keys {', '.join(map(str, list(value.keys())[:6]))}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} {'/'.join(sorted({type(v).__name__ for v in value}))}"
    return f"a {type(value).__name__}"


def _check_runs(model: nn.Module, example_inputs: Any, names: list[str]) -> Any:
    """Run the compressed model once: a replaced layer that code around it cannot use (a parent reading
    ``.weight``, a shape the next layer does not take) fails here, not later in the user's hands."""
    try:
        with eval_mode(model), torch.inference_mode():
            return call_model(model, example_inputs)
    except INPUT_ERRORS as exc:
        changed = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise CompressError(f"The compressed model does not run ({first_line(exc)}); nothing was changed. "
                            f"Exclude the layers around the failure from the plan (changed: {changed}).") from None


def _compress_into(
    target: nn.Module,
    reference: nn.Module,
    plan: Plan,
    *,
    inplace: bool,
    eval: Callable[[nn.Module], Any] | None,
    measure: bool = True,
    example_inputs: Any,
    data: Any,
    on_step: Callable[[int, int, str], Any] | None = None,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    replay: bool = False,
    root: list | None = None,
) -> Report:
    if not plan.steps:
        raise PlanError("The plan has no steps; add at least one, e.g. Plan.of(PruneConfig(amount=0.5)).")
    before = _stats(target)
    # inputs in the forms users have them: sentences are tokenized once, here
    example_inputs = prepare_inputs(reference, example_inputs)
    data = prepare_data(reference, data)
    built, check_inputs, input_notes = None, example_inputs, []
    if example_inputs is None:
        found = auto_example(reference, data)
        if found is not None:
            check_inputs, built = found
            try:
                _check_example(reference, check_inputs, built)
            except InputsError:
                check_inputs = built = None  # an example we guessed and the model refuses: no check, no guess
        if built is not None and not built.startswith("the first batch"):
            example_inputs = check_inputs  # methods and measurements use it as if the user had passed it
            input_notes.append(f"No example inputs were given: built {built} (pass example_inputs= to choose).")
    metrics_before: dict[str, Any] = {}
    reference_out = None
    if eval is not None:
        metrics_before = _as_metrics(eval(reference))
    if example_inputs is not None and measure:
        reference_out = _check_example(reference, example_inputs, built)
        metrics_before["latency_ms"] = measure_latency(reference, example_inputs, max_time_s=2.0).median_ms
    elif example_inputs is not None and built is None:
        _check_example(reference, example_inputs)

    swaps: list[tuple[str, nn.Module]] = []
    ran: Plan | None = None
    start = time.perf_counter()
    try:
        rows, notes, timings, pinned = run_steps(target, plan, swaps, data, example_inputs, on_step, reference,
                                                 functions, replay, root)
        if root:  # the whole model was replaced (a runtime serving it as one graph): what follows reads that
            _APPLIED[root[0]] = list(_APPLIED.get(target, []))
            attach_tokenizer(root[0], given_tokenizer(target))
            target = root[0]
        timings["compress s"] = time.perf_counter() - start
        metrics_after: dict[str, Any] = {}
        if check_inputs is not None:
            _check_runs(target, check_inputs, [name for name, _ in swaps])
        if eval is not None:
            metrics_after = _as_metrics(eval(target))
        if example_inputs is not None and measure:
            with eval_mode(target), torch.inference_mode():
                out = call_model(target, example_inputs)
            ref_t, out_t = primary_output(reference_out), primary_output(out)
            if ref_t is not None and out_t is not None and ref_t.shape == out_t.shape:
                metrics_after["output_rel_error"] = relative_error(ref_t, out_t)
            metrics_after["latency_ms"] = measure_latency(target, example_inputs, max_time_s=2.0).median_ms

        after = _stats(target)
        # by name: a Method holds mappings (probe, option fields), so it is not hashable
        methods = list({m.name: m for m in (get_method(step.method) for step in plan.steps)}.values())
        taken = [t for step in plan.steps for t in get_method(step.method).supported_for(step.config)]
        left = left_alone_note(reference, taken, [n for n, _ in swaps],
                               ", ".join(m.name for m in methods))
        notes = input_notes + notes + ([left] if left else [])
        # a layer a later step absorbed (prune, then int8 runs its whole encoder in ONNX Runtime) is no longer
        # in the model: the later swap of its ancestor accounts for it
        present = [(name, old) for name, old in swaps if _holds(target, name)]
        larger = larger_note(before, after, [(name, _original_layer(reference, name) if old is None else old,
                                              target.get_submodule(name)) for name, old in present])
        if larger:
            notes.insert(0, larger)
        ran = dataclasses.replace(pinned, versions=current_versions())
        report = Report(
            rows=rows,
            plan=ran.to_dict(),
            model_params_before=before[0],
            model_params_after=after[0],
            model_nonzeros_before=before[1],
            model_nonzeros_after=after[1],
            model_bytes_before=before[2],
            model_bytes_after=after[2],
            metrics_before=metrics_before,
            metrics_after=metrics_after,
            timings=timings,
            notes=notes,
            inplace=inplace,
        )
        _commit(target, swaps, ran, inplace)
        return report
    except BaseException as exc:
        if _committed(target, swaps, ran, inplace):  # interrupted after the commit: revert_ undoes it
            _add_note(exc, "The compression completed before this error: the model is compressed; "
                      "revert_(model) undoes it.")
        else:  # KeyboardInterrupt included: the model is left as it was (a copy too: the caller never sees it)
            rollback(target, swaps)
            if inplace and swaps:
                _add_note(exc, "The model was restored: it is exactly as it was before compress_.")
        raise


def _original_layer(reference: nn.Module, name: str) -> nn.Module:
    try:
        return reference.get_submodule(name)
    except AttributeError:
        return nn.Module()  # a layer a later step made: counted as new


def _commit(target: nn.Module, swaps: list, ran: Plan, inplace: bool) -> None:
    """Store the undo record, then the applied plan. The undo record is stored by one assignment: before it
    the caller rolls back on an interrupt, after it the model is compressed with a working undo record."""
    if inplace:
        _UNDO[target] = [*_UNDO.get(target, []), swaps]
    _APPLIED[target] = [*_APPLIED.get(target, []), ran]


def _committed(target: nn.Module, swaps: list, ran: Plan | None, inplace: bool) -> bool:
    """Whether ``_commit`` stored the undo record of ``swaps`` (completing its second half if needed)."""
    if not inplace or not any(record is swaps for record in _UNDO.get(target, [])):
        return False
    if ran is not None and not any(p is ran for p in _APPLIED.get(target, [])):
        _APPLIED[target] = [*_APPLIED.get(target, []), ran]
    return True


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note") and note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise CompressError(f"Expected a torch.nn.Module to compress; got a {type(model).__name__}.")


def compress(
    model: nn.Module,
    plan: Any,
    *,
    eval: Callable[[nn.Module], Any] | None = None,
    example_inputs: Any = None,
    data: Any = None,
    measure: bool = True,
    on_step: Callable[[int, int, str], Any] | None = None,
    tokenizer: Any = None,
    functions: Mapping[str, Callable[..., Any]] | None = None,
) -> tuple[nn.Module, Report]:
    """Compress a copy of ``model`` by ``plan``; return ``(new_model, report)``.

    ``model`` is never changed. ``plan`` may be a :class:`Plan`, a method config,
    a list of configs, a dict or YAML/JSON text. ``eval(model)`` (a number or a dict
    of numbers) and ``example_inputs`` (for latency and output error) add metrics;
    ``measure=False`` skips the latency and output-error measurements (example inputs are
    then only used by methods that trace the model). ``on_step(index, total, method)`` is called
    before each step (progress bars); returning False stops there (``StoppedError``).

    The copy is a full deep copy: sharing the untouched layers would save memory,
    but then fine-tuning the compressed model would silently train the original.
    """
    _check_model(model)
    plan = Plan.coerce(plan)
    attach_tokenizer(model, tokenizer)
    try:
        new = copy.deepcopy(model)
    except Exception as exc:  # some custom modules hold handles that cannot be copied
        raise CompressError(
            f"Could not copy the model ({type(exc).__name__}: {exc}); use compress_(model, plan) to work in place."
        ) from exc
    _APPLIED[new] = list(_APPLIED.get(model, []))
    attach_tokenizer(new, given_tokenizer(model))
    root: list[nn.Module] = []  # receives the module serving the whole model, when a step replaces it whole
    report = _compress_into(new, model, plan, inplace=False, eval=eval, example_inputs=example_inputs, data=data,
                            measure=measure, on_step=on_step, functions=functions, root=root)
    return (root[0] if root else new), report


def replay_copy(model: nn.Module, plan: Plan, *, example_inputs: Any, data: Any) -> nn.Module:
    """``plan`` replayed (no training, no timing) on a copy of ``model``; the model it built, which may be a
    module replacing it whole (a runtime serving it as one graph). For load."""
    new = copy.deepcopy(model)
    root: list[nn.Module] = []
    _compress_into(new, model, plan, inplace=False, eval=None, example_inputs=example_inputs, data=data,
                   measure=False, replay=True, root=root)
    return root[0] if root else new


def preview(model: nn.Module, plan: Any, *, example_inputs: Any = None, data: Any = None,
            tokenizer: Any = None, functions: Mapping[str, Callable[..., Any]] | None = None) -> Report:
    """What ``plan`` would do, layer by layer (counts, coupled layers, skipped layers and why), without
    changing ``model``: the plan runs on a copy, with no evaluation and no timing, and the copy is dropped."""
    _check_model(model)
    plan = Plan.coerce(plan)
    attach_tokenizer(model, tokenizer)
    new = copy.deepcopy(model)
    report = _compress_into(new, model, plan, inplace=False, eval=None, example_inputs=example_inputs,
                            data=data, measure=False, functions=functions)
    _APPLIED.pop(new, None)
    report.notes.insert(0, "Preview: nothing was changed; this is what the plan would do.")
    return report


def compress_(
    model: nn.Module,
    plan: Any,
    *,
    eval: Callable[[nn.Module], Any] | None = None,
    example_inputs: Any = None,
    data: Any = None,
    measure: bool = True,
    on_step: Callable[[int, int, str], Any] | None = None,
    tokenizer: Any = None,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    replay: bool = False,
    root: list | None = None,
) -> Report:
    """Compress ``model`` in place; transactional: an exception or interrupt before the compression completes
    leaves it bit-identical (same modules, same values); after it completes, :func:`revert_` undoes it.

    The replaced layers are kept so that :func:`revert_` can restore them exactly;
    call ``forget_undo(model)`` to free that memory once you are sure. ``functions``: functions a plan names
    (QAT's ``train``), by name; a plan never imports code. ``replay=True`` rebuilds a saved model's structure
    (``load``): training steps are not run again, the saved values are loaded afterwards.
    """
    _check_model(model)
    plan = Plan.coerce(plan)
    attach_tokenizer(model, tokenizer)
    # "before" metrics are measured on the model before any layer is swapped, so no copy is needed.
    return _compress_into(model, model, plan, inplace=True, eval=eval, example_inputs=example_inputs, data=data,
                          measure=measure, on_step=on_step, functions=functions, replay=replay)


def revert_(model: nn.Module) -> nn.Module:
    """Undo every in-place compression of ``model``, restoring the original layers exactly."""
    _check_model(model)
    stack = _UNDO.get(model)
    if not stack:
        raise NothingToRevertError(
            "This model holds no in-place compression to revert; compress() returns a new model "
            "and leaves the original unchanged, so keep using the original."
        )
    while stack:
        rollback(model, stack[-1])
        stack.pop()
    _UNDO.pop(model, None)
    _APPLIED.pop(model, None)
    return model


def forget_undo(model: nn.Module) -> None:
    """Drop the undo record of ``model`` (frees the original layers; revert_ is then impossible)."""
    _UNDO.pop(model, None)
