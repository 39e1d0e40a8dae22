"""jupyter_compress: compress live PyTorch models from a notebook.

    >>> from jupyter_compress import compress, Plan, PruneConfig, SVDConfig
    >>> small, report = compress(model, Plan.of(SVDConfig(rank=0.5), PruneConfig(amount=0.5)))

In a notebook: ``%load_ext jupyter_compress`` then ``%compress model --prune 0.5 --as small``.
Importing this package does not import IPython, ipywidgets, bokeh or tensorly.
"""

__version__ = "0.1.0"

from .core.apply import applied_plans, compress, compress_, forget_undo, revert_
from .core.config import MethodConfig
from .core.metrics import accuracy, count_nonzero, count_params, measure_latency, model_bytes, state_dict_hash
from .core.plan import Plan, Step
from .core.registry import get_method, list_methods, register_method
from .core.report import LayerRow, Report
from .core.selection import Selector
from .errors import (
    CompressError,
    InvalidConfigError,
    LayerNotSupportedError,
    NothingToRevertError,
    PlanError,
    SchemaVersionError,
    SelectorError,
    UnknownMethodError,
)
from .methods import NMConfig, PruneConfig, StructuredPruneConfig, SVDConfig
from .methods.quantize import DynamicQuantConfig, HalfConfig, QATConfig, StaticQuantConfig, WeightOnlyConfig

__all__ = [
    "__version__",
    "compress",
    "compress_",
    "revert_",
    "forget_undo",
    "applied_plans",
    "Plan",
    "Step",
    "Selector",
    "Report",
    "LayerRow",
    "MethodConfig",
    "PruneConfig",
    "SVDConfig",
    "StructuredPruneConfig",
    "NMConfig",
    "DynamicQuantConfig",
    "StaticQuantConfig",
    "WeightOnlyConfig",
    "HalfConfig",
    "QATConfig",
    "register_method",
    "get_method",
    "list_methods",
    "count_params",
    "count_nonzero",
    "model_bytes",
    "measure_latency",
    "accuracy",
    "state_dict_hash",
    "CompressError",
    "InvalidConfigError",
    "SelectorError",
    "PlanError",
    "UnknownMethodError",
    "SchemaVersionError",
    "LayerNotSupportedError",
    "NothingToRevertError",
    "load_ipython_extension",
]


def load_ipython_extension(ipython):  # pragma: no cover - exercised through a real shell in tests
    """``%load_ext jupyter_compress``: registers the %compress magics (IPython imported only here)."""
    from .magics import load_ipython_extension as _load

    _load(ipython)
