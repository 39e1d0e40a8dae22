"""Weight sharing (Han et al., Deep Compression, 2016, section 3): k-means per layer, the weights stored as
``bits``-bit indices into a codebook of ``2^bits`` shared values.

Per layer, a 1-D k-means over the layer's non-zero weights, its centroids initialised evenly between the
smallest and largest weight (the paper's linear initialisation, which it found best because it keeps the
few large weights that matter most). Exact zeros (a pruned weight) keep index 0, whose codebook entry is
0.0, so sharing keeps the sparsity and the compact artifact stores the indices sparse. The layer computes with
the decoded weight ``codebook[indices]``: smaller on disk and in memory (uint8 indices), not faster.

We write the k-means ourselves: in 1-D it is a few lines (sorted centroids, assignment by midpoints with
``torch.bucketize``, means by ``bincount``), deterministic without a seed, and scikit-learn's ``KMeans``
offers k-means++ or random initialisation, not the paper's linear one.

The centroids can be fine-tuned afterwards, as in the paper (the gradient of each shared value is the sum
of its weights' gradients): :func:`finetune_centroids` trains the codebooks (only) on your data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...core.config import Interval, MethodConfig, param
from ...core.registry import MagicOption, MethodResult, register_method
from ...errors import InvalidConfigError, shown
from .._common import LINEAR_TYPES, LayerStandIn, hand_over, is_conv1d, layer_row, parent_reads_weight
from ._common import held_count, output_error, sqnr_db, unsupported_note
from .weight import _inputs

__all__ = ["ClusterConfig", "ClusteredLayer", "SharedBiasClusteredLayer", "kmeans_1d", "finetune_centroids"]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterConfig(MethodConfig):
    """Weight sharing: per layer, k-means into 2^bits shared values; weights stored as indices + codebook."""

    bits: int = param(5, help="index bits for Linear layers: 2^bits shared values per layer (Han et al.: 5 for "
                      "fully connected layers)", check=Interval(1, 8, integer=True))
    conv_bits: int = param(8, help="index bits for Conv layers (Han et al.: 8)", check=Interval(1, 8, integer=True))
    iterations: int = param(50, help="k-means iterations at most (it stops once no weight changes cluster)",
                            check=Interval(1, 1000, integer=True))
    bias_bits: int = param(0, help="0: biases stay float (the paper shares weights only); 1-8: biases shared too, "
                           "2^bias_bits values per layer (worth it where biases are a large share of the bytes left, "
                           "e.g. a small pruned MLP)", check=Interval(0, 8, integer=True))


def kmeans_1d(values: torch.Tensor, k: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids (k,) sorted, index of each value's centroid) by Lloyd's k-means in 1-D, centroids started
    evenly between ``values.min()`` and ``values.max()``. Deterministic; empty clusters keep their place."""
    v = values.detach().reshape(-1).double()
    if v.numel() == 0:
        return torch.zeros(k, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    centroids = torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)
    assign = None
    for _ in range(iterations):
        centroids = centroids.sort().values
        new = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        counts = torch.bincount(assign, minlength=k).double()
        sums = torch.bincount(assign, weights=v, minlength=k)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    centroids = centroids.sort().values
    return centroids, torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)


def _conv_shell(layer: nn.Module) -> nn.Module:
    """A weightless copy of a conv layer, kept to call its own ``_conv_forward`` (stride, padding modes...)."""
    shell = layer.__class__.__new__(layer.__class__)
    shell.__dict__.update({k: v for k, v in layer.__dict__.items() if k not in ("_parameters", "_buffers")})
    shell.__dict__["_parameters"], shell.__dict__["_buffers"] = {}, {}
    shell.__dict__["_modules"] = {}
    return shell


