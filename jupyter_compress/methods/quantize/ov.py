"""OpenVINO as an execution backend behind the same module interface (issue 21).

A submodule called as a unit (a BERT model, a ResNet) is converted by ``openvino.convert_model`` with the
inputs it was seen called with, optionally quantized to int8 by NNCF's post-training quantization
(``nncf.quantize``; ``ModelType.TRANSFORMER`` for attention models, which adds SmoothQuant and keeps the
sensitive operations in float, as NNCF's authors tuned it), and replaced by :class:`OvModule`. The module takes
the same arguments and returns the same output structure as the module it replaces (tensor, tuple, dict or a
Hugging Face ``ModelOutput``). Its IR (xml + bin, int8 weights stored as int8) is the module's buffers, so
its size is measured, it survives ``state_dict`` and deepcopy, and the compiled model is rebuilt from them.

We quantize with NNCF rather than by hand: it is the maintained quantizer written for this runtime.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...core.metrics import count_nonzero, count_params, eval_mode
from ._common import BackendUnavailableError, quiet
from .ort import _Flat, _flatten, _rebuild, _spec, flat_call, positional_names, slot_label, slot_value
from .padding import _cosine, cut_feed, row_groups, scatter_rows, use_trim

__all__ = ["OvModule", "ov_available", "nncf_available", "require_ov", "export_openvino", "is_transformer",
           "quiet_tools"]

INSTALL = "pip install 'jupyter-compress[deploy]'"


def ov_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def nncf_available() -> bool:
    return ov_available() and importlib.util.find_spec("nncf") is not None


def require_ov(method: str, int8: bool = True) -> None:
    if not (nncf_available() if int8 else ov_available()):
        raise BackendUnavailableError(
            f"The 'openvino' backend of {method!r} needs the openvino{' and nncf' if int8 else ''} packages, "
            f"which this machine lacks: {INSTALL}, or use backend='auto' (the fastest route installed).")


@contextlib.contextmanager
def quiet_tools(progress: Any = None) -> Iterator[None]:
    """OpenVINO's and NNCF's warnings, logs, progress bars and usage telemetry off inside our calls (the
    telemetry switches are the ones their own CI uses); restored afterwards. ``progress``: a stream that
    gets their printed output (progress bars) instead of dropping it (the benchmarks show it on stderr)."""
    saved = {k: os.environ.get(k) for k in ("CI", "NNCF_CI")}
    os.environ.update({"CI": "true", "NNCF_CI": "1"})
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    stream = progress or io.StringIO()
    # NNCF draws its progress bars with rich on rich's global console, which in a notebook kernel displays
    # them as widgets (redirecting stdout does not reach those): a plain console on our stream meanwhile
    rich, console = _swap_rich_console(stream)
    try:
        with quiet(), warnings.catch_warnings(), contextlib.redirect_stdout(stream), \
                contextlib.redirect_stderr(stream):
            warnings.simplefilter("ignore")
            yield
    finally:
        if rich is not None:
            rich._console = console
        logging.disable(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _swap_rich_console(stream) -> tuple[Any, Any]:
    """(rich, its previous global console) after putting a plain console on ``stream`` in its place; (None,
    None) without rich."""
    try:
        import rich
        from rich.console import Console
    except ImportError:
        return None, None
    previous = rich._console
    rich._console = Console(file=stream, force_jupyter=False, force_terminal=False)
    return rich, previous


def is_transformer(module: nn.Module) -> bool:
    """Attention inside: NNCF's transformer preset (SmoothQuant, float softmax / layer norm) suits it."""
    return any(isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower()
               for m in module.modules())


