"""``distill`` as a plan step: recover what earlier steps lost by distilling from the model as it was
before the plan ("compress, then distil to recover").

The core's contract is per-layer replacements, and this step is model-wide: it trains a copy of the
whole (already compressed) model and returns its top-level children as the replacements, so the core's
undo record keeps the original children and ``revert_`` stays bit-exact. Layers the selector leaves out
(and parameters held by the root module itself) are frozen. The teacher comes from ``ctx.original()``:
the user's untouched model under ``compress``, a rebuilt copy under ``compress_``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ...core.registry import MagicOption, MethodResult, register_method
from ...core.textvalues import parse_count
from ...errors import CompressError, InvalidConfigError, LayerNotSupportedError
from .._common import layer_row
from ._config import DistillConfig
from .trainer import distill

__all__ = ["apply_distill"]


def _change(old: nn.Module, new: nn.Module) -> float:
    a = torch.cat([p.detach().double().reshape(-1) for p in old.parameters()] or [torch.zeros(1)])
    b = torch.cat([p.detach().double().reshape(-1) for p in new.parameters()] or [torch.zeros(1)])
    norm = float(a.norm())
    return float((a - b).norm()) / norm if norm else 0.0


def _at_budget(model: nn.Module, budget: float, *, labelled: bool = False, **_: object):
    """compare's candidate: recovery training needs labelled pairs to be measured against the task."""
    return [DistillConfig()] if labelled else "needs labelled training data (data=(X, y))"


@register_method(
    "distill",
    DistillConfig,
    supported=(nn.Module,),
    family="distillation",
    help="Recovery training: distil the compressed model from the model as it was before the plan, for a "
         "few epochs on data (labels optional); the selector picks the layers that train.",
    requires=("data",),
    aliases=("recover",),
    stage="recovery",
    options=(MagicOption("--distill", "EPOCHS", parse_count, lambda v: {"epochs": v}, const=DistillConfig.epochs,
                         help="after the other steps, recover accuracy by distilling from the original model (needs "
                         f"--data); alone, up to {DistillConfig.epochs} epochs, stopping once the loss stops "
                         "improving"),),
    whole_model=True,
    in_panel=False,
    sweep=False,
    changes_modules=False,
    compare=("distillation", _at_budget),
)
def apply_distill(model: nn.Module, names: list[str], config: DistillConfig, ctx) -> MethodResult:
    if ctx.data is None:
        raise InvalidConfigError("distill trains on data: pass data=(X, y), a tensor X or a DataLoader to "
                                 "compress (labels are optional).")
    if getattr(ctx, "original", None) is None:
        raise CompressError("distill as a plan step needs the model before the plan; run it through compress().")
    children = [n for n, m in model.named_children()
                if any(True for _ in m.parameters()) or any(True for _ in m.buffers())]
    if not children:
        raise LayerNotSupportedError(f"distill as a plan step replaces the model's submodules, and this "
                                     f"{type(model).__name__} has none; call jupyter_compress.distill() instead.")
    teacher = ctx.original()
    student = copy.deepcopy(model)
    trainable = {id(p) for n in names for p in student.get_submodule(n).parameters()}
    flags = {p: p.requires_grad for p in student.parameters()}
    frozen = [p for p in student.parameters() if id(p) not in trainable and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        options = {k: v for k, v in config.to_dict().items() if k != "batch_size"}
        student, report = distill(student, teacher, ctx.data, batch_size=config.batch_size,
                                  seed=ctx.seed + ctx.step_index, inplace=True, **options)
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    originals = dict(model.named_children())
    rows = [layer_row(n, "distill", originals[n], student.get_submodule(n),
                      error=_change(originals[n], student.get_submodule(n)), error_kind="weight_change",
                      detail={"epochs": config.epochs}) for n in children]
    notes = [n for n in report.notes if not n.startswith("Distillation: 'before'")]
    if frozen:
        notes.append(f"distill: {len(frozen)} parameter tensor(s) outside the selection were kept frozen.")
    return MethodResult({n: student.get_submodule(n) for n in children}, rows, notes)
