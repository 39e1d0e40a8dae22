"""Task metrics (classification, regression) and fidelity to the original model's outputs.

Written on torch rather than imported from scikit-learn so that ``core`` stays torch + numpy only;
tests check every function against scikit-learn on the same predictions.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["classification_metrics", "regression_metrics", "fidelity_metrics"]


def _flat(t: Any) -> torch.Tensor:
    return torch.as_tensor(t).detach().reshape(-1)


def classification_metrics(y_true: Any, y_pred: Any, *, num_classes: int | None = None) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1 and the same per class, from label vectors.

    Classes are those seen in ``y_true`` or ``y_pred`` (or ``range(num_classes)``); a class never
    predicted has precision 0, one never present has recall 0 (scikit-learn's ``zero_division=0``).
    """
    t, p = _flat(y_true).long(), _flat(y_pred).long()
    if t.numel() != p.numel() or t.numel() == 0:
        raise ValueError(f"y_true and y_pred need the same non-zero length; got {t.numel()} and {p.numel()}.")
    classes = (torch.arange(num_classes) if num_classes is not None
               else torch.unique(torch.cat([t, p])))
    tp = torch.stack([((p == c) & (t == c)).sum() for c in classes]).double()
    predicted = torch.stack([(p == c).sum() for c in classes]).double()
    actual = torch.stack([(t == c).sum() for c in classes]).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
    return {
        "accuracy": float((t == p).double().mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "per_class": {str(int(c)): {"precision": float(pr), "recall": float(rc), "f1": float(f), "support": int(a)}
                      for c, pr, rc, f, a in zip(classes, precision, recall, f1, actual)},
    }


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """MAE, MSE and R^2 (uniform average over outputs for 2-D targets, as scikit-learn)."""
    t, p = torch.as_tensor(y_true).double(), torch.as_tensor(y_pred).double()
    if t.shape != p.shape:
        p = p.reshape(t.shape)
    t2, p2 = (t.reshape(len(t), -1), p.reshape(len(p), -1)) if t.dim() else (t.reshape(1, 1), p.reshape(1, 1))
    err = p2 - t2
    ss_res = (err**2).sum(0)
    ss_tot = ((t2 - t2.mean(0)) ** 2).sum(0)
    # scikit-learn: a constant target gives R^2 = 1 if predicted exactly, else 0.
    r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300),
                     torch.where(ss_res == 0, torch.ones_like(ss_res), torch.zeros_like(ss_res)))
    return {"mae": float(err.abs().mean()), "mse": float((err**2).mean()), "r2": float(r2.mean())}


def fidelity_metrics(reference: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
    """How close ``output`` is to ``reference`` (same shape), with no labels needed.

    - ``top1_agreement``: share of rows whose argmax agrees (for >1 column outputs);
    - ``cosine``: mean row-wise cosine similarity;
    - ``kl_div``: mean KL(softmax(reference) || softmax(output)) over rows, in nats;
    - ``sqnr_db``: 10 log10(||reference||^2 / ||reference - output||^2) (inf when equal).
    """
    ref, out = reference.detach().double(), output.detach().double()
    if ref.shape != out.shape:
        raise ValueError(f"reference and output shapes differ: {tuple(ref.shape)} vs {tuple(out.shape)}.")
    r2 = ref.reshape(ref.shape[0], -1) if ref.dim() > 1 else ref.reshape(1, -1)
    o2 = out.reshape(r2.shape)
    noise = float(((r2 - o2) ** 2).sum())
    signal = float((r2**2).sum())
    metrics = {
        "cosine": float(torch.nn.functional.cosine_similarity(r2, o2, dim=1, eps=1e-12).mean()),
        "sqnr_db": math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf,
    }
    if r2.shape[1] > 1:
        metrics["top1_agreement"] = float((r2.argmax(1) == o2.argmax(1)).double().mean())
        logp, logq = r2.log_softmax(1), o2.log_softmax(1)
        metrics["kl_div"] = float((logp.exp() * (logp - logq)).sum(1).mean())
    return metrics
