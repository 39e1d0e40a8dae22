"""Structured pruning: whole output channels / neurons / attention heads are removed, so the model
really holds fewer parameters and does fewer multiply-adds.

Coupled layers (residual additions, BatchNorm, concatenations, depthwise convolutions, q/k/v of
attention) must shrink together; Torch-Pruning's dependency graph finds those groups, and we use it
rather than writing our own tracer. What we add: counts per layer, per-layer ratios or one global
ranking (``_groups``); whole heads for attention modules that declare them; and each group is pruned
on a working copy and the model is run on the example inputs right after: a group whose removal breaks
the forward pass is put back, skipped and named in the report, instead of crashing the whole run.

Hugging Face models (``_hf_structured``): example inputs given as a dict / tokenizer output are traced as
keyword arguments; GPT-2's ``Conv1D`` is prunable and its fused q/k/v loses whole heads; the hidden size and
tied weights are left whole (only heads and MLP neurons go), so ``model(**inputs)`` and ``generate()`` still
work and a tied ``lm_head`` stays tied.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Mapping

import torch
from torch import nn

from ..core.config import Boolean, IntAtLeast, Interval, MethodConfig, RatioMap, param
from ..core.inputs import call_args, first_line
from ..core.metrics import call_model, eval_mode, primary_output
from ..core.registry import MagicOption, MethodResult, register_method
from ..core.textvalues import parse_amount
from ..errors import CompressError, InvalidConfigError
from . import _structured_plan as _plan
from ._common import layer_row
from ._groups import block_scores, choose_global, n_remove, ratio_for
from ._head import output_layer
from ._hf_structured import (
    GroupHolds,
    HFConv1D,
    attention_roles,
    customized_pruners,
    fused_head_scores,
    group_scores,
    has_conv1d,
    head_attributes_update,
    prune_fused_heads,
)
from ._taylor import accumulate_grads

__all__ = ["StructuredPruneConfig", "execution_order", "build_graph"]

ROOTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, HFConv1D)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StructuredPruneConfig(MethodConfig):
    """Remove whole channels / neurons / attention heads (dependency-aware, via Torch-Pruning)."""

    amount: float = param(0.5, help="fraction of the output channels / neurons (or heads) to remove",
                          check=Interval(0.0, 1.0, "[)"))
    importance: str = param("l1", help="channel importance: 'l1' or 'l2' norm of the group's weights, or "
                            "'taylor' (|w * gradient| on a few batches of data; needs data)",
                            choices=("l1", "l2", "taylor"))
    scope: str = param("layer", help="'layer': remove `amount` of each group; 'global': rank all groups' "
                       "channels together (at most 90% of any group)", choices=("layer", "global"))
    ratios: dict | None = param(None, help="per-layer amounts overriding `amount` in layer scope, e.g. "
                                "{'conv2': 0.3, 're:layer4.*': 0.7}", check=RatioMap())
    round_to: int = param(1, help="keep a multiple of this many channels per group (e.g. 8 for fast kernels)",
                          check=IntAtLeast(1))
    heads: bool = param(True, help="prune attention q/k/v in whole heads (when the module declares its heads); "
                        "False skips attention groups", check=Boolean())
    keep_first: bool = param(True, help="leave the first layer's outputs untouched", check=Boolean())
    keep_head: bool = param(True, help="leave the last layer (classifier head) untouched", check=Boolean())
    batches: int = param(4, help="batches of data used by 'taylor' importance", check=IntAtLeast(1))

    def requirements(self) -> frozenset[str]:
        return frozenset({"data"}) if self.importance == "taylor" else frozenset()


def execution_order(model: nn.Module, example_inputs, types=ROOTS) -> tuple[list[str], set[str]]:
    """Names of the ``types`` modules in the order a forward pass runs them (first call only), and the
    names of those that read the model's own input tensor (the stem / first layer)."""
    order: list[str] = []
    reads_input: set[str] = set()
    flat = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    given = {id(t) for t in flat if isinstance(t, torch.Tensor)}
    given |= {id(v) for t in flat if isinstance(t, Mapping) for v in t.values() if isinstance(v, torch.Tensor)}

    def hook(module, inputs, output, name):
        if name not in order:
            order.append(name)
            if any(id(t) in given for t in inputs):
                reads_input.add(name)

    hooks = [module.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name))
             for name, module in model.named_modules() if isinstance(module, types)]
    try:
        with eval_mode(model), torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return order, reads_input


def _trace_forward(model: nn.Module, inputs):
    """``call_model`` for the tracer, with a Hugging Face model's key/value cache off: the cache concatenates
    past and new keys, which is no part of the function being pruned (and Torch-Pruning cannot map it)."""
    args, kwargs = call_args(model, inputs)
    try:
        accepts_cache = "use_cache" in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        accepts_cache = False
    if accepts_cache and "use_cache" not in kwargs:
        kwargs["use_cache"] = False
    return model(*args, **kwargs)


