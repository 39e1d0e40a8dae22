"""Quantization methods: dynamic int8 (ONNX Runtime or torch), static int8, weight-only int8/int4 (round-to-nearest
or GPTQ), fp16/bf16.

Importing this package registers them. onnxruntime is imported only when its route runs.
"""

from . import dynamic, gptq, qat, static, weight  # noqa: F401
from ._common import BackendUnavailableError, CalibrationDataError
from .dynamic import DynamicQuantConfig
from .gptq import GPTQConfig
from .qat import QATConfig
from .static import StaticQuantConfig
from .weight import HalfConfig, WeightOnlyConfig

__all__ = ["BackendUnavailableError", "CalibrationDataError", "DynamicQuantConfig", "GPTQConfig", "HalfConfig", "QATConfig", "StaticQuantConfig", "WeightOnlyConfig"]
