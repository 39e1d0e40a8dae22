"""Structured pruning: whole output channels / neurons are removed, so the model really
holds fewer parameters and does fewer multiply-adds.

Coupled layers (residual additions, BatchNorm, concatenations, depthwise convolutions)
must shrink together; Torch-Pruning's dependency graph finds those groups, and we use
it rather than writing our own tracer. What we add: each group is pruned on a working
copy and the model is run on the example inputs right after; a group whose removal
breaks the forward pass (e.g. attention that reshapes into a fixed number of heads)
is put back, skipped and named in the report, instead of crashing the whole run.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from ..core.config import Boolean, IntAtLeast, Interval, MethodConfig, param
from ..core.metrics import call_model, eval_mode
from ..core.registry import MethodResult, register_method
from ..errors import CompressError
from ._common import layer_row

__all__ = ["StructuredPruneConfig"]

ROOTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StructuredPruneConfig(MethodConfig):
    """Remove whole channels / neurons (dependency-aware, via Torch-Pruning)."""

    amount: float = param(0.5, help="fraction of the output channels / neurons to remove in each group",
                          check=Interval(0.0, 1.0, "[)"))
    importance: str = param("l1", help="channel importance: 'l1' or 'l2' norm of the group's weights",
                            choices=("l1", "l2"))
    round_to: int = param(1, help="keep a multiple of this many channels per group (e.g. 8 for fast kernels)",
                          check=IntAtLeast(1))
    keep_first: bool = param(True, help="leave the first layer's outputs untouched", check=Boolean())
    keep_head: bool = param(True, help="leave the last layer (classifier head) untouched", check=Boolean())


def execution_order(model: nn.Module, example_inputs, types=ROOTS) -> list[str]:
    """Names of the ``types`` modules in the order a forward pass runs them (first call only)."""
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, types):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: order.append(name) if name not in order else None))
    try:
        with eval_mode(model), torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return order


def _n_remove(channels: int, amount: float, round_to: int) -> int:
    keep = max(1, channels - int(round(amount * channels)))
    if round_to > 1:
        keep = min(channels, max(round_to, int(math.ceil(keep / round_to)) * round_to))
    return channels - keep


def _first_error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


@register_method(
    "prune.structured",
    StructuredPruneConfig,
    supported=ROOTS,
    family="pruning",
    help="Structured pruning: remove whole channels/neurons with their coupled layers (really smaller and "
         "faster); needs example inputs to trace the model.",
    needs_data=True,
    aliases=("structured",),
)
def apply_structured(model: nn.Module, names: list[str], config: StructuredPruneConfig, ctx) -> MethodResult:
    if ctx.example_inputs is None:
        raise CompressError("prune.structured traces the model and needs example inputs: pass "
                            "example_inputs=... to compress (or --example NAME to %compress).")
    import torch_pruning as tp

    work = copy.deepcopy(model)
    order = execution_order(work, ctx.example_inputs)
    protected = {}
    if config.keep_first and order:
        protected[order[0]] = "first layer (keep_first)"
    if config.keep_head and order:
        protected[order[-1]] = "last layer / head (keep_head)"
    chosen = [n for n in names if n not in protected]
    p = 1 if config.importance == "l1" else 2
    importance = tp.importance.GroupMagnitudeImportance(p=p)

    def build(net: nn.Module):
        ignored = [m for n, m in net.named_modules() if isinstance(m, ROOTS) and n not in chosen]
        # the tracer needs autograd; eval mode so that tracing does not update BatchNorm statistics
        with torch.enable_grad(), eval_mode(net):
            graph = tp.DependencyGraph().build_dependency(net, example_inputs=ctx.example_inputs, verbose=False)
        return graph, ignored

    try:
        graph, ignored = build(work)
    except Exception as exc:  # a custom module the tracer cannot follow
        raise CompressError(f"Torch-Pruning could not trace this model ({_first_error_line(exc)}); exclude the "
                            f"custom module's layers (exclude: [...]) or use unstructured 'prune'.") from exc
    name_of = {m: n for n, m in work.named_modules()}
    roots, covered = [], set()
    # groups that would shrink the outputs of an unselected / protected layer are not yielded
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=ROOTS):
        root = name_of.get(group[0].dep.target.module)
        if root in chosen and root not in roots:
            roots.append(root)
            covered |= {name_of.get(dep.target.module) for dep, _ in group
                        if graph.is_out_channel_pruning_fn(dep.handler)}
    skipped: dict[str, str] = {
        n: "its output channels are coupled (by a residual addition, attention or concatenation) with a "
           "layer left untouched (protected or not selected)"
        for n in chosen if n not in covered
    }
    removed: dict[str, int] = {}
    for root in roots:
        module = work.get_submodule(root)
        pruner = graph.get_pruner_of_module(module)
        channels = pruner.get_out_channels(module)
        n_remove = _n_remove(channels, config.amount, config.round_to)
        if n_remove <= 0:
            continue
        full = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=list(range(channels)))
        scores = importance(full)
        if scores is None:
            skipped[root] = "Torch-Pruning found no importance for this group"
            continue
        idxs = torch.argsort(scores.detach().cpu(), stable=True)[:n_remove].tolist()
        group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=idxs)
        if not graph.check_pruning_group(group):
            skipped[root] = "removing these channels would leave a coupled layer empty"
            continue
        backup = copy.deepcopy(work)
        group.prune()
        try:
            with eval_mode(work), torch.no_grad():
                call_model(work, ctx.example_inputs)
        except Exception as exc:
            skipped[root] = f"the model fails to run with these channels removed ({_first_error_line(exc)})"
            work = backup
            graph, ignored = build(work)
            continue
        removed[root] = n_remove

    replacements, rows = {}, []
    originals = dict(model.named_modules())
    for name, new in work.named_modules():
        old = originals.get(name)
        if old is None or not name:
            continue
        own_old = {k: tuple(v.shape) for k, v in list(old.named_parameters(recurse=False))
                   + list(old.named_buffers(recurse=False))}
        own_new = {k: tuple(v.shape) for k, v in list(new.named_parameters(recurse=False))
                   + list(new.named_buffers(recurse=False))}
        if own_old != own_new:
            detail = {"removed_out": removed[name]} if name in removed else {}
            rows.append(layer_row(name, "prune.structured", old, new, detail=detail))
            replacements[name] = new
    for name, reason in skipped.items():
        rows.append(layer_row(name, "prune.structured", originals[name], None, skipped=reason))
    notes = ["Structured pruning removes whole channels / neurons: the pruned model holds fewer parameters and "
             "does fewer multiply-adds, so it is smaller and usually faster (measure with example inputs)."]
    if protected:
        notes.append("Kept untouched: " + ", ".join(f"{n} ({why})" for n, why in protected.items()) + ".")
    if skipped:
        notes.append(f"{len(skipped)} group(s) skipped, named in the rows: " + ", ".join(skipped) + ".")
    if not replacements:
        notes.append("Nothing was pruned: every selected layer is protected, too small for this amount, or "
                      "coupled with an untouched layer; try keep_first=False or a larger amount.")
    return MethodResult(replacements, rows, notes)
