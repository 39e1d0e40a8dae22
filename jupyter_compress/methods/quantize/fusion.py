"""Which Conv layers can absorb the BatchNorm and ReLU that follow them (found with a torch.fx trace)."""

from __future__ import annotations

import operator
import threading

import torch
from torch import fx, nn

from ...errors import CompressError

__all__ = ["find_fusions", "folded_rows"]

_RELU_FUNCTIONS = (torch.relu, nn.functional.relu, torch.relu_)
_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}
# torch.fx's tracer patches torch.nn.Module.__call__ and __getattr__ process-wide while it traces: a model run
# in another thread meanwhile (static int8 from several threads) went through this trace and failed ("module
# is not installed as a submodule"). So one trace at a time, and calls from other threads pass through.
_TRACE_LOCK = threading.Lock()


class _OwnThreadTracer(fx.Tracer):
    """An fx Tracer that records only its own thread's calls; other threads' modules run as usual."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def call_module(self, m, forward, args, kwargs):
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def _is_relu(model: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def folded_rows(conv_row, bn_row, old: nn.Module, new: nn.Module) -> None:
    """Book the bias a folded BatchNorm gave a bias-less conv to the BatchNorm's row, in place: the conv row
    then keeps its own count (its int8 weight) and the BatchNorm row shows its scale and shift (2 x channels)
    becoming that bias (channels), so no row grows."""
    bias = getattr(new, "bias", None)
    if getattr(old, "bias", None) is not None or bias is None:
        return
    n, nz, nbytes = bias.numel(), int(torch.count_nonzero(bias)), bias.numel() * bias.element_size()
    conv_row.params_after -= n
    conv_row.nonzeros_after -= nz
    conv_row.bytes_after -= nbytes
    bn_row.params_after += n
    bn_row.nonzeros_after += nz
    bn_row.bytes_after += nbytes
    bn_row.new_type = "Identity (folded into the conv's bias)"


def find_fusions(model: nn.Module, names: list[str]) -> tuple[dict[str, tuple[str | None, bool]], list[str]]:
    """``{layer: (batchnorm name or None, relu follows)}`` for the layers that can fuse, and notes.

    A BatchNorm is folded only when it is the conv's sole user and is used by nothing else (its running
    statistics then describe exactly this conv's output) and it is called once.
    """
    try:
        with _TRACE_LOCK:
            graph = _OwnThreadTracer().trace(model)
    except Exception as exc:  # data-dependent control flow, custom modules: no fusion, and we say so
        return {}, [f"Conv-BatchNorm-ReLU fusion skipped: torch.fx could not trace the model "
                    f"({type(exc).__name__}); layers are quantized unfused."]
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    fusions: dict[str, tuple[str | None, bool]] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in names or calls[node.target] != 1:
            continue
        layer = model.get_submodule(node.target)
        tail, bn_name = node, None
        users = list(tail.users)
        if type(layer) in _BN and len(users) == 1 and users[0].op == "call_module":
            bn = model.get_submodule(users[0].target)
            if isinstance(bn, _BN[type(layer)]) and calls[users[0].target] == 1 and bn.track_running_stats:
                bn_name, tail = users[0].target, users[0]
        users = [u for u in tail.users if u.target is not operator.getitem]
        relu = len(users) == 1 and _is_relu(model, users[0])
        if bn_name and (layer.training or model.get_submodule(bn_name).training):
            raise CompressError(f"{node.target} and its BatchNorm {bn_name} are in training mode, and int8 folds the "
                                f"BatchNorm's running statistics into the layer: call model.eval() first (or pass "
                                f"fuse=False to quantize them unfused).")
        if bn_name or relu:
            fusions[node.target] = (bn_name, relu)
    return fusions, []
