"""Facts the advisor reasons from: what data is there, what the model is made of, what the CPU offers."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

__all__ = ["data_kind", "layer_kind", "model_profile", "hardware"]


def data_kind(data: Any) -> str:
    """``'none'``, ``'calibration'`` (inputs only) or ``'labelled'`` (inputs with targets)."""
    if data is None:
        return "none"
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(hasattr(d, "shape") for d in data):
        return "labelled"
    if hasattr(data, "shape"):
        return "calibration"
    from ..core.data import iter_batches

    _, targets = next(iter_batches(data))
    return "labelled" if targets is not None else "calibration"


def layer_kind(cls: type) -> str:
    """``'linear'`` (Linear, transformers' Conv1D: a Linear with its weight transposed), ``'conv'``,
    ``'embedding'`` or ``'other'``: the kinds of :func:`model_profile`'s shares."""
    if issubclass(cls, nn.Linear) or cls.__name__ == "Conv1D":
        return "linear"
    if issubclass(cls, nn.modules.conv._ConvNd):
        return "conv"
    return "embedding" if issubclass(cls, nn.Embedding) else "other"


def model_profile(model: nn.Module) -> dict[str, Any]:
    """Parameters by kind of layer, the dominant kind and the size in MiB."""
    kinds = {"linear": 0, "conv": 0, "embedding": 0, "other": 0}
    for module in model.modules():
        kinds[layer_kind(type(module))] += sum(p.numel() for p in module.parameters(recurse=False))
    total = max(sum(kinds.values()), 1)
    share = {k: v / total for k, v in kinds.items()}
    # convolutions do far more work per weight than Linears: a third of the weights makes a model convolutional
    dominant = "conv" if share["conv"] >= 0.3 else "linear"
    from ..core.metrics import model_bytes

    return {"params": total, "share": share, "dominant": dominant, "mib": model_bytes(model) / 2**20,
            "kind": "transformer-like (Linear layers dominate)" if dominant == "linear"
            else "convolutional (Conv layers dominate)"}


@functools.lru_cache(maxsize=1)
def hardware() -> dict[str, Any]:
    """int8 engines torch offers, CPU vector extensions that speed int8 up, and whether a GPU is here."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    int8_ext = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512f", "avx2", "asimd") if f in flags]
    return {"engines": [e for e in torch.backends.quantized.supported_engines if e != "none"],
            "int8_extensions": int8_ext, "vnni": any("vnni" in f or "amx" in f for f in int8_ext),
            "gpu": torch.cuda.is_available(), "threads": torch.get_num_threads()}
