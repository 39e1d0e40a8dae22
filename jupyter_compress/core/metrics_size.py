"""Bytes on disk: the raw tensor payload, a sparse encoding, and general-purpose codecs.

The "raw" artifact is the concatenated bytes of every state_dict tensor (what a safetensors
file holds, minus its small JSON header); quantized tensors count their integer representation.
Each codec (zlib from the standard library, LZ4 and Zstandard when installed) is run on that
payload and round-tripped, so the ratio and the speed shown are measured on the user's own weights.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
import zlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .metrics import sparse_encoding_bytes

__all__ = ["CodecResult", "state_bytes", "codec_sizes", "disk_sizes", "available_codecs"]


@dataclasses.dataclass(frozen=True)
class CodecResult:
    codec: str
    raw_bytes: int
    compressed_bytes: int
    compress_mb_s: float
    decompress_mb_s: float

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.compressed_bytes if self.compressed_bytes else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu()
    if t.is_quantized:
        t = t.int_repr()
    t = t.contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def state_bytes(model: nn.Module | dict[str, torch.Tensor]) -> bytes:
    """The raw payload of ``model.state_dict()`` (sorted by name; non-tensor entries skipped)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return b"".join(_tensor_bytes(state[k]) for k in sorted(state) if isinstance(state[k], torch.Tensor))


def _codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    out: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        "zlib": (lambda b: zlib.compress(b, 6), zlib.decompress),
    }
    if importlib.util.find_spec("lz4") is not None:
        import lz4.frame

        out["lz4"] = (lz4.frame.compress, lz4.frame.decompress)
    if importlib.util.find_spec("zstandard") is not None:
        import zstandard

        out["zstd"] = (zstandard.ZstdCompressor(level=3).compress, zstandard.ZstdDecompressor().decompress)
    return out


def available_codecs() -> list[str]:
    """Codec names usable here (zlib always; lz4 and zstd with the ``plots`` extra installed)."""
    return list(_codecs())


def codec_sizes(payload: bytes, codecs: tuple[str, ...] | None = None) -> list[CodecResult]:
    """Compress and decompress ``payload`` with each codec; check the round trip; time both ways."""
    found = _codecs()
    names = list(found) if codecs is None else [c for c in codecs if c in found]
    results = []
    mb = max(len(payload), 1) / 1e6
    for name in names:
        enc, dec = found[name]
        start = time.perf_counter()
        packed = enc(payload)
        mid = time.perf_counter()
        unpacked = dec(packed)
        end = time.perf_counter()
        if unpacked != payload:  # never expected; a codec that lies must not produce a figure
            raise RuntimeError(f"codec {name} did not round-trip the model's bytes")
        results.append(CodecResult(name, len(payload), len(packed), mb / max(mid - start, 1e-9),
                                   mb / max(end - mid, 1e-9)))
    return results


def disk_sizes(model: nn.Module, codecs: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``{"raw_bytes", "sparse_bytes", "codecs": [CodecResult.to_dict(), ...]}`` for ``model``.

    ``sparse_bytes`` stores each tensor in the cheapest of dense / CSR / bitmap (see
    :func:`~jupyter_compress.core.metrics.sparse_encoding_bytes`).
    """
    state = model.state_dict()
    payload = state_bytes(state)
    sparse = 0
    for t in state.values():
        if isinstance(t, torch.Tensor):
            sparse += (len(_tensor_bytes(t)) if t.is_quantized or t.dim() == 0
                       else sparse_encoding_bytes(t)[0])
    return {"raw_bytes": len(payload), "sparse_bytes": sparse,
            "codecs": [r.to_dict() for r in codec_sizes(payload, codecs)]}
