"""Shared machinery of the layer-wise second-order (Optimal Brain Surgeon family) methods: GPTQ (Frantar,
Ashkboos, Hoefler & Alistarh 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", arXiv:2210.17323) and SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models
Can Be Accurately Pruned in One-Shot", arXiv:2301.00774). Written here from the papers.

Both solve, layer by layer, ``min ||W X - W' X||^2`` over a constrained ``W'`` (on a quantization grid, or
with zeros), where ``X`` holds the layer's inputs on calibration data. The loss's Hessian is ``H = 2 X^T X``;
both walk the input columns left to right, fix one column at a time and spread its error over the columns not
yet fixed with the rows of the upper Cholesky factor of ``H^-1`` (the OBS update), in blocks of 128 columns
whose updates to the later columns are applied at once ("lazy batch" updates: same result, matrix products).

Numerics: each batch's ``X^T X`` is a float32 product (BLAS speed; one batch sums at most a few thousand rows,
~1e-6 relative error), accumulated across batches in float64 so that many batches add no drift; dampening,
Cholesky and inverse are float64 (a near-singular ``H`` from few or correlated rows is common), the column
sweep float32 as in the papers. Rows are all token positions of all batches (leading dims flattened), except
padding: when a batch carries an ``attention_mask`` (batch, tokens) of 0 / 1 (a tokenizer's output), a layer
input shaped (batch, tokens, features) contributes the rows of real tokens only. The model discards its
outputs at padded positions, and with them (61% of the positions of MiniLM's calibration batches of 25
sentences) the Hessian fits what no output uses: measured on MiniLM, GPTQ int4 then lost ~0.002 of cosine.

Order: by default (``sequential``) layers are compressed in forward order and each later layer's ``H`` is
measured on the model whose earlier layers are already compressed, as the papers do. Layers are grouped by
the order observed in one calibration pass (layers reading the same input tensor, e.g. query / key / value,
form one group); each group costs one pass over the calibration batches, cut short once the group has
seen its inputs. A finished layer is handed over at once (``methods._common.hand_over``): when the core
streams, it is swapped into the model, so later passes run it; otherwise a forward hook on the original layer
returns the replacement's output for the rest of the method's run. ``sequential=False``: every ``H`` from the
original model in one pass.

A layer's inputs that are always zero (``H`` diagonal 0) are dead: their weight column is set to 0 and the
diagonal to 1. A layer no calibration batch reached gets ``H = I``: the method then reduces to
round-to-nearest (GPTQ) or magnitude selection within blocks (SparseGPT), and its row says so.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CompressError
from ._common import hand_over, layer_row, parent_reads_weight
from .quantize._common import calibration_batches, run_batches

__all__ = ["LayerStats", "inverse_factor", "OBSSweep", "relative_output_error", "run_layerwise"]

BLOCK = 128  # columns per lazy-batch block (the papers' B)


class LayerStats:
    """A layer's input statistics on the calibration data: ``sum x x^T`` (float64), ``sum x`` and the row count."""

    def __init__(self) -> None:
        self.xtx: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if not x.shape[0]:
            return
        product = (x.t() @ x).double()
        if self.xtx is None:
            self.xtx, self.total = product, x.sum(dim=0, dtype=torch.float64)
        else:
            self.xtx.add_(product)
            self.total.add_(x.sum(dim=0, dtype=torch.float64))
        self.rows += x.shape[0]

    def hessian(self, features: int, device: torch.device) -> torch.Tensor:
        """``H = 2 X^T X / rows`` (float64), or ``I`` when no input was seen (the scale does not matter)."""
        if self.xtx is None or self.xtx.shape[0] != features:
            return torch.eye(features, dtype=torch.float64, device=device)
        return self.xtx.mul(2.0 / self.rows)


