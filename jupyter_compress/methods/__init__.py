"""Built-in methods; importing this package registers them.

One module per family. tensorly is imported inside the decomposition functions
only, so ``import jupyter_compress`` stays light.
"""

from . import decompose, distill, nm, prune, quantize, runtime, schedule, sparsegpt, structured, wanda  # noqa: F401
from .decompose import CPConfig, LayerAnalysis, SVDConfig, TTConfig, TuckerConfig, spectrum
from .distill import DistillConfig
from .nm import NMConfig
from .prune import PruneConfig
from .quantize import (
    AWQConfig,
    ClusterConfig,
    DynamicQuantConfig,
    EmbeddingQuantConfig,
    GPTQConfig,
    HalfConfig,
    QATConfig,
    SmoothQuantConfig,
    StaticQuantConfig,
    WeightOnlyConfig,
)
from .runtime import RuntimeConfig
from .sparsegpt import SparseGPTConfig
from .structured import StructuredPruneConfig
from .wanda import WandaConfig

__all__ = ["NMConfig", "PruneConfig", "SVDConfig", "StructuredPruneConfig", "TuckerConfig", "CPConfig", "TTConfig",
           "LayerAnalysis", "spectrum", "DistillConfig", "DynamicQuantConfig", "HalfConfig", "QATConfig",
           "StaticQuantConfig", "WeightOnlyConfig", "RuntimeConfig", "GPTQConfig", "SparseGPTConfig", "WandaConfig",
           "AWQConfig", "SmoothQuantConfig", "EmbeddingQuantConfig", "ClusterConfig"]
