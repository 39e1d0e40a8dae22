"""ONNX Runtime as an execution backend behind the same module interface.

A submodule (e.g. a BERT encoder) is exported to ONNX with the inputs it was seen called with, its
MatMul / Gemm weights quantized to int8 by ``onnxruntime.quantization.quantize_dynamic`` (per channel),
and replaced by :class:`OrtModule`, which takes the same arguments and returns the same output structure
(tensor, tuple, dict or Hugging Face ``ModelOutput``). The ONNX model bytes are the module's one buffer,
so its size is measured and it survives ``state_dict`` / deepcopy; the session is rebuilt from them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import tempfile
from typing import Any

import torch
from torch import nn

from ...core.metrics import count_nonzero, count_params, eval_mode
from ._common import BackendUnavailableError, quiet

__all__ = ["OrtModule", "ort_available", "require_ort", "export_quantized"]


def ort_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def require_ort(method: str) -> None:
    if not ort_available():
        raise BackendUnavailableError(
            f"The 'onnxruntime' backend of {method!r} needs the onnxruntime and onnx packages, which this "
            f"machine lacks: pip install 'jupyter-compress[onnx]', or use backend='torch' (torch.ao int8 "
            f"kernels, engine {torch.backends.quantized.engine!r}) or backend='auto'.")


# -- flattening inputs and outputs ----------------------------------------------------------------------
def _spec(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return "T"
    if isinstance(out, (tuple, list)):
        return (type(out), [_spec(o) for o in out])
    if isinstance(out, dict) or hasattr(out, "keys"):
        return ("map", type(out), [(k, _spec(out[k])) for k in out.keys()])
    return ("const", out)


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict) or hasattr(out, "keys"):
        return [t for k in out.keys() for t in _flatten(out[k])]
    return []


def _rebuild(spec: Any, tensors: list[torch.Tensor]) -> Any:
    if spec == "T":
        return tensors.pop(0)
    if spec[0] == "const":
        return spec[1]
    if spec[0] == "map":
        values = {k: _rebuild(s, tensors) for k, s in spec[2]}
        return spec[1](**values) if spec[1] is not dict else values
    cls, items = spec
    values = [_rebuild(s, tensors) for s in items]
    return values if cls is list else tuple(values) if cls is tuple else cls(values)


def flat_call(args: tuple, kwargs: dict) -> tuple[list, list[torch.Tensor], list[str]]:
    """The tensors of a call, each with its slot (positional index or keyword) and an input name."""
    slots, tensors, names = [], [], []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            slots.append(("arg", i)), tensors.append(a), names.append(f"arg{i}")
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            slots.append(("kw", k)), tensors.append(v), names.append(str(k))
    return slots, tensors, names


def positional_names(region: nn.Module) -> tuple[str, ...]:
    """The names of ``region.forward``'s positional parameters, so that an input exported by position can
    also be given by keyword (``bert(input_ids=...)`` where the model was seen called ``bert(ids, ...)``)."""
    import inspect

    try:
        params = inspect.signature(region.forward).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def slot_value(slot: tuple[str, Any], args: tuple, kwargs: dict, names: tuple[str, ...]) -> Any:
    """The value of an exported input in a call: by its position or keyword, or by the other one."""
    kind, key = slot
    if kind == "arg":
        if key < len(args):
            return args[key]
        return kwargs.get(names[key]) if key < len(names) else None
    if key in kwargs:
        return kwargs[key]
    position = names.index(key) if key in names else len(args)
    return args[position] if position < len(args) else None


def slot_label(slot: tuple[str, Any], names: tuple[str, ...]) -> str:
    kind, key = slot
    return f"argument {key} ({names[key]})" if kind == "arg" and key < len(names) else repr(key)


class _Flat(nn.Module):
    """Export helper: tensors in, the region called with its captured constants, tensors out."""

    def __init__(self, region: nn.Module, slots, args, kwargs):
        super().__init__()
        self.region, self.slots, self.args, self.kwargs = region, slots, args, kwargs

    def forward(self, *tensors):
        args, kwargs = list(self.args), dict(self.kwargs)
        for (kind, key), t in zip(self.slots, tensors):
            if kind == "arg":
                args[key] = t
            else:
                kwargs[key] = t
        return tuple(_flatten(self.region(*args, **kwargs)))


class OrtModule(nn.Module):
    """Runs an ONNX model with onnxruntime; called like the module it replaces."""

    def __init__(self, onnx_bytes: bytes, slots, input_names, out_spec, carried: dict[str, Any], label: str):
        super().__init__()
        self.register_buffer("onnx_model", torch.frombuffer(bytearray(onnx_bytes), dtype=torch.uint8))
        self.slots, self.input_names, self.out_spec, self.label = slots, input_names, out_spec, label
        for key, value in carried.items():  # e.g. a Hugging Face `config` that callers read
            object.__setattr__(self, key, value)
        self._session = None
        self._session_threads = None
        # (elements, non-zeros) of the weights the graph holds, recorded at export (core.metrics.count_params)
        self.weight_counts = (0, 0)

    def held_parameters(self, nonzero: bool = False) -> int:
        """The weights inside the ONNX graph count as parameters (their counts are recorded at export)."""
        return int(getattr(self, "weight_counts", (0, 0))[1 if nonzero else 0])

    def session(self):
        threads = torch.get_num_threads()
        if self._session is None or self._session_threads != threads:
            # rebuilt when torch's thread count changes: a session made while compression math ran pinned to
            # one thread (core.metrics.single_thread) would otherwise stay single-threaded for good
            import onnxruntime as ort

            self._session_threads = threads
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads  # same threads as torch: a fair comparison
            options.inter_op_num_threads = 1
            # no spin-waiting after a run: PyTorch's own threads run the layers around this graph next, and
            # on a small CPU spinning runtime threads take their cores (measured: a ResNet served block by block
            # ran 5x slower with spinning on)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(self.onnx_model.numpy().tobytes(), options,
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def forward(self, *args, **kwargs):
        feed = {}
        arg_names = getattr(self, "arg_names", ())
        for slot, name in zip(self.slots, self.input_names):
            value = slot_value(slot, args, kwargs, arg_names)
            if value is None and "mask" in str(slot[1]):
                value = self._neutral_mask(name, args, kwargs)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{self.label} was exported with a tensor for {slot_label(slot, arg_names)}; got "
                                f"{type(value).__name__}.")
            feed[name] = value.detach().cpu().contiguous().numpy()
        outputs = [torch.from_numpy(o) for o in self.session().run(None, feed)]
        return _rebuild(self.out_spec, outputs)

    def _neutral_mask(self, name: str, args, kwargs) -> torch.Tensor | None:
        """A mask that masks nothing, for callers that pass None when no position is padded (Hugging Face
        drops an all-ones attention mask): (batch, 1, T, T) of True for a boolean mask, of 0.0 for an
        additive float mask, with batch and T read from the (batch, T, hidden) hidden states."""
        meta = next((i for i in self.session().get_inputs() if i.name == name), None)
        hidden = next((a for a in list(args) + list(kwargs.values())
                       if isinstance(a, torch.Tensor) and a.dim() == 3 and a.is_floating_point()), None)
        if meta is None or hidden is None or len(meta.shape) != 4:
            return None
        batch, length = hidden.shape[0], hidden.shape[1]
        if meta.type == "tensor(bool)":
            return torch.ones(batch, 1, length, length, dtype=torch.bool)
        if meta.type == "tensor(float)":
            return torch.zeros(batch, 1, length, length)
        return None

    # the saved graph is loaded whatever its size: a replay exports from other example inputs, whose bytes
    # may differ (names, constant folding), while the file holds the graph that was measured and saved
    resizable_buffers = ("onnx_model",)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._session = None
        saved = state_dict.get(prefix + "onnx_model")
        if isinstance(saved, torch.Tensor) and saved.shape != self.onnx_model.shape and saved.dtype == torch.uint8:
            self.onnx_model = saved.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None  # sessions cannot be copied; rebuilt from the bytes on first call
        return state

    def extra_repr(self) -> str:
        return f"{self.label}, onnx={self.onnx_model.numel() / 2**20:.2f} MiB"


@contextlib.contextmanager
def _no_root_warnings():
    """onnxruntime.quantization logs advice ('consider pre-processing') on the root logger; keep it quiet."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _node_owners(nodes: list[str], paths) -> dict[str, str | None]:
    """The Linear (path inside the region) each MatMul / Gemm node belongs to, or None (e.g. attention scores).

    The exporter names nodes by module scope, joining list indices with '.': '/region/layer.0/attention/self/
    query/MatMul' (or '/region/region.0/MatMul' for a Sequential); compared with '.' read as '/', the node's
    scope ends with the Linear's path. The longest matching path wins.
    """
    owners: dict[str, str | None] = {}
    for node in nodes:
        scope = node.replace(".", "/").rsplit("/", 1)[0] + "/"
        matches = [p for p in paths if scope.endswith("/" + p.replace(".", "/") + "/")]
        owners[node] = max(matches, key=len) if matches else None
    return owners


