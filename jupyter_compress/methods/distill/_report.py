"""The report of a distillation run: teacher ("before") against the best student ("after"), per-epoch
history, and notes saying which loss was used, which epoch was kept and whether the run was cut short."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...core.metrics import count_nonzero, count_params, model_bytes
from ...core.plan import Plan
from ...core.report import Report

__all__ = ["build_report"]


def build_report(run: Any, history: list[dict], status: str, best_epoch: int, best_value: float | None,
                 teacher_value: float | None, validator: Any, seed: int, seconds: float) -> Report:
    teacher, student = run.teacher, run.student
    config = run.config
    if run.kind != "auto":
        config = dataclasses.replace(config, loss=run.kind)
    notes = ["Distillation: 'before' is the teacher, 'after' the distilled student."] + list(run.notes)
    metrics_before: dict[str, Any] = {}
    metrics_after: dict[str, Any] = {}
    if validator is not None and best_value is not None:
        if teacher_value is not None:
            metrics_before[validator.name] = teacher_value
        metrics_after[validator.name] = best_value
        notes.append(f"Kept the student of epoch {best_epoch} (best {validator.name} {best_value:.4g}"
                     + (", the starting weights" if best_epoch == 0 else "") + ").")
    elif best_epoch:
        notes.append(f"No validation data: kept the student of the last whole epoch ({best_epoch}).")
    if status.startswith("interrupted"):
        notes.append(f"Interrupted: {status}; returning the best student so far (epoch {best_epoch}).")
    elif status.startswith("stopped"):
        notes.append(f"Early stopping: {status}.")
    trained = [h for h in history if "loss" in h]
    if trained:
        notes.append(f"Training loss {trained[0]['loss']:.4g} (epoch 1) -> {trained[-1]['loss']:.4g} "
                     f"(epoch {trained[-1]['epoch']}).")
    if status == "finished" and trained and trained[-1]["epoch"] == run.config.epochs and run.falling:
        notes.append(f"WARNING: the training loss was still falling at the last epoch (epochs={run.config.epochs} "
                     f"is a cap): the student may not have converged; allow more epochs (or a larger lr).")
    return Report(
        rows=[], plan=Plan.of(config, seed=seed).to_dict(),
        model_params_before=count_params(teacher), model_params_after=count_params(student),
        model_nonzeros_before=count_nonzero(teacher), model_nonzeros_after=count_nonzero(student),
        model_bytes_before=model_bytes(teacher), model_bytes_after=model_bytes(student),
        metrics_before=metrics_before, metrics_after=metrics_after,
        timings={"distill s": seconds}, notes=notes, history=history,
    )

