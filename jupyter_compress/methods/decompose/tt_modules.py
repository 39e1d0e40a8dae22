"""Tensor-Train layers: small modules of standard ops (reshape, einsum, index_select), ONNX-exportable.

A weight matrix (rows x cols), padded to prod(row_modes) x prod(col_modes), is stored as d cores
G_k of shape (r_{k-1}, row_k, col_k, r_k) with r_0 = r_d = 1 (Novikov et al. 2015, "Tensorizing
neural networks"). A custom module is needed: no torch layer holds a TT matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._common import LayerStandIn

__all__ = ["TTLinear", "TTEmbedding", "tt_matrix", "balanced_modes"]


def _best_split(n: int, d: int) -> tuple[int, ...] | None:
    """The most balanced d factors of n (smallest largest factor, then largest smallest one)."""
    if d == 1:
        return (n,)
    best = None
    for f in range(1, int(round(n ** (1 / d))) + 2):
        if n % f == 0:
            rest = _best_split(n // f, d - 1)
            if rest is not None and f <= min(rest):
                cand = (f, *rest)
                if best is None or (max(cand), -min(cand)) < (max(best), -min(best)):
                    best = cand
    return best


def balanced_modes(n: int, d: int) -> tuple[int, ...]:
    """d factors of the smallest n' >= n whose factors are balanced (largest <= 2 * n'^(1/d) + 1)."""
    for m in range(n, 2 * n + 8):
        split = _best_split(m, d)
        if split is not None and max(split) <= 2 * m ** (1 / d) + 1:
            return tuple(sorted(split))
    return (n,) + (1,) * (d - 1)


def tt_matrix(cores) -> torch.Tensor:
    """The full (prod rows x prod cols) matrix a list of TT cores stands for."""
    full = cores[0]  # (1, m1, n1, r1)
    rows, cols = full.shape[1], full.shape[2]
    full = full.reshape(rows, cols, -1)
    for core in cores[1:]:
        r0, m, n, r1 = core.shape
        full = torch.einsum("abr,rmns->ambns", full, core).reshape(rows * m, cols * n, r1)
        rows, cols = rows * m, cols * n
    return full[:, :, 0]


def _shape_only(rows: int, cols: int, device, dtype) -> torch.Tensor:
    return torch.zeros((), device=device, dtype=dtype).expand(rows, cols)


class TTLinear(LayerStandIn, nn.Module):
    """y = x W^T + b with W (out x in) held as a Tensor-Train matrix.

    ``weight`` is a stand-in (out, in) (the replaced layer's shape, dtype and device; its values are the
    TT matrix, computed when used); ``apply_tt`` records the replaced layer (a Conv1D's (in, out) layout).
    """

    def __init__(self, in_features: int, out_features: int, out_modes, in_modes, ranks, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self._keep_layer(None, {"weight": _shape_only(out_features, in_features, device, dtype)})
        self.in_features, self.out_features = in_features, out_features
        self.out_modes, self.in_modes, self.ranks = tuple(out_modes), tuple(in_modes), tuple(ranks)
        kw = dict(device=device, dtype=dtype)
        self.cores = nn.ParameterList(
            nn.Parameter(torch.zeros(ranks[k], out_modes[k], in_modes[k], ranks[k + 1], **kw))
            for k in range(len(out_modes)))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        n_in = math.prod(self.in_modes)
        t = x.reshape(-1, x.shape[-1])
        if n_in > self.in_features:
            t = nn.functional.pad(t, (0, n_in - self.in_features))
        # t: (P, i_k, r_k, Q) with P = batch * prod(in_modes[:k]) and Q = prod(out_modes[k+1:])
        t = t.reshape(-1, self.in_modes[-1], 1, 1)
        for k in range(len(self.cores) - 1, -1, -1):
            t = torch.einsum("pirq,soir->psoq", t, self.cores[k])
            if k:
                t = t.reshape(-1, self.in_modes[k - 1], t.shape[1], t.shape[2] * t.shape[3])
        y = t.reshape(-1, math.prod(self.out_modes))[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def dense_weight(self) -> torch.Tensor:
        """The TT matrix (out, in)."""
        return tt_matrix(list(self.cores))[: self.out_features, : self.in_features]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, out_modes={self.out_modes}, "
                f"in_modes={self.in_modes}, ranks={self.ranks}, bias={self.bias is not None}")


class TTEmbedding(LayerStandIn, nn.Module):
    """An embedding table (num_embeddings x embedding_dim) held as a Tensor-Train matrix.

    Every row is the TT approximation of the original row, the padding row included (its value is
    kept, not forced to zero: a loaded table may hold a non-zero padding row). ``weight`` is a stand-in
    for the table (computed when used).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, row_modes, col_modes, ranks,
                 device=None, dtype=None) -> None:
        super().__init__()
        self._keep_layer(None, {"weight": _shape_only(num_embeddings, embedding_dim, device, dtype)})
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.row_modes, self.col_modes, self.ranks = tuple(row_modes), tuple(col_modes), tuple(ranks)
        self.cores = nn.ParameterList(
            nn.Parameter(torch.zeros(ranks[k], row_modes[k], col_modes[k], ranks[k + 1], device=device, dtype=dtype))
            for k in range(len(row_modes)))

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        flat = index.reshape(-1)
        out = None
        stride = math.prod(self.row_modes)
        for k, core in enumerate(self.cores):
            stride //= self.row_modes[k]
            digit = torch.div(flat, stride, rounding_mode="floor") % self.row_modes[k]
            g = core.index_select(1, digit).permute(1, 0, 2, 3)  # (N, r_{k-1}, col_k, r_k)
            if out is None:
                out = g[:, 0]  # (N, col_1, r_1)
            else:
                out = torch.einsum("npr,nrqs->npqs", out, g).reshape(flat.shape[0], -1, g.shape[-1])
        rows = out[:, : self.embedding_dim, 0]
        return rows.reshape(*index.shape, self.embedding_dim)

    def dense_weight(self) -> torch.Tensor:
        """The table (num_embeddings, embedding_dim)."""
        return tt_matrix(list(self.cores))[: self.num_embeddings, : self.embedding_dim]

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, row_modes={self.row_modes}, "
                f"col_modes={self.col_modes}, ranks={self.ranks}")