def export_quantized(region: nn.Module, args: tuple, kwargs: dict, output: Any, linear_paths: dict[str, bool],
                     label: str, reduce_range: bool = False, quantize_other_matmuls: bool = False,
                     int8: bool = True) -> tuple[OrtModule, dict[str, int]]:
    """Export ``region`` (as called with ``args``/``kwargs``) and quantize its Linears to int8 with ONNX Runtime.

    ``linear_paths`` maps each Linear's path inside the region to True (quantize) or False (keep float).
    ``quantize_other_matmuls`` also quantizes MatMuls that are no Linear (attention scores), as ONNX
    Runtime's defaults do; we keep those in float by default (more accurate, about as fast).
    ``int8=False`` exports the float graph as it is (the runtime method serves float models).
    Returns the module and the number of quantized weight nodes per Linear path.
    """
    import onnx

    slots, tensors, names = flat_call(args, kwargs)
    flat = _Flat(region, slots, args, kwargs).eval()
    buffer = io.BytesIO()
    # grad mode on: torch's fused inference fast paths (nn.TransformerEncoderLayer) are not exportable.
    # eval_mode restores every module's own training flag: the exporter resets them from the wrapper's.
    with quiet(), torch.enable_grad(), eval_mode(region):
        outs = _flatten(output)
        axes = {n: {d: f"{n}_{d}" for d in range(t.dim())} for n, t in zip(names, tensors)}
        axes |= {f"out{i}": {d: f"out{i}_{d}" for d in range(t.dim())} for i, t in enumerate(outs)}
        torch.onnx.export(flat, tuple(tensors), buffer, dynamo=False, input_names=names, opset_version=17,
                          dynamic_axes=axes, output_names=[f"out{i}" for i in range(len(outs))])
    model = onnx.load_from_string(buffer.getvalue())
    used = {i.name for i in model.graph.input}  # the exporter drops inputs the graph does not read
    slots, names = [s for s, n in zip(slots, names) if n in used], [n for n in names if n in used]
    owner = _node_owners([n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")], linear_paths)
    counts = {p: sum(o == p for o in owner.values()) for p in linear_paths}
    exclude = [n for n, o in owner.items() if (o is None and not quantize_other_matmuls)
               or (o is not None and not linear_paths[o])]
    if not int8:
        data = buffer.getvalue()
    else:
        data = _quantized(model, exclude, reduce_range)
    carried = {k: getattr(region, k) for k in ("config",) if hasattr(region, k)}
    module = OrtModule(data, slots, names, _spec(output), carried, label)
    module.arg_names = positional_names(region)
    module.weight_counts = (count_params(region), count_nonzero(region))
    return module, counts


def _quantized(model, exclude: list[str], reduce_range: bool) -> bytes:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, quiet(), _no_root_warnings():
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, dst, per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=exclude)
        with open(dst, "rb") as f:
            return f.read()