class ClusteredLayer(LayerStandIn, nn.Module):
    """A Linear (or transformers Conv1D) or Conv layer whose weight is ``codebook[indices]``: ``indices``
    (uint8, the weight's shape and layout) and ``codebook`` (2^bits float values; entry 0 is 0.0 where the
    layer had zeros) are buffers, with ``bias``. Computes with the decoded weight."""

    shares_bias = False

    def __init__(self, layer: nn.Module, indices: torch.Tensor, codebook: torch.Tensor, bits: int):
        super().__init__()
        self._keep_layer(layer)
        self.bits = bits
        self.kind = "conv" if isinstance(layer, CONV_TYPES) else ("conv1d" if is_conv1d(layer) else "linear")
        self.__dict__["_shell"] = _conv_shell(layer) if self.kind == "conv" else None
        self.register_buffer("indices", indices.to(torch.uint8).contiguous())
        self.register_buffer("codebook", codebook.detach().to(layer.weight.dtype).contiguous())
        if not self.shares_bias:
            bias = getattr(layer, "bias", None)
            self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def decoded_weight(self) -> torch.Tensor:
        """The weight in the replaced layer's own layout (a Conv1D's is (in, out))."""
        return self.codebook[self.indices.long()]

    def dense_weight(self) -> torch.Tensor:
        w = self.decoded_weight()
        return w.t() if self.kind == "conv1d" else w

    def held_parameters(self, nonzero: bool = False) -> int:
        """The weight's elements (held as indices) and the bias; the codebook is overhead, like scales."""
        if not nonzero:
            return self.indices.numel() + (0 if self.bias is None else self.bias.numel())
        return int(torch.count_nonzero(self.decoded_weight())) + held_count((self.bias,), True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.decoded_weight().to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if self.kind == "conv":
            return type(self._shell)._conv_forward(self._shell, x, w, b)
        return F.linear(x, w.t() if self.kind == "conv1d" else w, b)

    def extra_repr(self) -> str:
        return f"{self.kind}, weight {tuple(self.indices.shape)} as {self.bits}-bit indices into {self.codebook.numel()} values"


class SharedBiasClusteredLayer(ClusteredLayer):
    """A :class:`ClusteredLayer` whose bias is shared too: ``bias_indices`` (uint8) into ``bias_codebook``;
    ``bias`` reads the decoded bias."""

    shares_bias = True

    def __init__(self, layer: nn.Module, indices: torch.Tensor, codebook: torch.Tensor, bits: int,
                 bias_indices: torch.Tensor, bias_codebook: torch.Tensor, bias_bits: int):
        super().__init__(layer, indices, codebook, bits)
        self.bias_bits = bias_bits
        self.register_buffer("bias_indices", bias_indices.to(torch.uint8).contiguous())
        self.register_buffer("bias_codebook", bias_codebook.detach().to(layer.bias.dtype).contiguous())

    @property
    def bias(self) -> torch.Tensor:
        return self.bias_codebook[self.bias_indices.long()]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bias as {self.bias_bits}-bit indices"


def _shared(values: torch.Tensor, bits: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices shaped as ``values``, codebook of 2^bits) by k-means over the non-zero values; an exact zero
    keeps index 0 = 0.0 where there are zeros."""
    w = values.detach()
    k = 2 ** bits
    nonzero = w != 0
    if bool((~nonzero).any()):
        centroids, assign = kmeans_1d(w[nonzero], k - 1, iterations)
        indices = torch.zeros(w.shape, dtype=torch.long)
        indices[nonzero] = assign + 1
        return indices, torch.cat([torch.zeros(1, dtype=torch.float64), centroids])
    codebook, assign = kmeans_1d(w, k, iterations)
    return assign.reshape(w.shape), codebook


def cluster_layer(layer: nn.Module, bits: int, iterations: int, bias_bits: int = 0) -> ClusteredLayer:
    """``layer`` with its weight shared: k-means over its non-zero weights (zeros keep index 0 = 0.0); with
    ``bias_bits`` (and a bias) its bias shared too."""
    indices, codebook = _shared(layer.weight, bits, iterations)
    if bias_bits and getattr(layer, "bias", None) is not None:
        return SharedBiasClusteredLayer(layer, indices, codebook, bits, *_shared(layer.bias, bias_bits, iterations),
                                        bias_bits)
    return ClusteredLayer(layer, indices, codebook, bits)


def _parse_bits(text: str) -> int:
    try:
        bits = int(str(text).strip())
    except ValueError:
        bits = 0
    if not 1 <= bits <= 8:
        raise InvalidConfigError(f"--cluster {shown(text)}: bits must be an integer from 1 to 8 (e.g. --cluster 5).")
    return bits


@register_method(
    "quantize.cluster",
    ClusterConfig,
    supported=(*LINEAR_TYPES, *CONV_TYPES),
    family="quantization",
    help="Weight sharing (Deep Compression): per-layer k-means into 2^bits shared values (5 bits for Linear, 8 "
         "for Conv), linear initialisation, zeros kept; indices + codebook: smaller, not faster.",
    aliases=("cluster",),
    streams=True,
    stage="precision",
    order=4,
    dial="bits",
    options=(MagicOption("--cluster", "BITS", _parse_bits, lambda bits: {"bits": bits}, const=5, help_field="bits",
                         help="weight sharing by k-means (Deep Compression); BITS for Linear layers, default 5"),),
)
def apply_cluster(model: nn.Module, names: list[str], config: ClusterConfig, ctx: Any) -> MethodResult:
    inputs = _inputs(model, names, ctx, "quantize.cluster", linear_only=False)
    replacements, rows = {}, []
    for name in names:
        old = model.get_submodule(name)
        reason = parent_reads_weight(model, name)
        if reason:
            rows.append(layer_row(name, "quantize.cluster", old, None, skipped=reason))
            continue
        if not old.weight.is_floating_point():
            rows.append(layer_row(name, "quantize.cluster", old, None, skipped=f"weight is {old.weight.dtype}"))
            continue
        bits = config.conv_bits if isinstance(old, CONV_TYPES) else config.bits
        new = cluster_layer(old, bits, config.iterations, config.bias_bits)
        err = output_error(old, new, inputs.get(name, []))
        rows.append(layer_row(name, "quantize.cluster", old, new, error=err, error_kind="rel_output_error",
                              detail={"bits": bits, "shared_values": int(new.codebook.numel()),
                                      **({"bias_bits": new.bias_bits} if new.shares_bias else {}),
                                      "sqnr_db": round(sqnr_db(old.weight, new.decoded_weight()), 2)}))
        hand_over(ctx, replacements, name, new)
    notes = ["Weight sharing: each layer computes with its decoded weight (codebook[indices]): smaller on disk "
             "(save(..., compact=True) stores the indices at their bit width) and in memory, not faster."]
    notes += unsupported_note(model, (*LINEAR_TYPES, *CONV_TYPES), "quantize.cluster")
    return MethodResult(replacements, rows, notes)


def finetune_centroids(model: nn.Module, batches: Iterable[tuple[Any, torch.Tensor]], *, epochs: int = 1,
                       lr: float = 1e-3, loss: Callable[[Any, torch.Tensor], torch.Tensor] | None = None) -> float:
    """Train the codebooks of ``model``'s clustered layers in place (the paper's centroid fine-tuning: each
    shared value moves by the sum of its weights' gradients); everything else stays as it is, and a shared
    value of exactly 0.0 (the pruned weights') stays 0.0. ``batches``: (inputs, targets) pairs, re-iterated
    each epoch; ``loss(output, targets)``: cross-entropy by default. Returns the last epoch's mean loss."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidConfigError(f"finetune_centroids: epochs must be an integer >= 1; got {shown(epochs, 40)}.")
    layers = [m for m in model.modules() if isinstance(m, ClusteredLayer)]
    if not layers:
        raise InvalidConfigError("finetune_centroids: the model has no clustered layer; apply quantize.cluster "
                                 "first (ClusterConfig or --cluster).")
    loss = loss or F.cross_entropy
    books = [nn.Parameter(m.codebook.detach().clone()) for m in layers]
    keep = [(b.detach() != 0).to(b.dtype) for b in books]
    saved = [m.codebook for m in layers]
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.Adam(books, lr=lr)
    was_training = model.training
    model.train()
    mean = float("nan")
    try:
        for _ in range(epochs):
            total, count = 0.0, 0
            for x, y in batches:
                for m, b, k in zip(layers, books, keep):
                    m._buffers["codebook"] = b * k  # a zero shared value stays zero
                value = loss(model(x), y)
                opt.zero_grad()
                value.backward()
                opt.step()
                total, count = total + float(value.detach()), count + 1
            mean = total / max(count, 1)
    finally:
        for m, b, k, old in zip(layers, books, keep, saved):
            m._buffers["codebook"] = (b.detach() * k).to(old.dtype).contiguous()
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return mean
