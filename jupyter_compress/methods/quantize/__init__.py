"""Quantization methods: dynamic int8 (routes measured: OpenVINO, ONNX Runtime or torch), static int8,
weight-only int8/int4 (round-to-nearest, GPTQ or activation-aware AWQ), fp16/bf16, and activation smoothing
before int8.

Importing this package registers them. onnxruntime is imported only when its route runs.
"""

from . import awq, cluster, dynamic, embedding, gptq, qat, smoothquant, static, weight  # noqa: F401
from ._common import BackendUnavailableError, CalibrationDataError
from .awq import AWQConfig
from .cluster import ClusterConfig, finetune_centroids
from .dynamic import DynamicQuantConfig
from .embedding import EmbeddingQuantConfig
from .gptq import GPTQConfig
from .qat import QATConfig
from .smoothquant import SmoothQuantConfig
from .static import StaticQuantConfig
from .weight import HalfConfig, WeightOnlyConfig

__all__ = ["AWQConfig", "BackendUnavailableError", "CalibrationDataError", "ClusterConfig", "finetune_centroids", "DynamicQuantConfig",
           "EmbeddingQuantConfig", "GPTQConfig", "HalfConfig",
           "QATConfig", "SmoothQuantConfig", "StaticQuantConfig", "WeightOnlyConfig"]
