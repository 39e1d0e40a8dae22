"""Hugging Face specifics of structured pruning.

- ``transformers``' ``Conv1D`` (GPT-2: ``y = x @ W + b`` with ``W`` of shape ``(in, out)``) as a layer
  Torch-Pruning can trace and prune (:func:`customized_pruners`).
- Attention modules and their heads, by family (:func:`attention_specs`):
  ``separate``: q/k/v Linears pruned in whole heads through Torch-Pruning's groups (BERT, ViT, DistilBERT);
  ``fused``: GPT-2's one ``c_attn`` Conv1D holding q, k and v side by side, pruned here head by head
  (:func:`prune_fused_heads`) as Torch-Pruning cannot map head indices through its ``split``;
  ``kept``: heads left whole (T5: its relative position bias is computed by the first layer for all layers,
  so a layer cannot lose heads on its own), the MLP neurons are still pruned.
- After heads are removed, the attributes the module's forward reads (``num_attention_heads``,
  ``all_head_size``, ``n_heads``, ``inner_dim``, ``num_heads``, ``split_size``) follow the new count, layer by
  layer; the shared ``config`` is left as it was (per-layer counts may differ).

Nothing here imports ``transformers``: a model holding its layers has imported it already.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import nn

from ._common import Conv1D as HFConv1D  # the lazy stand-in for transformers' Conv1D
from ._common import hf_conv1d_class as conv1d_class
from ._groups import attention_heads

__all__ = ["HFConv1D", "conv1d_class", "customized_pruners", "has_conv1d", "group_scores", "AttentionSpec", "attention_specs",
           "head_attributes_update", "fused_head_scores", "prune_fused_heads", "uses_hf", "width_reason",
           "attention_roles", "GroupHolds"]


@functools.lru_cache(maxsize=1)
def _conv1d_pruner_class():
    from torch_pruning.pruner.function import BasePruningFunc

    class Conv1DPruner(BasePruningFunc):
        """Torch-Pruning pruner for transformers' Conv1D: weight ``(in, out)``, bias ``(out,)``, ``nf`` = out."""

        def prune_out_channels(self, layer: nn.Module, idxs):
            keep = sorted(set(range(layer.weight.shape[1])) - set(idxs))
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
            if getattr(layer, "bias", None) is not None:
                layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
            layer.nf = len(keep)
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs):
            keep = sorted(set(range(layer.weight.shape[0])) - set(idxs))
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
            if hasattr(layer, "nx"):
                layer.nx = len(keep)
            return layer

        def get_out_channels(self, layer: nn.Module):
            return layer.weight.shape[1]

        def get_in_channels(self, layer: nn.Module):
            return layer.weight.shape[0]

    return Conv1DPruner


def customized_pruners() -> dict:
    """``{layer type: pruner}`` for Torch-Pruning's ``build_dependency`` (transformers' Conv1D when loaded)."""
    real = conv1d_class()
    return {real: _conv1d_pruner_class()()} if real is not None else {}


def has_conv1d(group) -> bool:
    return any(isinstance(dep.target.module, HFConv1D) for dep, _ in group)


def group_scores(group, graph, channels: int, p: int, taylor: bool = False) -> torch.Tensor | None:
    """Per-channel importance of a Torch-Pruning group holding Conv1D layers (Torch-Pruning's importance skips
    them): the p-norm of each channel's weights (``|w * grad|`` for taylor) over the group's Linear / Conv1D
    members, summed on the root's channels."""
    total, found = torch.zeros(channels, dtype=torch.float64), False
    for i, (dep, idxs) in enumerate(group):
        layer, roots = dep.target.module, group[i].root_idxs
        if isinstance(layer, HFConv1D):
            weight = _magnitude(layer.weight, p, taylor).t()  # (out, in)
        elif isinstance(layer, nn.Linear):
            weight = _magnitude(layer.weight, p, taylor)
        else:
            continue
        idxs = [int(getattr(k, "idx", k)) for k in idxs]
        if roots is None or len(roots) != len(idxs) or any(r is None for r in roots):
            continue
        out = graph.is_out_channel_pruning_fn(dep.handler)
        imp = (weight[idxs] if out else weight.t()[idxs]).sum(dim=1)
        bias = getattr(layer, "bias", None)
        if out and isinstance(bias, torch.Tensor):
            imp = imp + _magnitude(bias, p, taylor)[idxs]
        total.index_add_(0, torch.as_tensor([int(r) for r in roots]), imp.double())
        found = True
    return total.float() if found else None


