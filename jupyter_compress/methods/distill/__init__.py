"""Knowledge distillation: ``distill(student, teacher, data)``, students derived from a teacher, and a
``distill`` plan step that recovers what compression lost."""

from . import procedure  # noqa: F401  (registers the 'distill' method)
from ._config import DistillConfig
from .losses import cosine_loss, kd_loss, soft_target_loss
from .students import keep_indices, layer_stack, make_student, similar_layers
from .trainer import distill

__all__ = ["DistillConfig", "distill", "make_student", "layer_stack", "keep_indices", "similar_layers", "kd_loss",
           "soft_target_loss", "cosine_loss"]