def inverse_factor(hessian: torch.Tensor, weight: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, dict]:
    """The upper Cholesky factor ``U`` of ``(H + damp I)^-1`` (``U^T U = H^-1``) as float32, and facts for the
    row (dead inputs, the dampening used). Zeroes ``weight``'s dead columns in place (float32 (out, in)).

    ``damp = percdamp * mean(diag H)``; when ``H`` is still not positive definite (it can be only through
    rounding), the dampening is multiplied by 10 up to six times, and the row records the value used."""
    h = hessian.clone()
    diag = torch.diagonal(h)
    dead = diag == 0
    diag[dead] = 1.0
    weight[:, dead.to(weight.device)] = 0
    mean = float(diag.mean())
    damp = percdamp * mean
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    for _ in range(7):
        factor, info = torch.linalg.cholesky_ex(h + damp * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                break
        damp = max(damp * 10.0, 1e-6 * mean)
    else:
        raise CompressError("A layer's calibration Hessian is not positive definite even with 10^6 times the "
                            "dampening (non-finite inputs or weights?); raise percdamp or check the data.")
    return upper.float().to(weight.device), {"dead_inputs": int(dead.sum()), "damp": round(damp / mean, 6)}


class OBSSweep:
    """The column sweep shared by GPTQ and SparseGPT, run on ``weight`` (float32 (out, in), changed in place).

    ``column(p, sweep)`` returns the new values of column ``p`` (quantized, or with zeros), read from
    ``sweep.block[:, p - sweep.start]``; ``begin(sweep)`` (optional) runs at each block's start. After a
    column is fixed its error, divided by ``U[p, p]``, is spread over the later columns of the block at once
    and over the columns after the block when the block ends (lazy batch updates)."""

    def __init__(self, weight: torch.Tensor, upper: torch.Tensor, block: int = BLOCK):
        self.weight, self.upper, self.size = weight, upper, block
        self.start = self.stop = 0
        self.block = self.block_upper = None

    def current(self, positions: torch.Tensor) -> torch.Tensor:
        """The current (error-updated) values of columns ``positions``, none of them fixed yet: (out, len)."""
        values = self.weight[:, positions].clone()
        inside = positions < self.stop
        if bool(inside.any()):
            values[:, inside] = self.block[:, positions[inside] - self.start]
        return values

    def run(self, column: Callable[[int, OBSSweep], torch.Tensor],
            begin: Callable[[OBSSweep], None] | None = None) -> torch.Tensor:
        w, u = self.weight, self.upper
        columns = w.shape[1]
        for start in range(0, columns, self.size):
            stop = min(start + self.size, columns)
            self.start, self.stop = start, stop
            self.block = w[:, start:stop].clone(memory_format=torch.contiguous_format)
            self.block_upper = u[start:stop, start:stop]
            errors = torch.zeros_like(self.block)
            if begin is not None:
                begin(self)
            for i in range(stop - start):
                fixed = column(start + i, self)
                error = (self.block[:, i] - fixed) / self.block_upper[i, i]
                self.block[:, i:].addr_(error, self.block_upper[i, i:], alpha=-1.0)
                self.block[:, i] = fixed  # exactly the fixed values (grid points, zeros), not w - (w - q)
                errors[:, i] = error
            w[:, start:stop] = self.block
            if stop < columns:
                w[:, stop:].addmm_(errors, u[start:stop, stop:], alpha=-1.0)
        self.block = self.block_upper = None
        return w


def relative_output_error(stats: LayerStats, weight: torch.Tensor, bias: torch.Tensor | None,
                          *new_weights: torch.Tensor) -> list[float | None]:
    """``||f(X) - g(X)|| / ||f(X)||`` over every calibration row for each of ``new_weights``, from the statistics
    alone (f: the layer with ``weight`` and ``bias``; g: with a new weight, same bias): ``tr(D S D^T) / ||W X +
    b||^2`` with ``D`` the weight change and ``S = X^T X``. Float32 products (an error to a few digits)."""
    if stats.xtx is None or stats.xtx.shape[0] != weight.shape[1]:
        return [None] * len(new_weights)
    s = stats.xtx.to(device=weight.device, dtype=torch.float32)
    w = weight.detach().float()
    den = float(((w @ s).double() * w.double()).sum())
    if bias is not None:
        b = bias.detach().double()
        den += 2.0 * float(b @ (w.double() @ stats.total.to(w.device))) + stats.rows * float(b @ b)
    out = []
    for new in new_weights:
        d = new.detach().float() - w
        num = float(((d @ s).double() * d.double()).sum())
        out.append((max(num, 0.0) / den) ** 0.5 if den > 0 else None)
    return out


class _Stop(Exception):  # noqa: N818 - ends a calibration batch once the group has seen its inputs
    pass


def _observe(model: nn.Module, names: list[str], batch: Any, example: Any) -> tuple[list[list[str]], dict]:
    """Layers grouped in the order they are first called on one batch (consecutive layers reading the same
    input tensor share a group), and each layer's calls per forward; layers never called come last, alone."""
    order, calls, groups = [], collections.Counter(), []
    last: list = [None]  # the input tensor of the latest group's first layer

    def hook_for(name: str):
        def hook(module, args):
            calls[name] += 1
            if name in order:
                return
            order.append(name)
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if groups and x is not None and x is last[0]:
                groups[-1].append(name)
            else:
                groups.append([name])
                last[0] = x
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        run_batches(model, [batch], names, example)
    finally:
        for h in handles:
            h.remove()
        last[0] = None
    return groups + [[n] for n in names if n not in order], calls


def _attention_mask(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The batch's ``attention_mask`` (batch, tokens) as booleans, from the model call's keyword arguments or
    a dict passed whole (sentence-transformers); None when there is none or it is not 0 / 1."""
    mask = kwargs.get("attention_mask")
    for value in args if mask is None else ():
        if isinstance(value, Mapping) and isinstance(value.get("attention_mask"), torch.Tensor):
            mask = value["attention_mask"]
            break
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or not bool(((mask == 0) | (mask == 1)).all()):
        return None
    return mask.bool()


def _collect(model: nn.Module, layers: list[str], batches: list, names: list[str], example: Any,
             calls: dict | None) -> dict[str, LayerStats]:
    """Statistics of ``layers``' inputs over every batch; with ``calls`` (each layer's calls per forward) a
    batch ends as soon as every layer has had them (the rest of the forward cannot change these inputs)."""
    stats = {n: LayerStats() for n in layers}
    seen: collections.Counter = collections.Counter()
    early = calls is not None and all(calls.get(n, 0) > 0 for n in layers)
    batch_mask: list = [None]

    def start(module, args, kwargs):  # a new batch: reset the call counts, find its attention mask
        seen.clear()
        batch_mask[0] = _attention_mask(args, kwargs)

    def hook_for(name: str):
        def hook(module, args):
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                x, mask = args[0], batch_mask[0]
                if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                    x = x[mask.to(x.device)]  # the real tokens' rows only
                stats[name].add(x)
            seen[name] += 1
            if early and all(seen[n] >= calls[n] for n in layers):
                raise _Stop
        return hook

    handles = [model.register_forward_pre_hook(start, with_kwargs=True)]
    handles += [model.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in layers]
    try:
        run_batches(model, batches, names, example, stop=_Stop)
    finally:
        for h in handles:
            h.remove()
    return stats


Build = Callable[[str, nn.Module, "LayerStats | None"], tuple["nn.Module | None", Any]]


def run_layerwise(model: nn.Module, names: list[str], ctx: Any, *, method: str, sequential: bool,
                  build: Build) -> tuple[dict[str, nn.Module], list, list[str]]:
    """Run ``build(name, layer, stats) -> (replacement or None, report row)`` on every layer, in forward
    order, with the statistics of its inputs (see the module docstring); ``stats`` is None when a saved model
    is rebuilt (``ctx.replay``: its values are loaded afterwards, so only the structure is built, without
    calibration). Returns (replacements not yet handed over, rows in the order of ``names``, notes)."""
    replacements: dict[str, nn.Module] = {}
    rows, todo = [], []
    for name in names:
        why = parent_reads_weight(model, name)
        if why:
            rows.append(layer_row(name, method, model.get_submodule(name), None, skipped=why))
        else:
            todo.append(name)
    if getattr(ctx, "replay", False) or not todo:
        for name in todo:
            new, row = build(name, model.get_submodule(name), None)
            rows.append(row)
            if new is not None:
                hand_over(ctx, replacements, name, new)
        return replacements, _in_order(rows, names), []
    batches = calibration_batches(ctx, required=True, method=method)
    example = getattr(ctx, "example_inputs", None)
    groups, calls = _observe(model, todo, batches[0], example)
    substitutes = []  # forward hooks standing in for replacements the core has not swapped in
    try:
        every = None if sequential else _collect(model, todo, batches, todo, example, None)
        for group in groups:
            stats = _collect(model, group, batches, todo, example, calls) if sequential else \
                {n: every.pop(n) for n in group}
            for name in group:
                old = model.get_submodule(name)
                new, row = build(name, old, stats.pop(name))
                rows.append(row)
                if new is None:
                    continue
                hand_over(ctx, replacements, name, new)
                if sequential and getattr(ctx, "sink", None) is None:
                    substitutes.append(old.register_forward_hook(
                        lambda module, args, out, new=new: new(*args)))
    finally:
        for h in substitutes:
            h.remove()
    unreached = [r.name for r in rows if r.skipped is None and not (r.detail or {}).get("calibration_rows")]
    notes = [f"{len(batches)} calibration batch(es) gave each layer's Hessian; "
             + ("layers were compressed in forward order, each measured on the model with the layers before it "
                f"already compressed ({len(groups)} passes)." if sequential else
                "all from the original model in one pass (sequential=False).")]
    if unreached:
        notes.append(f"No calibration batch reached {', '.join(unreached[:4])}{', ...' if len(unreached) > 4 else ''}"
                     ": compressed without a Hessian (identity), i.e. without the second-order correction.")
    return replacements, _in_order(rows, names), notes


def _in_order(rows: list, names: list[str]) -> list:
    index = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda r: index.get(r.name, len(index)))