def _magnitude(t: torch.Tensor, p: int, taylor: bool) -> torch.Tensor:
    grad = t.grad if taylor else None
    value = t.detach() * grad if grad is not None else t.detach()
    return value.abs().float().pow(p).cpu()


def uses_hf(model: nn.Module) -> bool:
    """Whether ``model`` is or holds a Hugging Face model (a module with a ``config`` that has ``to_dict``)."""
    return any(hasattr(getattr(m, "config", None), "to_dict") for m in model.modules())


# ---------------------------------------------------------------------------------------------------------
# attention heads

@dataclasses.dataclass
class AttentionSpec:
    kind: str                 # "separate", "fused" or "kept"
    heads: int
    head_dim: int
    projections: list[str]    # full names of the q/k/v (or fused) projections
    output: str | None = None  # the output projection (fused: its rows are the heads)
    reason: str = ""          # why the heads are kept ("kept")


_HEADS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
_SIZE = ("attention_head_size", "head_dim", "key_value_proj_dim", "d_kv")


def _int_attr(module: nn.Module, names) -> int | None:
    for attr in names:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _out_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, HFConv1D):
        return module.weight.shape[1]
    return None


def attention_specs(model: nn.Module) -> dict[str, AttentionSpec]:
    """``{attention module name: AttentionSpec}`` for modules that declare a head count and head size."""
    out: dict[str, AttentionSpec] = {}
    for name, module in model.named_modules():
        heads, size = _int_attr(module, _HEADS), _int_attr(module, _SIZE)
        if heads is None or size is None or heads < 2:
            continue
        inner = heads * size
        prefix = f"{name}." if name else ""
        children = dict(module.named_children())
        per_head = [prefix + n for n, c in children.items() if _out_features(c) == inner and isinstance(c, nn.Linear)]
        fused = children.get("c_attn")
        if isinstance(fused, HFConv1D) and _out_features(fused) == 3 * inner and not hasattr(module, "q_attn"):
            output = children.get("c_proj")
            if isinstance(output, HFConv1D) and output.weight.shape[0] == inner:
                out[name] = AttentionSpec("fused", heads, size, [prefix + "c_attn"], prefix + "c_proj")
            continue
        if not per_head:
            continue
        if hasattr(module, "has_relative_attention_bias") or type(module).__name__.startswith(("T5", "MT5", "UMT5")):
            output = next((prefix + n for n, c in children.items()
                           if isinstance(c, nn.Linear) and c.in_features == inner), None)
            out[name] = AttentionSpec(
                "kept", heads, size, per_head, output,
                reason=f"{type(module).__name__}: heads kept (the relative position bias is computed once, in the "
                       f"first layer, for all layers' heads, so a layer cannot lose heads on its own); its MLP "
                       f"neurons are pruned")
            continue
        out[name] = AttentionSpec("separate", heads, size, per_head)
    return out


