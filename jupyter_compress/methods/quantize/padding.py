"""Padding trimmed: the rows of a padded batch run in groups of similar real length (issue 21).

A tokenizer pads every row of a batch to its longest row (or to ``max_length``), and a runtime then computes
the padded positions as if they were tokens: on a batch of 32 held-out MiniLM sentences 56% of the positions
were padding. A model that masks its attention computes the real positions of a row from that row's real
tokens only, so the rows can run in groups, each cut to its own longest row, and the outputs put back in
place. The real positions keep their values (up to kernel rounding, checked at export); the padded positions
of the outputs come back as zeros, as PyTorch's nested-tensor fast path and Hugging Face's unpadded attention
return them. With ``trim_padding='auto'`` this is used only where the model's output was seen not to read
those positions (sentence-transformers' pooling, a classifier's first token).

No runtime does this for a whole padded batch on CPU (ONNX Runtime and OpenVINO compute the batch as given;
Hugging Face's unpadding is inside its CUDA attention kernels), so it is ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["length_groups", "row_groups", "scatter_rows", "use_trim", "padding_reaches_output", "TRIM_MODES"]

TRIM_MODES = ("auto", "on", "off")
# The cost model of a group: a fixed cost per call worth CALL_TOKENS token positions, and a cost per position
# that grows with the length by 1/QUADRATIC (attention). Fitted to MiniLM int8 on OpenVINO here (0.43 ms a
# call, 0.0144 ms a position, +0.0023 per position of length); only the grouping depends on it, never a value.
CALL_TOKENS = 32
QUADRATIC = 440.0
MAX_ROWS = 8192  # larger batches (quadratic grouping) run as given


def length_groups(lengths: np.ndarray, bucket: int = 0) -> list[tuple[np.ndarray, int]]:
    """``(rows, length)`` groups covering every row, each run cut to ``length`` (its longest row, rounded up to
    a multiple of ``bucket``), chosen to minimise the modelled cost (dynamic programming over the rows sorted
    by length: the best groups are runs of that order)."""
    order = np.argsort(lengths, kind="stable")
    sizes = lengths[order].astype(np.float64)
    if bucket:
        sizes = np.ceil(sizes / bucket) * bucket
    n = len(sizes)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    starts = np.arange(n)
    for end in range(1, n + 1):
        length = sizes[end - 1]
        cost = best[:end] + (end - starts[:end]) * length * (1.0 + length / QUADRATIC) + CALL_TOKENS
        cut[end] = int(np.argmin(cost))
        best[end] = cost[cut[end]]
    groups = []
    end = n
    while end > 0:
        start = int(cut[end])
        rows = np.sort(order[start:end])
        groups.append((rows, int(lengths[order[end - 1]])))
        end = start
    return groups[::-1]


def row_groups(feed: list[np.ndarray], mask_input: int, bucket: int = 0,
               each_row: bool = False) -> list[tuple[np.ndarray, int]] | None:
    """The groups of a call, or None to run it as given: the mask is not 0/1 right padding (left padding,
    a 4-D mask), an input has no batch axis, or no row is padded. ``each_row``: a
    group per row, cut to its own length (the strictest check of a graph, used at export)."""
    mask = feed[mask_input]
    if mask.ndim != 2 or not 0 < mask.shape[0] <= MAX_ROWS or mask.shape[1] < 2 or \
            (mask.shape[0] == 1 and mask[0, -1] != 0):  # one unpadded row (latency serving): nothing to cut, fast
        return None
    batch, full = mask.shape
    if any(a.ndim == 0 or a.shape[0] != batch for a in feed):
        return None
    ones = mask != 0
    lengths = ones.sum(1)
    if not np.array_equal(ones, np.arange(full)[None, :] < lengths[:, None]) or not np.all(mask[ones] == 1):
        return None
    if lengths.min() == full:
        return None
    lengths = np.maximum(lengths, 1)
    if each_row:
        return [(np.array([r]), int(n)) for r, n in enumerate(lengths)]
    return length_groups(lengths, bucket)


def cut_feed(feed: list[np.ndarray], rows: np.ndarray, length: int, pad_inputs: tuple[int, ...]) -> list:
    if len(rows) == len(feed[0]) and length == feed[0].shape[1]:  # the whole call: no copy
        return feed
    return [np.ascontiguousarray(a[rows][:, :length] if i in pad_inputs else a[rows]) for i, a in enumerate(feed)]


def scatter_rows(pieces: list[tuple[np.ndarray, int, list[torch.Tensor]]], real: np.ndarray,
                 seq_axes: tuple[tuple[int, ...], ...], fill: float = 0.0) -> list[torch.Tensor]:
    """The groups' outputs put back in their rows, at full length; every padded position (``real``: the
    [batch, length] mask of real positions) holds ``fill``, inside a group's length too, so the output does not
    depend on how the rows were grouped."""
    batch, full = real.shape
    keep = torch.from_numpy(np.ascontiguousarray(real))
    outputs = []
    for i, first in enumerate(pieces[0][2]):
        axes = seq_axes[i] if i < len(seq_axes) else ()
        shape = [batch] + [full if a in axes else first.shape[a] for a in range(1, first.dim())]
        out = torch.full(shape, fill, dtype=first.dtype)
        for rows, length, got in pieces:
            place = tuple(slice(0, length) if a in axes else slice(None) for a in range(1, got[i].dim()))
            out[(torch.from_numpy(rows), *place)] = got[i]
        for a in axes:  # padded positions along each sequence axis
            view = [batch] + [full if b == a else 1 for b in range(1, out.dim())]
            out = out.masked_fill(~keep.reshape(view), fill)
        outputs.append(out)
    return outputs


def _ragged(feed: list[np.ndarray], mask_input: int, pad_inputs: tuple[int, ...]) -> list[np.ndarray]:
    """The call itself when its rows differ in length; else a copy whose every other row is cut to half its
    length (mask 0 and token 0 after it), so that the check below always compares trimmed groups."""
    mask = feed[mask_input]
    lengths = (mask != 0).sum(1)
    if mask.ndim == 2 and mask.shape[0] > 1 and len(set(lengths.tolist())) > 1:
        return feed
    out = [a.copy() for a in feed]
    if mask.ndim != 2:
        return out
    if mask.shape[0] == 1:  # one row: a second, shorter copy of it
        out = [np.concatenate([a, a]) if a.ndim and a.shape[0] == 1 else a for a in out]
    for row in range(1, out[mask_input].shape[0], 2):
        keep = max(1, int(lengths[min(row, len(lengths) - 1)]) // 2)
        for i in pad_inputs:
            out[i][row, keep:] = 0
    return out


def _real_positions(outputs: list[torch.Tensor], lengths: np.ndarray, seq_axes) -> list[torch.Tensor]:
    """Each output's values at real positions only (per row, its sequence axes cut to the row's length)."""
    kept = []
    for i, out in enumerate(outputs):
        axes = seq_axes[i] if i < len(seq_axes) else ()
        kept.append(torch.cat([out[r][tuple(slice(0, int(n)) if a + 1 in axes else slice(None)
                                            for a in range(out.dim() - 1))].reshape(-1)
                               for r, n in enumerate(lengths)]) if out.dim() and out.shape[0] == len(lengths)
                    else out.reshape(-1))
    return kept


def use_trim(module: Any, tensors: list[torch.Tensor], run: Callable[[list, bool], list[torch.Tensor]]) -> str:
    """Turn trimming on when it keeps the real positions of a ragged call, each row run on its own cut to its
    length (cosine >= 0.99999 per output, same shapes); the note says why not otherwise. ``run(feed, trim)``: the
    module's flat outputs, ``trim`` False, True or 'each_row'."""
    if module.mask_input < 0:
        return "padding not trimmed (not called with a 2-D attention_mask over token inputs)"
    feed = _ragged([t.detach().cpu().contiguous().numpy() for t in tensors], module.mask_input, module.pad_inputs)
    if row_groups(feed, module.mask_input, each_row=True) is None:
        return "padding not trimmed (the example call is not right-padded with a 0/1 mask)"
    lengths = np.maximum((feed[module.mask_input] != 0).sum(1), 1)
    try:
        whole, trimmed = run(list(feed), False), run(list(feed), "each_row")
        ok = len(whole) == len(trimmed) and all(a.shape == b.shape for a, b in zip(whole, trimmed))
        if ok:
            pairs = zip(_real_positions(whole, lengths, module.seq_axes),
                        _real_positions(trimmed, lengths, module.seq_axes))
            # the same graph on other shapes: MiniLM int8 kept 1 - cosine ~3e-8 here, so 1e-5 leaves a wide
            # margin for kernel rounding and still catches a row whose real positions read its padding
            ok = all(_cosine(a, b) >= 0.99999 for a, b in pairs)
        why = "its real positions differ from the padded run's"
    except Exception as exc:  # an output without a batch axis, ...: run as given, and say why
        ok, why = False, f"{type(exc).__name__}: {str(exc)[:80]}"
    if not ok:
        return f"padding not trimmed ({why})"
    module.trim = module.can_trim = True
    return "trimming the padding keeps the real positions"


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if a.numel() else 1.0


