"""jupyter_compress: compress live PyTorch models from a notebook.

    >>> from jupyter_compress import compress, Plan, PruneConfig, SVDConfig
    >>> small, report = compress(model, Plan.of(SVDConfig(rank=0.5), PruneConfig(amount=0.5)))

In a notebook: ``%load_ext jupyter_compress`` then ``%compress model --prune 0.5 --as small``.
Importing this package does not import IPython, ipywidgets, bokeh or tensorly.
"""

from ._version import __version__
from .core.apply import applied_plans, compress, compress_, forget_undo, preview, revert_
from .core.config import MethodConfig
from .core.evaluate import Evaluator, attach_thresholds, evaluate
from .core.metrics import accuracy, count_nonzero, count_params, measure_latency, model_bytes, state_dict_hash
from .core.plan import Plan, Step
from .core.registry import get_method, list_methods, register_method
from .core.report import LayerRow, Report
from .core.selection import Selector
from .core.thresholds import Thresholds
from .errors import (
    CompressError,
    InvalidConfigError,
    LayerNotSupportedError,
    NothingToRevertError,
    PlanError,
    SchemaVersionError,
    SelectorError,
    StoppedError,
    UnknownMethodError,
)
from .io import export_onnx, load, save
from .methods import NMConfig, PruneConfig, SparseGPTConfig, StructuredPruneConfig, SVDConfig, WandaConfig
from .methods.decompose import CPConfig, LayerAnalysis, TTConfig, TuckerConfig, spectrum
from .methods.distill import DistillConfig, distill, make_student
from .methods.quantize import (
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
from .methods.runtime import RuntimeConfig
from .methods.schedule import prune_gradually, schedule_amounts
from .strategy.compare import ComparisonTable
from .verbs import compare

__all__ = [
    "__version__",
    "compress",
    "compress_",
    "revert_",
    "forget_undo",
    "applied_plans",
    "preview",
    "save",
    "load",
    "export_onnx",
    "prune_gradually",
    "distill",
    "make_student",
    "DistillConfig",
    "schedule_amounts",
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
    "SparseGPTConfig",
    "WandaConfig",
    "TuckerConfig",
    "CPConfig",
    "TTConfig",
    "spectrum",
    "LayerAnalysis",
    "DynamicQuantConfig",
    "RuntimeConfig",
    "StaticQuantConfig",
    "WeightOnlyConfig",
    "EmbeddingQuantConfig",
    "GPTQConfig",
    "AWQConfig",
    "ClusterConfig",
    "SmoothQuantConfig",
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
    "Evaluator",
    "evaluate",
    "Thresholds",
    "compare",
    "ComparisonTable",
    "attach_thresholds",
    "CompressError",
    "InvalidConfigError",
    "SelectorError",
    "PlanError",
    "UnknownMethodError",
    "SchemaVersionError",
    "LayerNotSupportedError",
    "NothingToRevertError",
    "StoppedError",
    "load_ipython_extension",
    "tune",
    "TunePanel",
    "auto",
    "advise",
    "sensitivity",
]

_STRATEGY = {"auto": "auto", "advise": "advise", "sensitivity": "sensitivity"}


def __getattr__(name):
    """Verbs with heavy imports load on first use (PEP 562): ``tune`` / ``TunePanel`` (ipywidgets) and the
    strategy verbs ``auto`` / ``advise`` / ``sensitivity`` (tqdm; dask only when asked for)."""
    import importlib

    if name in ("tune", "TunePanel"):
        return getattr(importlib.import_module(".widgets", __name__), name)
    if name in _STRATEGY:
        return getattr(importlib.import_module(f".strategy.{_STRATEGY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython):  # pragma: no cover - exercised through a real shell in tests
    """``%load_ext jupyter_compress``: registers the %compress magics (IPython imported only here)."""
    from .magics import load_ipython_extension as _load

    _load(ipython)
