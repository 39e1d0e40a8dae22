"""Weight-only int8 / int4 of embedding tables (``nn.Embedding``).

In a small encoder the token embedding table is often the largest tensor (MiniLM: 30522 x 384, half of its
parameters), and no Linear method touches it. Each row is quantized symmetrically in groups of
``group_size`` columns (one scale per group); a lookup gathers only the rows asked for and dequantizes them,
so memory holds the codes and run time adds one multiply per gathered value. torch.ao's quantized
embedding ops cover int8 / int4 of ``EmbeddingBag`` on fbgemm with per-row scales and zero points; they do not
take ``nn.Embedding`` with padding rows and group-wise scales, so the few lines of gather-and-scale are ours.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ...core.config import IntAtLeast, MethodConfig, param
from ...core.registry import MagicOption, MethodResult, register_method
from .._common import LayerStandIn, hand_over, layer_row, parent_reads_weight
from ._common import held_count, sqnr_db
from .qlinear import pack_int4, quantize_groups, unpack_int4

__all__ = ["EmbeddingQuantConfig", "QuantizedEmbedding"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingQuantConfig(MethodConfig):
    """Embedding tables in int8 or int4, one scale per group of columns of each row."""

    bits: int = param(8, help="bits per weight: 8 or 4 (two int4 values packed per byte)", choices=(8, 4))
    group_size: int = param(64, help="columns of a row sharing one scale (smaller: more accurate, more "
                            "scales); a table narrower than this uses one group per row", check=IntAtLeast(2))


class QuantizedEmbedding(LayerStandIn, nn.Module):
    """An ``nn.Embedding`` holding int8 / int4 codes and per-row-group scales; a lookup dequantizes the rows
    it gathers. ``weight`` reads as the replaced table (a stand-in dequantized when its values are used)."""

    def __init__(self, embedding: nn.Embedding, bits: int, group: int):
        super().__init__()
        self._keep_layer(embedding)
        weight = embedding.weight.detach()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.bits, self.group = bits, group
        q, scale = quantize_groups(weight, bits, group)
        if bits <= 4:  # two signed 4-bit values per byte
            q = pack_int4(q)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale.to(weight.dtype))

    def _codes(self, rows: torch.Tensor) -> torch.Tensor:
        return unpack_int4(rows) if self.bits <= 4 else rows

    def _dequantize(self, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        shape = codes.shape[:-1]
        q = codes.reshape(*shape, -1, self.group).to(scale.dtype)
        return (q * scale[..., None]).reshape(*shape, self.embedding_dim)

    def dequantized_weight(self) -> torch.Tensor:
        return self._dequantize(self._codes(self.qweight), self.scale)

    dense_weight = dequantized_weight

    def held_parameters(self, nonzero: bool = False) -> int:
        """One parameter per table entry (two per byte for int4); a zero code is a zero weight (symmetric grid)."""
        if not nonzero:
            return self.num_embeddings * self.embedding_dim
        return held_count((self._codes(self.qweight),), True)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # gather first: only the looked-up rows are unpacked and scaled
        return self._dequantize(self._codes(self.qweight[input]), self.scale[input])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int{self.bits}, group={self.group}"


def _unfit(old: nn.Embedding, group: int, bits: int) -> str | None:
    if old.max_norm is not None:
        return "its max_norm renormalizes rows in place at each lookup; int codes cannot be rescaled"
    if not old.weight.is_floating_point():
        return f"its weight is {old.weight.dtype}, not floating point"
    if old.embedding_dim % group or (bits == 4 and group % 2):
        return (f"its {old.embedding_dim} columns do not split into groups of {group}; pick a group_size "
                f"dividing it")
    return None


@register_method(
    "quantize.embedding",
    EmbeddingQuantConfig,
    supported=(nn.Embedding,),
    family="quantization",
    help="Embedding tables in int8 / int4 (group-wise scales per row): a lookup dequantizes only the rows it "
         "gathers. Often the largest tensor of a small transformer.",
    streams=True,
    stage="precision",
    order=4,
    options=(MagicOption("--quantize", "MODE", choice="embedding-int8", fields={"bits": 8},
                         help="embedding-int8 (embedding tables, weight-only)"),
             MagicOption("--quantize", "MODE", choice="embedding-int4", fields={"bits": 4},
                         help="embedding-int4 (embedding tables, weight-only, group-wise)")),
)
def apply_embedding(model: nn.Module, names: list[str], config: EmbeddingQuantConfig, ctx: Any) -> MethodResult:
    replacements, rows = {}, []
    for name in names:
        old = model.get_submodule(name)
        group = min(config.group_size, old.embedding_dim)
        why = parent_reads_weight(model, name) or _unfit(old, group, config.bits)
        if why:
            rows.append(layer_row(name, "quantize.embedding", old, None, skipped=why))
            continue
        new = QuantizedEmbedding(old, config.bits, group)
        w = old.weight.detach().float()
        err = float((new.dequantized_weight().float() - w).norm() / w.norm().clamp_min(1e-12))
        rows.append(layer_row(name, "quantize.embedding", old, new, error=err, error_kind="rel_weight_error",
                              detail={"bits": config.bits, "group": group,
                                      "sqnr_db": round(sqnr_db(w, new.dequantized_weight()), 2)}))
        hand_over(ctx, replacements, name, new)
    return MethodResult(replacements, rows)
