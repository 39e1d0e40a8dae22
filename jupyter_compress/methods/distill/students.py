"""Students derived from a teacher: narrower (structured pruning) or shallower (fewer of its repeated blocks,
initialised from the teacher's own blocks, as DistilBERT kept every other layer of BERT)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ...core.metrics import call_model, eval_mode
from ...core.modules import swap_submodule
from ...errors import CompressError, InvalidConfigError

__all__ = ["make_student", "layer_stack", "keep_indices"]


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


def _shallow(teacher: nn.Module, amount: float, layers: Any, example_inputs: Any) -> nn.Module:
    student = copy.deepcopy(teacher)
    name, start, stop = layer_stack(student)
    container = student.get_submodule(name) if name else student
    n = stop - start
    if layers is None:
        kept = keep_indices(n, max(1, round(n * (1 - amount))))
    else:
        kept = sorted(int(i) for i in layers)
        if not kept or kept[0] < 0 or kept[-1] >= n:
            raise InvalidConfigError(f"layers must index the {n} repeated blocks of {name or 'the model'!r} "
                                     f"(0..{n - 1}). Got {layers!r} instead.")
    items = list(container._modules.items())
    chosen = items[:start] + [items[start + i] for i in kept] + items[stop:]
    if isinstance(container, nn.ModuleList):
        new: nn.Module = nn.ModuleList([m for _, m in chosen])
    else:
        new = nn.Sequential(dict(chosen)) if not all(k.isdigit() for k, _ in chosen) else \
            nn.Sequential(*[m for _, m in chosen])
    if name:
        swap_submodule(student, name, new)
    else:
        student = new
    for module in student.modules():  # Hugging Face models record their depth in the config
        config = getattr(module, "config", None)
        if getattr(config, "num_hidden_layers", None) == n:
            config.num_hidden_layers = len(kept)
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
      with the teacher's weights, or the blocks numbered in ``layers``.
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