def padding_reaches_output(model: nn.Module, region: str, served: nn.Module, batches: list) -> bool | None:
    """Whether the model's primary output reads the padded positions of ``served``'s outputs (``served`` in
    place of ``region``; "" for the whole model): each batch run twice, with those positions filled with 0 and
    with 1, outputs compared bit for bit. None when no batch had padding to trim (nothing seen). The model is
    restored whatever happens."""
    from ...core.metrics import call_model, eval_mode, primary_output
    from ...core.modules import swap_submodule
    from ._common import fresh

    original = model.get_submodule(region) if region else None
    runner = model if region else served
    seen = False
    try:
        if region:
            swap_submodule(model, region, served)
        with torch.inference_mode(), eval_mode(runner):
            for batch in batches:
                before = served.trimmed_calls
                outs = []
                for fill in (0.0, 1.0):
                    served.fill = fill
                    outs.append(primary_output(call_model(runner, fresh(batch))))
                seen = seen or served.trimmed_calls > before
                if outs[0] is None or outs[1] is None or not torch.equal(outs[0], outs[1]):
                    return True
    finally:
        served.fill = 0.0
        if region:
            swap_submodule(model, region, original)
    return False if seen else None


def trim_note(region: str, mode: str, reaches: bool | None) -> str:
    """What trimming was decided for ``region`` (``mode`` 'auto' or 'on'; ``reaches`` as above, False for 'on')."""
    if reaches is None:
        return (f"{region}: padding not trimmed: no calibration batch was padded, so it was not seen whether the "
                f"model's output reads padded positions (trim_padding='on' trims them anyway).")
    if reaches:
        return (f"{region}: padding not trimmed: the model's output reads the padded positions of its output "
                f"(trim_padding='on' trims them anyway, returning zeros there).")
    return (f"{region}: rows run grouped by real length, padding trimmed ({mode}); padded positions of its output "
            f"are zeros, which the model's output was checked not to read.")

