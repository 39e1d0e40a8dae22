"""Built-in methods; importing this package registers them.

One module per family. tensorly is imported inside the decomposition functions
only, so ``import jupyter_compress`` stays light.
"""

from . import decompose, nm, prune, quantize, structured  # noqa: F401
from .decompose import SVDConfig
from .nm import NMConfig
from .prune import PruneConfig
from .quantize import DynamicQuantConfig, HalfConfig, QATConfig, StaticQuantConfig, WeightOnlyConfig
from .structured import StructuredPruneConfig

__all__ = ["DynamicQuantConfig", "HalfConfig", "NMConfig", "PruneConfig", "QATConfig", "SVDConfig", "StaticQuantConfig",
           "StructuredPruneConfig", "WeightOnlyConfig"]
