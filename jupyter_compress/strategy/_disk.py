"""``auto(objective='disk')``: the bytes of the compact artifact (``save(model, plan, path, compact=True)``,
codec zstd), with options of different stages stacked on one layer (Deep Compression's prune, then share).

Two measures, one real and one estimated:

- every plan ``auto`` tries is measured for real: :func:`compact_artifact_bytes` writes its compact artifact
  and counts its bytes;
- a sensitivity point (one method, one setting, one unit) is estimated by :func:`unit_compact_bytes`: the
  tensors the point changed (those whose value, shape or dtype differs, the new ones and the removed ones)
  encoded by the compact format itself (:func:`~jupyter_compress.io.compact.encode`: sparse forms, packed
  integer codes, byte planes), before and after, the encoded bytes then through zstd at level 3 instead of
  the artifact's 19: within about 1% of it on float weights and ~100x faster (a few ms for a 300 x 784 layer).

Stacking. Under 'disk' each unit may hold one option per *stage* (a sparsity option and a precision option on
the same layers: prune, then cluster). The sweep measures each alone, so a stack is estimated, multiplicatively:
each option keeps a fraction ``after / before`` of the unit's encoded bytes and the stack keeps their product,
``before * prod(after_i / before)``; its drop is the sum of its options' drops (the search's first-order rule).
A stack is one more option for its unit: it replaces the unit's single options in the greedy choice like any
option on the same layers, so options of one stage still replace each other. Only options on exactly the same
layers stack (a coupled group of structured pruning does not stack with per-layer options). Every plan is then
verified by a real evaluation and a real artifact, so an optimistic stack costs a trial, not a wrong answer.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch
from torch import nn

from ..core.registry import STAGES
from ._search import Option

__all__ = ["OBJECTIVES", "objective_of", "unit_compact_bytes", "compact_artifact_bytes", "Stack", "disk_options"]

# objective names auto accepts -> the objective they mean
OBJECTIVES = {"size": "size", "latency": "latency", "disk": "disk", "artifact": "disk"}
_ESTIMATE_LEVEL = 3  # zstd level of the per-point estimate (the artifact uses 19; see the module docstring)


def objective_of(value: Any) -> str | None:
    """The objective ``value`` names ('artifact' is 'disk'), or None."""
    return OBJECTIVES.get(value) if isinstance(value, str) else None


def _encoded(tensors: dict[str, torch.Tensor]) -> int:
    if not tensors:
        return 0
    import zstandard

    from ..io.compact import encode

    payload, _ = encode(tensors, "none")  # 'none': the compact format's own bytes, table included
    return len(zstandard.ZstdCompressor(level=_ESTIMATE_LEVEL).compress(payload.numpy().tobytes()))


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous()


def unit_compact_bytes(before: nn.Module, after: nn.Module) -> dict[str, int]:
    """``{'compact_before', 'compact_after'}``: the estimated compact bytes of the tensors that differ between
    the two models' state_dicts (see the module docstring)."""
    old, new = before.state_dict(), after.state_dict()

    def same(key: str) -> bool:
        a, b = old[key], new[key]
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))

    gone = {k: _cpu(v) for k, v in old.items() if isinstance(v, torch.Tensor) and (k not in new or not same(k))}
    came = {k: _cpu(v) for k, v in new.items() if isinstance(v, torch.Tensor) and (k not in old or not same(k))}
    return {"compact_before": _encoded(gone), "compact_after": _encoded(came)}


def compact_artifact_bytes(model: nn.Module, plan: Any) -> int:
    """The measured bytes of the compact artifact (codec zstd) that ``save(model, plan, path, compact=True)``
    writes; only that file is written (a trial's rank needs no dense one)."""
    import tempfile
    from pathlib import Path

    from ..io.artifact import save

    with tempfile.TemporaryDirectory() as folder:
        return save(model, plan, Path(folder) / "compact.safetensors", compact=True, codec="zstd").stat().st_size


@dataclasses.dataclass(frozen=True)
class Stack:
    """Options of different stages on the same layers, applied together (in stage order by ``plan_of``)."""

    parts: tuple[Option, ...]
    drop: float
    saving: float

    @property
    def layers(self) -> tuple[str, ...]:
        return self.parts[0].layers

    @property
    def stage(self) -> tuple[int, int, str]:
        return min(p.stage for p in self.parts)

    @property
    def method(self) -> str:
        return "+".join(p.method for p in self.parts)


def _single(points: list[dict[str, Any]]) -> list[tuple[Option, float, float]]:
    """(option, unit bytes before, after) for each point with a compact estimate that saves bytes."""
    out = []
    for p in points:
        if p.get("skipped") or "compact_after" not in p or p["compact_after"] >= p["compact_before"]:
            continue
        option = Option(p["method"], p["family"], tuple(sorted(p["setting"].items())), tuple(p["layers"]),
                        max(float(p["drop"]), 0.0), float(p["compact_before"] - p["compact_after"]))
        out.append((option, float(p["compact_before"]), float(p["compact_after"])))
    return out


def disk_options(points: list[dict[str, Any]]) -> list[Option | Stack]:
    """The options of a 'disk' search: each point's option (saving: its estimated compact bytes saved), and
    for each unit every stack of one option per stage, two stages or more (see the module docstring)."""
    single = _single(points)
    by_unit: dict[tuple[str, ...], dict[tuple, list[tuple[Option, float, float]]]] = {}
    for item in single:  # grouped by stage (sparsity, precision, ...), not by method: one option per stage
        by_unit.setdefault(item[0].layers, {}).setdefault(item[0].stage[0], []).append(item)
    out: list[Option | Stack] = [item[0] for item in single]
    for stages in by_unit.values():
        groups = [stages[s] for s in sorted(stages)]
        for size in range(2, len(groups) + 1):
            for chosen in itertools.combinations(groups, size):
                # every part but the last must leave the layer's type as it was, or the next step cannot take
                # it (a Tucker factorization, then pruning 'conv2', finds a TuckerConv2d; int8, then
                # sharing, a quantized layer): sparsity steps zero weights in place, the others replace it
                if any(group[0][0].stage[0] != STAGES["sparsity"] for group in chosen[:-1]):
                    continue
                for combo in itertools.product(*chosen):
                    before = max(b for _, b, _ in combo)
                    kept = before
                    for _, b, a in combo:
                        kept *= a / b if b > 0 else 1.0
                    out.append(Stack(tuple(o for o, _, _ in combo), sum(o.drop for o, _, _ in combo),
                                     before - kept))
    return out
