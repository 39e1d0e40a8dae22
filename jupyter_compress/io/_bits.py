"""Bit packing for compact artifacts: unsigned integers at any width from 1 to 63 bits, little-endian bit order,
in chunks (a run holds one chunk's bits unpacked, never the whole tensor's)."""

from __future__ import annotations

import numpy as np

__all__ = ["pack", "unpack", "packed_bytes"]

CHUNK = 1 << 20  # elements bit-packed at a time (a multiple of 8: chunks end on byte boundaries)


def pack(values: np.ndarray, width: int) -> bytes:
    """``values`` (unsigned, each < 2^width) at ``width`` bits each, little-endian bit order."""
    if width == 0 or values.size == 0:
        return b""
    if width == 8:
        return values.astype(np.uint8).tobytes()
    shifts = np.arange(width, dtype=np.uint64)
    parts = []
    for start in range(0, values.size, CHUNK):
        bits = ((values[start:start + CHUNK].astype(np.uint64)[:, None] >> shifts) & 1).astype(np.uint8)
        parts.append(np.packbits(bits.reshape(-1), bitorder="little").tobytes())
    return b"".join(parts)


def unpack(buf: np.ndarray, count: int, width: int) -> np.ndarray:
    """The ``count`` unsigned values of ``width`` bits in ``buf`` (uint8), as uint64."""
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.uint64)
    if width == 8:
        return buf[:count].astype(np.uint64)
    out = np.empty(count, dtype=np.uint64)
    shifts = np.arange(width, dtype=np.uint64)
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        first = start * width // 8
        bits = np.unpackbits(buf[first:first + (n * width + 7) // 8], bitorder="little", count=n * width)
        out[start:start + n] = (bits.reshape(n, width).astype(np.uint64) << shifts).sum(axis=1)
    return out


def packed_bytes(count: int, width: int) -> int:
    return (count * width + 7) // 8