def build_graph(net: nn.Module, example_inputs):
    """Torch-Pruning's dependency graph of ``net`` traced on ``example_inputs`` in any accepted form (a tensor,
    a tuple, a dict / tokenizer output as keyword arguments), with transformers' Conv1D as a prunable layer."""
    import torch_pruning as tp

    # the tracer needs autograd; eval mode so that tracing does not update BatchNorm statistics
    with torch.enable_grad(), eval_mode(net):
        return tp.DependencyGraph().build_dependency(net, example_inputs=example_inputs, forward_fn=_trace_forward,
                                                     output_transform=primary_output,
                                                     customized_pruners=customized_pruners(), verbose=False)


def _build(net: nn.Module, example_inputs, ignored_names: set[str]):
    ignored = [m for n, m in net.named_modules() if isinstance(m, ROOTS) and n in ignored_names]
    return build_graph(net, example_inputs), ignored


def _custom_layers(model: nn.Module) -> list[str]:
    """Modules of user-defined classes that hold parameters of their own (what a tracer cannot prune)."""
    return [n for n, m in model.named_modules()
            if n and not type(m).__module__.startswith("torch") and not isinstance(m, HFConv1D)
            and any(True for _ in m.parameters(recurse=False))]


def _failing_module(exc: BaseException, model: nn.Module) -> str | None:
    """The name of the innermost module of ``model`` whose code was running when ``exc`` was raised."""
    names = {id(m): n for n, m in model.named_modules() if n}
    found, tb = None, exc.__traceback__
    while tb is not None:
        name = names.get(id(tb.tb_frame.f_locals.get("self")))
        found = name or found
        tb = tb.tb_next
    return found


def _trace(work: nn.Module, example_inputs, ignored_names: set[str]):
    try:
        return _build(work, example_inputs, ignored_names)
    except Exception as exc:  # a custom module or op the tracer cannot follow
        where = _failing_module(exc, work)
        place = (f" in '{where}' ({type(work.get_submodule(where)).__name__}): exclude it (exclude: ['{where}'])"
                 if where else ": exclude the layers around the failure (exclude: [...])")
        raise CompressError(f"Torch-Pruning could not trace this model ({first_line(exc, 160)}){place} or use "
                            f"unstructured 'prune'.") from exc


def _importance(config: StructuredPruneConfig):
    import torch_pruning as tp

    if config.importance == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if config.importance == "l1" else 2)


