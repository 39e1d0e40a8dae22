"""Students derived from a teacher: narrower (structured pruning) or shallower (fewer of its repeated blocks,
initialised from the teacher's own blocks, as DistilBERT kept every other layer of BERT)."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import torch
from torch import nn

from ...core.metrics import call_model, eval_mode, primary_output
from ...core.modules import swap_submodule
from ...errors import CompressError, InvalidConfigError

__all__ = ["make_student", "layer_stack", "keep_indices", "similar_layers"]


def _signature(module: nn.Module) -> tuple:
    return type(module), tuple((k, tuple(v.shape)) for k, v in module.state_dict().items())


def layer_stack(model: nn.Module) -> tuple[str, int, int]:
    """``(container name, start, stop)`` of the longest run of identical blocks (same class, same parameter
    shapes) inside an ``nn.Sequential`` / ``nn.ModuleList``; the run holding most parameters wins ties."""
    best: tuple[int, int, str, int, int] | None = None
    for name, container in model.named_modules():
        if not isinstance(container, (nn.Sequential, nn.ModuleList)):
            continue
        blocks = list(container)
        i = 0
        while i < len(blocks):
            j = i + 1
            while j < len(blocks) and _signature(blocks[j]) == _signature(blocks[i]):
                j += 1
            params = sum(p.numel() for b in blocks[i:j] for p in b.parameters())
            if j - i >= 2 and params and (best is None or (j - i, params) > best[:2]):
                best = (j - i, params, name, i, j)
            i = j
    if best is None:
        raise CompressError(f"make_student(kind='shallow') found no run of repeated blocks in this "
                            f"{type(model).__name__} (an nn.Sequential / nn.ModuleList of identical layers, as a "
                            f"transformer's encoder has); use kind='narrow', or build the student yourself.")
    return best[2], best[3], best[4]


def keep_indices(n: int, keep: int) -> list[int]:
    """``keep`` of ``n`` blocks spread evenly, the first and the last always kept (6 -> 3: [0, 2, 5])."""
    if keep >= n:
        return list(range(n))
    if keep == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (keep - 1)) for i in range(keep)})


def _assemble(model: nn.Module, name: str, items: list, start: int, stop: int, kept: list[int],
              configs: list) -> nn.Module:
    """``model`` with its stack ``name`` holding only blocks ``kept`` (the blocks themselves, not copies)."""
    chosen = items[:start] + [items[start + i] for i in kept] + items[stop:]
    container = model.get_submodule(name) if name else model
    if isinstance(container, nn.ModuleList):
        new: nn.Module = nn.ModuleList([m for _, m in chosen])
    else:
        new = nn.Sequential(dict(chosen)) if not all(k.isdigit() for k, _ in chosen) else \
            nn.Sequential(*[m for _, m in chosen])
    if name:
        swap_submodule(model, name, new)
    else:
        model = new
    for config in configs:  # Hugging Face models record their depth in the config
        config.num_hidden_layers = len(kept)
    return model


def _output_rows(model: nn.Module, example_inputs: Any) -> torch.Tensor:
    with eval_mode(model), torch.no_grad():
        out = primary_output(call_model(model, example_inputs))
    if out is None or not out.is_floating_point():
        raise CompressError("make_student(layers='similarity') compares the models' outputs, and this one "
                            "returned no floating-point tensor; pass layers=[...] instead.")
    return out.detach().double().reshape(-1, out.shape[-1]) if out.dim() > 1 else out.detach().double()[None]


def similar_layers(teacher: nn.Module, example_inputs: Any, keep: int, *, exhaustive_limit: int = 200
                   ) -> tuple[list[int], float]:
    """The ``keep`` blocks of the teacher's stack whose shallow model's output is most similar to the
    teacher's on ``example_inputs`` (mean row-wise cosine similarity), and that similarity.

    Every subset is tried when there are at most ``exhaustive_limit`` of them (6 blocks, 3 kept: 20), else
    blocks are removed greedily, each time the one whose removal changes the output least. The first and
    the last block are not forced; ties are broken by block number, so the choice is deterministic."""
    work = copy.deepcopy(teacher)
    name, start, stop = layer_stack(work)
    n = stop - start
    container = work.get_submodule(name) if name else work
    items = list(container._modules.items())
    configs = [m.config for m in work.modules()
               if getattr(getattr(m, "config", None), "num_hidden_layers", None) == n]
    reference = _output_rows(teacher, example_inputs)

    def score(kept: list[int]) -> float:
        model = _assemble(work, name, items, start, stop, kept, configs)
        rows = _output_rows(model, example_inputs)
        if rows.shape != reference.shape:
            return float("-inf")
        return float(torch.nn.functional.cosine_similarity(rows, reference, dim=-1).mean())

    keep = max(1, min(keep, n))
    if math.comb(n, keep) <= exhaustive_limit:
        best = max((score(list(c)), [-i for i in c]) for c in itertools.combinations(range(n), keep))
        return [-i for i in best[1]], best[0]
    kept, value = list(range(n)), 1.0
    while len(kept) > keep:
        value, drop = max((score([k for k in kept if k != d]), -d) for d in kept)
        kept.remove(-drop)
    return kept, value


def _shallow(teacher: nn.Module, amount: float, layers: Any, example_inputs: Any) -> nn.Module:
    student = copy.deepcopy(teacher)
    name, start, stop = layer_stack(student)
    container = student.get_submodule(name) if name else student
    n = stop - start
    keep = max(1, round(n * (1 - amount)))
    if layers is None:
        kept = keep_indices(n, keep)
    elif isinstance(layers, str):
        if layers != "similarity":
            raise InvalidConfigError(f"layers must be None (evenly spread), 'similarity' or a list of block "
                                     f"numbers. Got {layers!r} instead.")
        if example_inputs is None:
            raise InvalidConfigError("make_student(layers='similarity') runs the teacher on example inputs to "
                                     "compare its output with shallower ones: pass example_inputs=....")
        kept, _ = similar_layers(teacher, example_inputs, keep)
    else:
        kept = sorted(int(i) for i in layers)
        if not kept or kept[0] < 0 or kept[-1] >= n:
            raise InvalidConfigError(f"layers must index the {n} repeated blocks of {name or 'the model'!r} "
                                     f"(0..{n - 1}). Got {layers!r} instead.")
    items = list(container._modules.items())
    configs = [m.config for m in student.modules()
               if getattr(getattr(m, "config", None), "num_hidden_layers", None) == n]
    student = _assemble(student, name, items, start, stop, kept, configs)
    if example_inputs is not None:
        try:
            with eval_mode(student):
                call_model(student, example_inputs)
        except Exception as exc:
            raise CompressError(f"The shallow student fails to run with blocks {kept} of {name!r} kept "
                                f"({type(exc).__name__}: {exc}); the blocks may change shapes.") from exc
    return student


def make_student(teacher: nn.Module, kind: str = "shallow", *, amount: float = 0.5, layers: Any = None,
                 example_inputs: Any = None, **prune_options: Any) -> nn.Module:
    """A new student from ``teacher`` (which is left unchanged).

    - ``kind='narrow'``: structured pruning removes ``amount`` of the channels / neurons / heads
      (``prune.structured``; needs ``example_inputs``; other options go to StructuredPruneConfig);
    - ``kind='shallow'``: drops ``amount`` of the blocks of the longest stack of identical blocks (an
      ``nn.Sequential`` / ``nn.ModuleList``, e.g. BERT's ``encoder.layer``), keeping evenly spread ones
      with the teacher's weights, or the blocks numbered in ``layers``, or with ``layers='similarity'``
      (needs ``example_inputs``) the blocks whose shallow model's output on ``example_inputs`` is closest
      to the teacher's (``similar_layers``).
    """
    if kind not in ("narrow", "shallow"):
        raise InvalidConfigError(f"The 'kind' parameter of make_student must be 'narrow' or 'shallow'. "
                                 f"Got {kind!r} instead.")
    if not (isinstance(amount, (int, float)) and 0 <= amount < 1):
        raise InvalidConfigError(f"The 'amount' parameter of make_student must be a float in [0, 1). "
                                 f"Got {amount!r} instead.")
    if kind == "shallow":
        return _shallow(teacher, amount, layers, example_inputs)
    from ...core.apply import compress
    from ..structured import StructuredPruneConfig

    if example_inputs is None:
        raise InvalidConfigError("make_student(kind='narrow') traces the teacher: pass example_inputs=....")
    student, _ = compress(teacher, StructuredPruneConfig(amount=amount, **prune_options),
                          example_inputs=example_inputs)
    return student
