"""Distillation losses, and the rule that picks one from what the models return.

- ``kd``: soft-target KL at temperature T, scaled by T^2 so its gradients keep their size as T
  changes, mixed with cross-entropy on hard labels by ``alpha`` (Hinton, Vinyals & Dean 2015);
- ``mse``: mean squared error to the teacher's outputs (regressors, hidden states);
- ``cosine``: 1 - cosine similarity along the last dimension (sentence embeddings).

torch's ``kl_div`` / ``cross_entropy`` / ``cosine_similarity`` do the arithmetic; we only combine them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ...errors import InvalidConfigError

__all__ = ["LOSSES", "soft_target_loss", "kd_loss", "cosine_loss", "output_loss", "choose_loss", "check_shapes"]

LOSSES = ("auto", "kd", "mse", "cosine")


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over rows (all dims but the last)."""
    s = student.reshape(-1, student.shape[-1]).float()
    t = teacher.reshape(-1, teacher.shape[-1]).float()
    kl = F.kl_div(F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1), reduction="batchmean",
                  log_target=True)
    return kl * (T * T)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor | None, *, T: float,
            alpha: float) -> torch.Tensor:
    """Hinton's loss: ``alpha * soft_target_loss + (1 - alpha) * cross_entropy(student, targets)``;
    without targets, the soft-target term alone."""
    soft = soft_target_loss(student, teacher, T)
    if targets is None:
        return soft
    hard = F.cross_entropy(student.reshape(-1, student.shape[-1]).float(), targets.reshape(-1).long())
    return alpha * soft + (1 - alpha) * hard


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(student_i, teacher_i)`` over rows (the last dimension is the embedding)."""
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def output_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor | None, *,
                T: float, alpha: float) -> torch.Tensor:
    """The loss ``kind`` on outputs; float targets of the output's shape are mixed in by ``alpha`` for
    ``mse`` / ``cosine`` (a regressor's labels), other targets are ignored there."""
    if kind == "kd":
        return kd_loss(student, teacher, targets, T=T, alpha=alpha)
    base = F.mse_loss if kind == "mse" else cosine_loss
    loss = base(student.float(), teacher.float())
    if targets is not None and targets.is_floating_point() and targets.shape == student.shape:
        loss = alpha * loss + (1 - alpha) * base(student.float(), targets.float())
    return loss


def choose_loss(output: Any, tensor: torch.Tensor, targets: torch.Tensor | None) -> tuple[str, str]:
    """``(loss kind, why)`` for ``loss='auto'`` from the teacher's raw output and the targets."""
    if hasattr(output, "keys"):
        if "sentence_embedding" in output:
            return "cosine", "the model returns sentence embeddings"
        if "logits" in output:
            return "kd", "the model returns logits"
        return "mse", "the model returns hidden states"
    if targets is not None:
        if targets.is_floating_point():
            return "mse", "the targets are real numbers (a regressor)"
        return "kd", "the targets are class labels (a classifier)"
    if tensor.dim() >= 2 and tensor.shape[-1] >= 2:
        return "kd", ("unlabelled data and an output with a class dimension, read as logits "
                      "(pass loss='mse' or 'cosine' for embeddings)")
    return "mse", "the output has no class dimension"


def check_shapes(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise InvalidConfigError(
            f"The student's output has shape {tuple(student.shape)} but the teacher's has "
            f"{tuple(teacher.shape)}; give the student a matching head, or match intermediate layers with "
            f"features={{'teacher.layer': 'student.layer'}} and output_weight=0.")