class OvModule(nn.Module):
    """Runs an OpenVINO IR on the CPU plugin; called like the module it replaces.

    Sequence buckets (``seq_bucket`` > 0, set at export for a model called with an ``attention_mask``): the
    token inputs are padded with masked positions up to the next multiple of ``seq_bucket``, each padded length
    runs on its own graph compiled for that length (batch still dynamic), and the outputs are cut back to the
    real length. The CPU plugin runs a graph of known sequence length 15-25% faster than the dynamic-shape one
    (MiniLM int8 here: 29 against 35 ms at batch 32 x 56 tokens, 1.05 against 1.45 ms at batch 1), but each new
    length costs a compile (~0.3 s) and memory (~60 MB for MiniLM), so it is opt-in: for serving at fixed or
    few lengths. The output depends only on the input's shape and values, never on which lengths were seen
    before: a length always runs on its own graph (compiled again, identically, if dropped from the cache).

    Padding trimmed (``trim``, set at export where it keeps the real positions): the rows of a right-padded
    call run in groups of similar length, each cut to its longest row, and every padded position of the outputs
    is ``fill`` (0), whatever the grouping (``padding.py``)."""

    MAX_GRAPHS = 8  # compiled lengths kept (MiniLM int8: ~0.3 s to compile one)

    def __init__(self, xml: bytes, weights: bytes, slots, input_names, out_spec, carried: dict[str, Any],
                 label: str, precision: str = "float32"):
        super().__init__()
        self.register_buffer("ov_xml", torch.frombuffer(bytearray(xml), dtype=torch.uint8))
        self.register_buffer("ov_weights", torch.frombuffer(bytearray(weights or b"\0"), dtype=torch.uint8))
        self.slots, self.input_names, self.out_spec, self.label = slots, input_names, out_spec, label
        # float32 by default: the CPU plugin would otherwise compute float operations in bfloat16 on CPUs with
        # bfloat16 instructions, a precision change the user did not ask for (the report says what ran)
        self.precision = precision
        for key, value in carried.items():  # e.g. a Hugging Face `config` that callers read
            object.__setattr__(self, key, value)
        self.seq_bucket = 0  # 0: one dynamic-shape graph
        self.mask_input = -1  # the feed position of the attention mask (its axis 1 is the sequence)
        self.pad_inputs: tuple[int, ...] = ()  # feed positions padded along axis 1 (ids, mask, token types)
        self.seq_axes: tuple[tuple[int, ...], ...] = ()  # per output: its axes that follow the sequence length
        self.trim = False  # rows grouped by real length, padding cut (padding.py); padded outputs = self.fill
        self.can_trim = False  # the export checked that trimming keeps the real positions
        self.fill = 0.0
        self.trimmed_calls = 0
        self._graphs: OrderedDict = OrderedDict()  # (threads, precision, length) -> (compiled, request, outputs)
        self._lock = threading.Lock()
        self.weight_counts = (0, 0)

    def held_parameters(self, nonzero: bool = False) -> int:
        return int(getattr(self, "weight_counts", (0, 0))[1 if nonzero else 0])

    def _graph(self, length: int | None):
        """The compiled graph (and its one infer request) for a padded sequence length, or None: dynamic."""
        key = (torch.get_num_threads(), self.precision, length)
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        import numpy as np
        import openvino as ov

        core = ov.Core()
        model = core.read_model(self.ov_xml.numpy().tobytes().decode(),
                                ov.Tensor(np.ascontiguousarray(self.ov_weights.numpy())))
        if length is not None:
            model.reshape({model.inputs[i]: ov.PartialShape([ov.Dimension(), ov.Dimension(length)])
                           for i in self.pad_inputs})
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": key[0],  # torch's threads: a fair comparison
            "INFERENCE_PRECISION_HINT": {"float32": ov.Type.f32, "bfloat16": ov.Type.bf16}[self.precision],
            "PERFORMANCE_HINT": "LATENCY"})
        self._graphs[key] = (compiled, compiled.create_infer_request(), len(compiled.outputs))
        while len(self._graphs) > self.MAX_GRAPHS:
            self._graphs.popitem(last=False)
        return self._graphs[key]

    def compiled(self):
        """The dynamic-shape graph, compiled for torch's current thread count."""
        return self._graph(None)[0]

    def forward(self, *args, **kwargs):
        feed = []
        arg_names = getattr(self, "arg_names", ())
        for slot in self.slots:
            value = slot_value(slot, args, kwargs, arg_names)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{self.label} was exported with a tensor for {slot_label(slot, arg_names)}; got "
                                f"{type(value).__name__}.")
            feed.append(value.detach().cpu().contiguous().numpy())
        return self._run(feed, self.seq_bucket, self.trim)

    def _run(self, feed: list, bucket: int, trim: bool | str = False):
        """The outputs of a call; ``trim``: rows grouped by length (True) or each row on its own ('each_row')."""
        groups = row_groups(feed, self.mask_input, bucket, each_row=trim == "each_row") \
            if trim and self.mask_input >= 0 else None
        if groups is None:
            return _rebuild(self.out_spec, self._infer(feed, bucket))
        self.trimmed_calls += 1
        pieces = [(rows, length, self._infer(cut_feed(feed, rows, length, self.pad_inputs), bucket))
                  for rows, length in groups]
        return _rebuild(self.out_spec, scatter_rows(pieces, feed[self.mask_input] != 0, self.seq_axes, self.fill))

    def _infer(self, feed: list, bucket: int) -> list[torch.Tensor]:
        """The graph's flat outputs for one call (padded to the bucket and cut back when ``bucket``)."""
        import numpy as np
        feed = list(feed)  # padded in this copy, the caller's list untouched
        import openvino as ov

        length = real = None
        if bucket and 0 <= self.mask_input < len(feed) and feed[self.mask_input].ndim == 2:
            real = feed[self.mask_input].shape[1]
            length = max(bucket, -(-real // bucket) * bucket)
            if length != real:
                for i in self.pad_inputs:  # masked positions after the real ones (zeros: mask 0, ids 0)
                    padded = np.zeros((feed[i].shape[0], length), dtype=feed[i].dtype)
                    padded[:, :real] = feed[i]
                    feed[i] = padded
        # One infer request per compiled graph, inputs shared (no copy), outputs copied out of its buffers.
        # At batch 1 a MiniLM call takes ~1 ms, and CompiledModel.__call__'s input dispatch (type checks per
        # call) cost ~7% of it here; the request's own API does not.
        with self._lock:
            _, request, count = self._graph(length)
            for i, array in enumerate(feed):
                request.set_input_tensor(i, ov.Tensor(array, shared_memory=True))
            request.infer()
            outputs = []
            for i in range(count):
                data = request.get_output_tensor(i).data
                if length is not None and length != real:
                    axes = self.seq_axes[i] if i < len(self.seq_axes) else ()
                    data = data[tuple(slice(0, real) if a in axes and data.shape[a] == length else slice(None)
                                      for a in range(data.ndim))]
                outputs.append(torch.from_numpy(np.array(data, copy=True, order="C")))
        return outputs

    resizable_buffers = ("ov_xml", "ov_weights")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._graphs = OrderedDict()
        for key in self.resizable_buffers:
            saved = state_dict.get(prefix + key)
            if isinstance(saved, torch.Tensor) and saved.dtype == torch.uint8 and saved.shape != getattr(self, key).shape:
                setattr(self, key, saved.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_graphs"] = OrderedDict()  # compiled models cannot be copied; rebuilt from the IR on first call
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._lock = threading.Lock()

    def extra_repr(self) -> str:
        size = (self.ov_xml.numel() + self.ov_weights.numel()) / 2**20
        shapes = f", sequence padded to a multiple of {self.seq_bucket}" if self.seq_bucket else ""
        return f"{self.label}, openvino IR={size:.2f} MiB, precision={self.precision}{shapes}"


def canonical_names(model) -> None:
    """Name every node of an OpenVINO model by its place in the graph, so that the same graph serializes to the
    same bytes in any process. OpenVINO numbers the nodes it creates from a process-wide counter
    ("Multiply_3035", "Model0"): a second export in one process, or one after other work, would otherwise
    give another IR for the same weights, and a replay could not be bit-identical. The readable part of a
    name (the torch module path the converter gives) is kept."""
    import re

    model.set_friendly_name("jupyter_compress")
    for index, op in enumerate(model.get_ordered_ops()):
        stem = re.sub(r"_\d+$", "", op.get_friendly_name())
        op.set_friendly_name(f"{stem}#{index}")


def _sequence_layout(names: list[str], tensors: list[torch.Tensor], model) -> tuple | None:
    """(mask input, inputs to pad, sequence axes per output) when the call can be padded along its sequence:
    it has a 2-D ``attention_mask``, every input carrying the sequence length is a 2-D integer tensor of the
    mask's shape (token ids, token types, positions), and the outputs' sequence axes are the ones the
    converter left dynamic past the batch axis. None otherwise (the graph stays dynamic)."""
    if "attention_mask" not in names:
        return None
    mask = names.index("attention_mask")
    if tensors[mask].dim() != 2:
        return None
    shape, length = tensors[mask].shape, tensors[mask].shape[1]
    pad = tuple(i for i, t in enumerate(tensors)
                if i == mask or (t.dim() == 2 and t.shape == shape and not t.is_floating_point()))
    if any(i not in pad and t.dim() >= 2 and length in t.shape[1:] for i, t in enumerate(tensors)):
        return None  # e.g. embeddings given as floats: padding them is not ours to decide
    axes = []
    for out in model.outputs:
        shape_ = out.get_partial_shape()
        if shape_.rank.is_dynamic:
            return None
        axes.append(tuple(a for a in range(1, shape_.rank.get_length()) if shape_[a].is_dynamic))
    return mask, pad, tuple(axes)


def _use_buckets(module: OvModule, layout: tuple | None, tensors: list[torch.Tensor], bucket: int) -> str:
    """Turn sequence buckets on when the padded graph gives the dynamic graph's output on the export call
    (cosine >= 0.999 per output, same shapes); a note saying which shapes the module runs."""
    if layout is None:
        return "dynamic shapes (not called with a 2-D attention_mask over token inputs)"
    module.mask_input, module.pad_inputs, module.seq_axes = layout  # what buckets and trimming need
    if not bucket:
        return "dynamic shapes (seq_bucket=0)"
    feed = [t.detach().cpu().contiguous().numpy() for t in tensors]
    try:
        dynamic = _flatten(module._run(list(feed), 0))
        padded = _flatten(module._run(list(feed), bucket))
        ok = len(dynamic) == len(padded) and all(
            a.shape == b.shape and _cosine(a, b) >= 0.999 for a, b in zip(dynamic, padded))
    except Exception as exc:  # a graph that cannot take a fixed length: dynamic, and say why
        ok, why = False, f"{type(exc).__name__}: {str(exc)[:80]}"
    else:
        why = "its padded output differs from the dynamic one"
    module._graphs.clear()
    if not ok:
        return f"dynamic shapes (sequence buckets not used: {why})"
    module.seq_bucket = bucket
    return f"sequence padded to a multiple of {bucket}, one graph per length"


def export_openvino(region: nn.Module, args: tuple, kwargs: dict, output: Any, label: str,
                    calibration: list[tuple[tuple, dict]] | None = None, transformer: bool | None = None,
                    seq_bucket: int = 0, trim: bool = False) -> OvModule:
    """Convert ``region`` (as called with ``args``/``kwargs``) to OpenVINO; with ``calibration`` (the
    region's recorded calls), quantize it to int8 with NNCF on them. Float otherwise. ``seq_bucket``: see
    :class:`OvModule` (used when the call allows it and the padded graph agrees with the dynamic one). ``trim``:
    group rows by real length when the call allows it and the real positions agree (``padding.use_trim``)."""
    import openvino as ov

    slots, tensors, names = flat_call(args, kwargs)
    transformer = is_transformer(region) if transformer is None else transformer
    flat = _Flat(region, slots, args, kwargs).eval()
    with quiet_tools(), torch.no_grad(), eval_mode(region):
        # inputs are fed by position; the converter leaves every axis dynamic (batch, sequence length)
        model = ov.convert_model(flat, example_input=tuple(tensors))
        if len(model.inputs) != len(tensors):
            raise RuntimeError(f"OpenVINO's graph has {len(model.inputs)} inputs for {len(tensors)} tensors")
        if calibration:
            import nncf

            nncf.set_log_level(logging.ERROR)
            feeds = []
            for c_args, c_kwargs in calibration:
                _, c_tensors, c_names = flat_call(c_args, c_kwargs)
                if c_names == names:
                    feeds.append([t.detach().cpu().numpy() for t in c_tensors])
            extra = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
            model = nncf.quantize(model, nncf.Dataset(feeds or [[t.numpy() for t in tensors]]),
                                  subset_size=max(1, len(feeds)), **extra)
        canonical_names(model)
        layout = _sequence_layout(names, tensors, model)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.xml")
            ov.save_model(model, path, compress_to_fp16=False)
            with open(path, "rb") as f:
                xml = f.read()
            with open(path[:-4] + ".bin", "rb") as f:
                weights = f.read()
    carried = {k: getattr(region, k) for k in ("config",) if hasattr(region, k)}
    module = OvModule(xml, weights, slots, names, _spec(output), carried, label)
    module.arg_names = positional_names(region)
    module.weight_counts = (count_params(region), count_nonzero(region))
    module.transformer = bool(calibration) and transformer
    module.shapes_note = _use_buckets(module, layout, tensors, seq_bucket)
    if trim:
        def run(feed, trimmed):
            return _flatten(module._run(feed, module.seq_bucket, trimmed))

        module.shapes_note += "; " + use_trim(module, tensors, run)
        module._graphs.clear()
    return module