@register_method(
    "prune.structured",
    StructuredPruneConfig,
    supported=ROOTS,
    family="pruning",
    help="Structured pruning: remove whole channels/neurons/heads with their coupled layers (really smaller "
         "and faster); needs example inputs to trace the model.",
    requires=("example_inputs",),
    aliases=("structured",),
    stage="structure",
    dial="amount",
    options=(MagicOption("--structured", "AMOUNT", parse_amount, help="structured pruning (needs --example)"),),
    probe={"amount": 0.3},
    units=_plan.units,
    pin=_plan.pin,
    compare=("pruning, structured", _plan.at_budget),
)
def apply_structured(model: nn.Module, names: list[str], config: StructuredPruneConfig, ctx) -> MethodResult:
    if ctx.example_inputs is None:
        raise CompressError("prune.structured traces the model and needs example inputs: pass "
                            "example_inputs=... to compress (or --example NAME to %compress).")
    if config.importance == "taylor" and ctx.data is None:
        raise InvalidConfigError("importance='taylor' needs data to take gradients: pass data=(X, y) "
                                 "(or --data NAME), or use importance='l1'.")
    work = copy.deepcopy(model)
    order, reads_input = execution_order(work, ctx.example_inputs)
    protected = {}
    if config.keep_first and order and order[0] in reads_input:  # a stem that reads the input itself
        protected[order[0]] = "first layer (keep_first)"
    if config.keep_head and order:
        protected[output_layer(work, order)] = "last layer / head (keep_head)"
    chosen = [n for n in names if n not in protected]
    ignored_names = {n for n, m in work.named_modules() if isinstance(m, ROOTS) and n not in chosen}
    graph, ignored = _trace(work, ctx.example_inputs, ignored_names)
    heads, fused, kept = attention_roles(work)

    name_of = {m: n for n, m in work.named_modules()}
    hold = GroupHolds(work, graph, name_of, kept)
    roots, covered, held = [], set(), {}
    # groups that would shrink the outputs of an unselected / protected layer are not yielded
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=ROOTS):
        root = name_of.get(group[0].dep.target.module)
        if root not in chosen or root in roots or root in fused:
            continue
        outs = {name_of.get(dep.target.module) for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)}
        reason = hold.reason(group)
        if reason:
            held.update({n: reason for n in outs if n in chosen and n not in held})
            continue
        roots.append(root)
        covered |= outs
    for root in fused:  # GPT-2's fused q/k/v: whole heads, pruned here rather than through the graph
        if root in chosen and fused[root][1].output not in protected:
            roots.append(root)
            covered.add(root)
    traced = {name_of.get(m) for m in graph.module2node} | set(fused)
    custom = _custom_layers(work)
    untraced = ("the dependency graph cannot follow it: its output passes through a detached, "
                "non-differentiable or custom operation"
                + (f" (the custom module '{custom[0]}' ({type(work.get_submodule(custom[0])).__name__}) is a "
                   f"likely cause)" if custom else "") + "; exclude it, or use unstructured 'prune'")
    if chosen and not traced & set(chosen):
        raise CompressError(f"Structured pruning cannot prune this model: {untraced}.")
    skipped: dict[str, str] = {
        n: held.get(n) or (("its output channels are coupled (by a residual addition, attention or concatenation) "
                            "with a layer left untouched (protected or not selected)") if n in traced else untraced)
        for n in chosen if n not in covered
    }
    if config.importance == "taylor":
        accumulate_grads(work, ctx.data, max_batches=config.batches)
    importance = _importance(config)

    scores: dict[str, torch.Tensor] = {}
    for root in roots:
        if (root in heads or root in fused) and not config.heads:
            skipped[root] = "attention projections: heads=False leaves attention untouched"
            continue
        if root in fused:
            scores[root] = fused_head_scores(work, fused[root][1], 2 if config.importance == "l2" else 1,
                                             taylor=config.importance == "taylor")
            continue
        module = work.get_submodule(root)
        pruner = graph.get_pruner_of_module(module)
        channels = pruner.get_out_channels(module)
        group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=list(range(channels)))
        if has_conv1d(group):  # Torch-Pruning's importance does not read transformers' Conv1D weights
            s = group_scores(group, graph, channels, 2 if config.importance == "l2" else 1,
                             taylor=config.importance == "taylor")
        else:
            s = importance(group)
        if s is None:
            skipped[root] = "Torch-Pruning found no importance for this group"
        else:
            scores[root] = block_scores(s.detach().cpu(), heads[root][1]) if root in heads else s.detach().cpu()

    rounding = {r: 1 if r in heads or r in fused else config.round_to for r in scores}
    if config.scope == "global":
        counts = choose_global(scores, config.amount, rounding)
    else:
        counts = {r: n_remove(len(s), ratio_for(r, config.ratios, config.amount), rounding[r])
                  for r, s in scores.items()}

    removed: dict[str, dict] = {}
    changed_owners: set[str] = set()
    for root, count in counts.items():
        if count <= 0:
            continue
        units = torch.argsort(scores[root], stable=True)[:count].sort().values.tolist()
        backup = copy.deepcopy(work)
        if root in fused:
            owner, spec = fused[root]
            prune_fused_heads(work, owner, spec, units)
            coupled = [spec.output]
        else:
            idxs = [u * heads[root][1] + j for u in units for j in range(heads[root][1])] if root in heads else units
            module = work.get_submodule(root)
            pruner = graph.get_pruner_of_module(module)
            group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=idxs)
            if not graph.check_pruning_group(group):
                skipped[root] = "removing these channels would leave a coupled layer empty"
                continue
            group.prune()
            coupled = sorted({name_of.get(dep.target.module) for dep, _ in group} - {None, root})
            owner = heads[root][0] if root in heads else None
            if owner is not None:
                head_attributes_update(work.get_submodule(owner), count, heads[root][1])
        try:
            with eval_mode(work), torch.no_grad():
                call_model(work, ctx.example_inputs)
        except Exception as exc:
            skipped[root] = f"the model fails to run with these channels removed ({first_line(exc, 160)})"
            work = backup
            graph, ignored = _build(work, ctx.example_inputs, ignored_names)
            name_of = {m: n for n, m in work.named_modules()}
            continue
        unit = "removed_heads" if owner is not None else "removed_out"
        removed[root] = {unit: count, "of": len(scores[root]), "coupled": coupled}
        if owner is not None:
            changed_owners.add(owner)

    return _result(model, work, removed, skipped, protected, changed_owners, config, held)


def _result(model, work, removed, skipped, protected, changed_owners, config, held) -> MethodResult:
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
            rows.append(layer_row(name, "prune.structured", old, new, detail=removed.get(name, {})))
            owner = next((o for o in changed_owners if name.startswith(o + ".")), None)
            # an attention module whose head count changed is swapped whole (its attributes changed too)
            replacements[owner or name] = work.get_submodule(owner) if owner else new
    for name, reason in skipped.items():
        rows.append(layer_row(name, "prune.structured", originals[name], None, skipped=reason))
    notes = ["Structured pruning removes whole channels / neurons: the pruned model holds fewer parameters and "
             "does fewer multiply-adds, so it is smaller and usually faster (measure with example inputs)."]
    if protected:
        notes.append("Kept untouched: " + ", ".join(f"{n} ({why})" for n, why in protected.items()) + ".")
    if config.scope == "global" and config.ratios:
        notes.append("Per-layer ratios apply in layer scope only; global scope ranked all groups together.")
    for reason in dict.fromkeys(held.values()):
        layers = [n for n, why in held.items() if why == reason]
        notes.append(f"Left whole ({len(layers)} layer(s)): {reason}.")
    if skipped:
        notes.append(f"{len(skipped)} group(s) skipped, named in the rows: " + ", ".join(skipped) + ".")
    if not replacements:
        notes.append("Nothing was pruned: every selected layer is protected, too small for this amount, or "
                      "coupled with an untouched layer; try keep_first=False or a larger amount.")
    return MethodResult(replacements, rows, notes)
