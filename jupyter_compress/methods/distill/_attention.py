"""Self-attention relation matching (MiniLM, Wang et al. 2020): the student's attention distributions
``softmax(Q K^T / sqrt(d))`` and value relations ``softmax(V V^T / sqrt(d))`` are pulled towards the
teacher's by a KL divergence, per head, averaged over the real (unpadded) query tokens.

The relations are L x L per head, so teacher and student may differ in width (each is split into the
teacher's number of heads). Forward hooks on an attention module's query / key / value projections record
Q, K and V whatever attention kernel runs (eager, SDPA, flash): ``query``/``key``/``value`` (BERT) or
``q_proj``/``k_proj``/``v_proj`` (BART, LLaMA, ...).
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import InvalidConfigError, SelectorError

__all__ = ["attention_pairs", "QKVTap", "relation", "relation_kl", "attention_loss", "padding_mask"]

_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))


def _projections(module: nn.Module) -> tuple[str, str, str] | None:
    children = dict(module.named_children())
    for names in _NAMES:
        if all(isinstance(children.get(n), nn.Linear) for n in names):
            return names
    return None


def heads_of(model: nn.Module, name: str) -> int:
    """The number of attention heads of the attention module ``name`` (its attribute or its model's config)."""
    module = model.get_submodule(name)
    for attr in ("num_attention_heads", "num_heads", "n_heads"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    for m in model.modules():
        value = getattr(getattr(m, "config", None), "num_attention_heads", None)
        if isinstance(value, int) and value > 0:
            return value
    raise InvalidConfigError(f"Cannot tell how many heads the attention module {name!r} has (no "
                             f"num_attention_heads / num_heads attribute or config).")


def attention_pairs(attention: Any, teacher: nn.Module, student: nn.Module) -> list[tuple[str, str]]:
    """``[(teacher attention module, student attention module)]`` from a dict or a list of pairs; each must
    have query / key / value (or q_proj / k_proj / v_proj) Linear children."""
    if not attention:
        return []
    pairs = list(attention.items()) if isinstance(attention, dict) else [tuple(p) for p in attention]
    for model, side, index in ((teacher, "teacher", 0), (student, "student", 1)):
        names = [n for n, m in model.named_modules() if n and _projections(m) is not None]
        for pair in pairs:
            if pair[index] not in names:
                close = difflib.get_close_matches(str(pair[index]), names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SelectorError(f"The {side} has no attention module named {pair[index]!r} with query / key / "
                                    f"value projections (attention).{hint}")
    return [(str(t), str(s)) for t, s in pairs]


class QKVTap:
    """Records the query, key and value projections of named attention modules while active."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.model, self.names, self.out = model, names, {}
        self._hooks: list[Any] = []

    def __enter__(self) -> dict[str, tuple[torch.Tensor, ...]]:
        self.out, parts = {}, {}
        for name in self.names:
            module = self.model.get_submodule(name)
            for slot, child in enumerate(_projections(module) or ()):
                def hook(m, i, o, name=name, slot=slot):
                    parts.setdefault(name, [None, None, None])[slot] = o
                    if all(p is not None for p in parts[name]):
                        self.out[name] = tuple(parts.pop(name))
                self._hooks.append(getattr(module, child).register_forward_hook(hook))
        return self.out

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def padding_mask(inputs: Any, like: torch.Tensor) -> torch.Tensor:
    """``(batch, length)`` with 1 for real tokens: the inputs' ``attention_mask`` when they carry one."""
    mask = inputs.get("attention_mask") if hasattr(inputs, "get") else None
    if isinstance(mask, torch.Tensor) and mask.shape == like.shape[:2]:
        return mask.to(like.device)
    return torch.ones(like.shape[:2], device=like.device)


def relation(x: torch.Tensor, y: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """Log of ``softmax(x_h y_h^T / sqrt(d))`` per head ``h``, padded keys left out: ``(B, heads, L, L)``."""
    b, length, width = x.shape
    if width % heads:
        raise InvalidConfigError(f"Cannot split width {width} into {heads} attention heads (attention matching).")
    d = width // heads
    xs = x.float().reshape(b, length, heads, d).transpose(1, 2)
    ys = y.float().reshape(b, length, heads, d).transpose(1, 2)
    scores = xs @ ys.transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``KL(teacher || student)`` of log-relations, summed over keys, averaged over real queries and heads."""
    rows = mask.float()[:, None, :, None]
    kl = (teacher.exp() * (teacher - student)).sum(-1, keepdim=True) * rows
    return kl.sum() / (rows.sum() * teacher.shape[1]).clamp(min=1.0)


def attention_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], heads: int,
                   mask: torch.Tensor) -> torch.Tensor:
    """Attention-distribution KL plus value-relation KL, from ``(Q, K, V)`` of the student and the teacher."""
    sq, sk, sv = student
    tq, tk, tv = teacher
    return (relation_kl(relation(sq, sk, heads, mask), relation(tq, tk, heads, mask), mask)
            + relation_kl(relation(sv, sv, heads, mask), relation(tv, tv, heads, mask), mask))