def head_attributes_update(module: nn.Module, removed: int, head_dim: int) -> None:
    """Set the attributes a Hugging Face attention forward reads to the head count left after pruning."""
    for attr in _HEADS:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(module, attr, value - removed)
    for attr in ("all_head_size", "inner_dim", "split_size"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(module, attr, value - removed * head_dim)


def _fused_index(spec: AttentionSpec, head_ids) -> list[int]:
    inner = spec.heads * spec.head_dim
    return [part * inner + h * spec.head_dim + j for part in range(3) for h in head_ids for j in range(spec.head_dim)]


def fused_head_scores(model: nn.Module, spec: AttentionSpec, p: int, taylor: bool = False) -> torch.Tensor:
    """One score per head of a fused q/k/v projection: the p-norm of its columns (q, k and v) and bias
    entries, plus its rows of the output projection (``|w * grad|`` instead of ``|w|`` for taylor)."""
    qkv, proj = model.get_submodule(spec.projections[0]), model.get_submodule(spec.output)

    def mag(t: torch.Tensor) -> torch.Tensor:
        return _magnitude(t, p, taylor)

    scores = []
    for h in range(spec.heads):
        cols = _fused_index(spec, [h])
        rows = list(range(h * spec.head_dim, (h + 1) * spec.head_dim))
        total = mag(qkv.weight)[:, cols].sum() + mag(proj.weight)[rows].sum()
        if getattr(qkv, "bias", None) is not None:
            total = total + mag(qkv.bias)[cols].sum()
        scores.append(total)
    return torch.stack(scores)


def prune_fused_heads(model: nn.Module, owner: str, spec: AttentionSpec, head_ids: list[int]) -> None:
    """Remove heads ``head_ids`` of a fused q/k/v attention (GPT-2) and update its attributes."""
    pruner = _conv1d_pruner_class()()
    qkv, proj = model.get_submodule(spec.projections[0]), model.get_submodule(spec.output)
    pruner.prune_out_channels(qkv, _fused_index(spec, head_ids))
    pruner.prune_in_channels(proj, [h * spec.head_dim + j for h in head_ids for j in range(spec.head_dim)])
    head_attributes_update(model.get_submodule(owner), len(head_ids), spec.head_dim)


def width_reason(module: Any) -> str | None:
    """Why a group that changes ``module``'s output width must be left alone in a Hugging Face model, or None.

    Embeddings, normalization layers and raw parameters carry the hidden size (the residual stream), which the
    config, the position embeddings and tied output heads rely on."""
    if isinstance(module, nn.Parameter):
        return "it would change the model's hidden size (a raw parameter of the residual stream)"
    if isinstance(module, nn.Embedding):
        return "it would change the model's hidden size (the embeddings, the config's hidden size)"
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith("Norm"):
        return "it would change the model's hidden size (the residual stream through the layer norms)"
    return None


def attention_roles(work: nn.Module):
    """``heads``: {q/k/v Linear: (attention module, head size)} pruned in whole heads through the graph;
    ``fused``: {fused q/k/v projection: (attention module, spec)} pruned here; ``kept``: {projection: why its
    heads stay}."""
    heads = attention_heads(work)
    fused, kept = {}, {}
    for owner, spec in attention_specs(work).items():
        if spec.kind == "separate":
            heads.update({p: (owner, spec.head_dim) for p in spec.projections})
        elif spec.kind == "fused":
            fused[spec.projections[0]] = (owner, spec)
            heads.pop(spec.projections[0], None)
        else:
            for p in [*spec.projections, spec.output]:
                heads.pop(p, None)
                if p:
                    kept[p] = spec.reason
    return heads, fused, kept


class GroupHolds:
    """Why a dependency group must be left alone: it changes the hidden size of a Hugging Face model, a weight
    tied to another layer (GPT-2's ``lm_head`` is ``wte``), or an attention whose heads are kept."""

    def __init__(self, work: nn.Module, graph, name_of: dict, kept: dict[str, str]) -> None:
        owners: dict[int, list[str]] = {}
        for name, module in work.named_modules(remove_duplicate=False):
            for weight in module._parameters.values():
                if weight is not None:
                    owners.setdefault(id(weight), []).append(name)
        self.tied = {n: ns for ns in owners.values() if len(set(ns)) > 1 for n in ns}
        self.graph, self.name_of, self.kept, self.hf = graph, name_of, kept, uses_hf(work)

    def reason(self, group) -> str | None:
        for dep, _ in group:
            module, name = dep.target.module, self.name_of.get(dep.target.module)
            width = width_reason(module) if self.hf and self.graph.is_out_channel_pruning_fn(dep.handler) else None
            if width:
                return width
            if name in self.tied:
                pair = " and ".join(f"'{n}'" for n in dict.fromkeys(self.tied[name]))
                return f"it would change the weight shared by {pair} (tied weights are kept tied and whole)"
            if name in self.kept:
                return self.kept[name]
        return None
