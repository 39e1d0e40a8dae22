"""The distillation options as a method config (checked fields, help texts, plan round-trips)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...core.config import Boolean, Constraint, IntAtLeast, Interval, MethodConfig, param
from .losses import LOSSES

__all__ = ["DistillConfig", "SCHEDULES"]

SCHEDULES = ("constant", "linear")


class LayerMap(Constraint):
    """None, or a mapping from teacher layer names to student layer names."""

    def check(self, value: Any) -> bool:
        return value is None or isinstance(value, dict) and len(value) <= 10_000 and all(
            isinstance(k, str) and 0 < len(k) <= 1000 and isinstance(v, str) and 0 < len(v) <= 1000
            for k, v in value.items())

    def describe(self) -> str:
        return "None or a dict from teacher layer names to student layer names, e.g. {'layer3': 'layer3'}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillConfig(MethodConfig):
    """Knowledge distillation: train a student to mimic a teacher (as a plan step: recover the compressed
    model by distilling from the model as it was before the plan)."""

    epochs: int = param(50, help="the most passes over the data: training stops earlier when the loss stops "
                        "improving (see patience), and the report says when it was still falling at the end",
                        check=IntAtLeast(1))
    lr: float = param(3e-3, help="learning rate (AdamW); lower it (1e-4 .. 1e-5) for pretrained transformers",
                      check=Interval(0.0, 10.0, "(]"))
    patience: int = param(5, help="stop when the training loss (the validation metric, with val_data) has not "
                          "improved by a relative 1e-3 for this many epochs; 0 always runs all epochs",
                          check=IntAtLeast(0))
    T: float = param(4.0, help="softmax temperature of the soft targets ('kd' loss)", check=Interval(0.0, 100.0, "(]"))
    alpha: float = param(0.5, help="weight of the distillation loss; 1 - alpha goes to the hard labels (when "
                         "the data has labels)", check=Interval(0.0, 1.0))
    loss: str = param("auto", help="'kd' (soft-target KL + labels, classifiers), 'mse' (regressors, hidden "
                      "states), 'cosine' (embeddings) or 'auto' (chosen from the outputs and targets)",
                      choices=LOSSES)
    batch_size: int = param(64, help="batch size for (X, y) / tensor data", check=IntAtLeast(1))
    weight_decay: float = param(0.0, help="AdamW weight decay", check=Interval(0.0, 1.0))
    features: dict | None = param(None, help="intermediate layers to match, {teacher layer: student layer}; a "
                                  "learned projection bridges different widths", check=LayerMap())
    feature_weight: float = param(1.0, help="weight of the feature-matching loss", check=Interval(0.0, 1e6))
    attention: dict | None = param(None, help="self-attention modules to match, {teacher module: student module} "
                                   "(MiniLM: KL of attention distributions and of value relations; modules with "
                                   "query/key/value or q_proj/k_proj/v_proj projections)", check=LayerMap())
    attention_weight: float = param(1.0, help="weight of the attention-relation loss", check=Interval(0.0, 1e6))
    output_weight: float = param(1.0, help="weight of the output loss (0 to distil features only)",
                                 check=Interval(0.0, 1e6))
    schedule: str = param("constant", help="learning-rate schedule: 'constant', or 'linear' (a linear warmup over "
                          "the first `warmup` fraction of the steps of all `epochs`, then a linear decay to 0)",
                          choices=SCHEDULES)
    warmup: float = param(0.1, help="fraction of the steps spent warming the learning rate up ('linear' schedule)",
                          check=Interval(0.0, 1.0, "[)"))
    keep_zeros: bool = param(True, help="weight matrices / kernels keep their exact zeros (the sparsity left "
                             "by unstructured or N:M pruning survives training)", check=Boolean())
