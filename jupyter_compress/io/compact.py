"""The compact payload of an artifact (``save(..., compact=True)``): Deep Compression's storage stage.

Each tensor is stored in whichever of three forms is smallest:

- ``dense``: every element;
- ``bitmap``: one bit per element saying which are non-zero, then the non-zero values;
- ``relidx``: relative indices (Han et al. 2016, section 3): for each non-zero, the count of zeros since
  the previous one in ``g`` bits (``g`` from 1 to 8, the smallest total chosen per tensor); a run of zeros
  longer than ``2^g - 1`` takes filler entries (an explicit zero value, as in the paper).

Values are stored bit-exact (a float is "zero" only when all its bytes are, so ``-0.0`` and NaN payloads
survive). Integer values (int8 / int4 codes, cluster indices, counters) are stored as ``value - min`` at the
bit width their range needs (int4 codes in an int8 tensor take 4 bits, 5-bit cluster indices 5 bits); float
values are stored byte-plane by byte-plane (all first bytes, then all second bytes...), which the codec
compresses better than interleaved floats. The sections of all tensors are concatenated and the whole
payload goes through one codec: zstd (default: smallest), lz4 (fastest to load) or none.

The result is one uint8 tensor for safetensors and a small JSON header for its metadata (format, codec, the
payload's size decompressed, the size of its table, the tensors' dense size). The decompressed payload starts
with the table, JSON describing every tensor (name, dtype, shape, form, bit widths, byte offsets), coded with
the rest: on a LeNet it is a tenth of the weights' bytes. A file is untrusted input: :func:`decode` checks the
header (sizes bounded, the dense total within this machine's memory) and the codec's declared output size
before decompressing, then the table field by field: the sections tile the payload exactly and the tensors
add up to the declared total, before any tensor is allocated; a bad file is a one-line
:class:`~jupyter_compress.errors.CompressError`. Nothing in a file names code.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from ..errors import CompressError, shown
from ._bits import pack as _pack
from ._bits import packed_bytes as _packed_bytes
from ._bits import unpack as _unpack

__all__ = ["CODECS", "COMPACT_FORMAT", "encode", "decode", "tensor_forms"]

COMPACT_FORMAT = 1
CODECS = ("zstd", "lz4", "none")
_MAX_LAYOUT_CHARS = 64_000_000
_MAX_NAME = 1000
_MAX_DIMS = 16
_ZSTD_LEVEL = 19  # payloads up to _ZSTD_BIG bytes; bigger ones at _ZSTD_LEVEL_BIG (level 19 takes ~1 s/MB)
_ZSTD_BIG, _ZSTD_LEVEL_BIG = 8_000_000, 9

# the dtypes stored, each with the numpy integer view its values are packed through (None: a float, stored as is);
# named in files by torch's own name (str(dtype) without 'torch.')
_DTYPES: dict[str, tuple[torch.dtype, str | None]] = {
    str(dtype).removeprefix("torch."): (dtype, view) for dtype, view in (
        (torch.float32, None), (torch.float64, None), (torch.float16, None), (torch.bfloat16, None),
        (torch.int8, "<i1"), (torch.uint8, "<u1"), (torch.int16, "<i2"), (torch.int32, "<i4"),
        (torch.int64, "<i8"), (torch.bool, "<u1"))
}
_NAMES = {dtype: name for name, (dtype, _) in _DTYPES.items()}


# -- values ------------------------------------------------------------------------------------------------
def _words(t: torch.Tensor) -> np.ndarray:
    """The elements of ``t`` as unsigned integers of its item size (bit-exact)."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return raw.view(np.dtype(f"<u{t.element_size()}")) if t.element_size() > 1 else raw


def _int_width(values: np.ndarray, signed: str) -> tuple[int, int]:
    """(bits needed for ``values`` minus their minimum, that minimum)."""
    if values.size == 0:
        return 0, 0
    v = values.view(np.dtype(signed))
    low, high = int(v.min()), int(v.max())
    return (high - low).bit_length(), low


def _values_size(count: int, itemsize: int, width: int | None) -> int:
    return count * itemsize if width is None else _packed_bytes(count, width)


def _encode_values(values: np.ndarray, itemsize: int, signed: str | None) -> tuple[bytes, dict[str, Any]]:
    if signed is not None:
        width, low = _int_width(values, signed)
        if width < 8 * itemsize:
            shifted = (values.view(np.dtype(signed)).astype(np.int64) - np.int64(low)).astype(np.uint64)
            return _pack(shifted, width), {"bits": width, "min": low}
        return values.tobytes(), {}
    if itemsize > 1 and values.size:  # byte planes: the codec sees exponents together, mantissas together
        return values.view(np.uint8).reshape(-1, itemsize).T.tobytes(), {"planes": True}
    return values.tobytes(), {}


def _width_if_packed(values: np.ndarray, itemsize: int, signed: str | None) -> int | None:
    if signed is None:
        return None
    width, _ = _int_width(values, signed)
    return width if width < 8 * itemsize else None


# -- one tensor --------------------------------------------------------------------------------------------
def _relidx(positions: np.ndarray, gap_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, index of each real entry) with fillers for runs of zeros longer than 2^gap_bits - 1."""
    gaps = np.diff(positions, prepend=-1) - 1
    fillers = gaps >> gap_bits
    real = np.cumsum(fillers + 1) - 1
    out = np.full(int(real[-1]) + 1 if real.size else 0, (1 << gap_bits) - 1, dtype=np.int64)
    out[real] = gaps - (fillers << gap_bits)
    return out, real


def _encode_tensor(t: torch.Tensor) -> tuple[bytes, dict[str, Any]]:
    words = _words(t)
    itemsize = t.element_size()
    signed = _DTYPES[_NAMES[t.dtype]][1]
    n = words.size
    best: tuple[int, str, int] = (_values_size(n, itemsize, _width_if_packed(words, itemsize, signed)), "dense", 0)
    mask = words != 0
    nonzeros = words[mask]
    if n and nonzeros.size < n:
        values_bits = _width_if_packed(nonzeros, itemsize, signed)
        best = min(best, ((n + 7) // 8 + _values_size(nonzeros.size, itemsize, values_bits), "bitmap", 0))
        positions = np.flatnonzero(mask)
        gaps = np.diff(positions, prepend=-1) - 1
        with_zero = None if signed is None else _width_if_packed(np.append(nonzeros, 0).astype(words.dtype),
                                                                 itemsize, signed)
        for g in range(1, 9):
            fillers = int((gaps >> g).sum())
            entries = nonzeros.size + fillers
            vbits = values_bits if fillers == 0 else with_zero
            best = min(best, (_packed_bytes(entries, g) + _values_size(entries, itemsize, vbits), "relidx", g))
    _, form, g = best
    info: dict[str, Any] = {"name": None, "dtype": _NAMES[t.dtype], "shape": list(t.shape), "form": form}
    if form == "dense":
        data, vinfo = _encode_values(words, itemsize, signed)
        info.update(vinfo)
        return data, info
    if form == "bitmap":
        data, vinfo = _encode_values(nonzeros, itemsize, signed)
        info.update(vinfo, count=int(nonzeros.size))
        return np.packbits(mask, bitorder="little").tobytes() + data, info
    gaps, real = _relidx(np.flatnonzero(mask), g)
    values = np.zeros(gaps.size, dtype=words.dtype)
    values[real] = nonzeros
    data, vinfo = _encode_values(values, itemsize, signed)
    info.update(vinfo, count=int(gaps.size), gap_bits=g)
    return _pack(gaps.astype(np.uint64), g) + data, info


def encode(tensors: dict[str, torch.Tensor], codec: str = "zstd") -> tuple[torch.Tensor, str]:
    """(the payload as a uint8 tensor, its JSON header) for ``tensors`` (name -> CPU tensor)."""
    if codec not in CODECS:
        raise CompressError(f"codec must be one of {', '.join(map(repr, CODECS))}; got {shown(codec, 40)}. Use "
                            f"'zstd' (smallest) or 'lz4' (fastest to load).")
    sections, layout, offset, dense = [], [], 0, 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _NAMES:
            raise CompressError(f"tensor {name!r} has dtype {t.dtype}, which a compact artifact does not store; "
                                f"save it with compact=False.")
        data, info = _encode_tensor(t)
        info.update(name=name, offset=offset, nbytes=len(data))
        sections.append(data)
        layout.append(info)
        offset += len(data)
        dense += t.numel() * t.element_size()
    table = json.dumps(layout, separators=(",", ":")).encode()
    raw = table + b"".join(sections)  # the table goes through the codec too: it is a tenth of a small model
    if codec == "zstd":
        import zstandard

        level = _ZSTD_LEVEL if len(raw) <= _ZSTD_BIG else _ZSTD_LEVEL_BIG
        blob = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
    elif codec == "lz4":
        import lz4.frame

        blob = lz4.frame.compress(raw, compression_level=lz4.frame.COMPRESSIONLEVEL_MINHC, store_size=True)
    else:
        blob = raw
    meta = {"format": COMPACT_FORMAT, "codec": codec, "raw_bytes": len(raw), "table_bytes": len(table),
            "dense_bytes": dense}
    payload = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.zeros(0, dtype=torch.uint8)
    return payload, json.dumps(meta, separators=(",", ":"))


def tensor_forms(blob: torch.Tensor, header: str) -> dict[str, dict[str, Any]]:
    """name -> how each tensor is stored (form, bit widths, bytes), from a payload and its header."""
    def bad(what: str) -> CompressError:
        return CompressError(f"the compact payload is damaged ({what}).")

    meta = _checked_header(header, bad)
    raw = _decompress(blob.numpy(), meta["codec"], meta["raw_bytes"], bad)
    return {t["name"]: {k: v for k, v in t.items() if not k.startswith("_")}
            for t in _checked_table(raw, meta, bad)}


# -- decoding (untrusted) ----------------------------------------------------------------------------------
def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _checked_header(text: Any, bad) -> dict[str, Any]:
    """The header (format, codec, sizes) from the file's metadata, checked before anything is allocated."""
    if not isinstance(text, str) or len(text) > 10_000:
        raise bad("its header is missing or too large")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise bad("its header is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != COMPACT_FORMAT:
        raise bad(f"format {shown(meta.get('format') if isinstance(meta, dict) else meta, 40)}, this version "
                  f"reads {COMPACT_FORMAT}")
    if meta.get("codec") not in CODECS:
        raise bad(f"codec {shown(meta.get('codec'), 40)}")
    raw, table, dense = meta.get("raw_bytes"), meta.get("table_bytes"), meta.get("dense_bytes")
    if not _int(dense, 0, 1 << 50) or not _int(table, 2, _MAX_LAYOUT_CHARS) or not _int(raw, table, dense + table):
        raise bad(f"sizes raw {shown(raw, 30)}, table {shown(table, 30)}, dense {shown(dense, 30)}")
    memory = _memory_bytes()
    if memory is not None and dense + raw > memory:
        raise bad(f"it declares {dense} bytes of tensors, more than this machine's {memory} bytes of memory")
    return meta


def _checked_table(raw: np.ndarray, meta: dict[str, Any], bad) -> list[dict[str, Any]]:
    """The table of tensors at the start of the decompressed payload, checked field by field: the sections
    tile the rest of the payload exactly and the tensors hold the header's dense bytes."""
    dense = meta["dense_bytes"]
    try:
        tensors = json.loads(raw[:meta["table_bytes"]].tobytes())
    except (ValueError, RecursionError):
        raise bad("its table is not JSON") from None
    if not isinstance(tensors, list):
        raise bad("no tensor list")
    names, offset, total = set(), 0, 0
    for info in tensors:
        if not isinstance(info, dict):
            raise bad(f"a tensor entry is {shown(info, 40)}")
        name, dtype, shape, form = info.get("name"), info.get("dtype"), info.get("shape"), info.get("form")
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME or name in names:
            raise bad(f"tensor name {shown(name, 60)}")
        names.add(name)
        if dtype not in _DTYPES:
            raise bad(f"{name!r} has dtype {shown(dtype, 30)}")
        if not isinstance(shape, list) or len(shape) > _MAX_DIMS or not all(_int(d, 0, 1 << 48) for d in shape):
            raise bad(f"{name!r} has shape {shown(shape, 60)}")
        numel = int(np.prod(shape, dtype=object)) if shape else 1
        itemsize = torch.empty(0, dtype=_DTYPES[dtype][0]).element_size()
        total += numel * itemsize
        if total > dense:
            raise bad(f"its tensors hold more than the declared {dense} bytes")
        bits, low, count, g = info.get("bits"), info.get("min", 0), info.get("count", numel), info.get("gap_bits", 0)
        signed = _DTYPES[dtype][1]
        if bits is not None and (signed is None or not _int(bits, 0, 8 * itemsize - 1)):
            raise bad(f"{name!r} has value bits {shown(bits, 30)}")
        if bits is not None:
            info_range = np.iinfo(np.dtype(signed))
            if not _int(low, int(info_range.min), int(info_range.max)):
                raise bad(f"{name!r} has minimum {shown(low, 30)}")
        if "planes" in info and info["planes"] is not True:
            raise bad(f"{name!r} has planes {shown(info['planes'], 30)}")
        if form == "dense":
            count, head = numel, 0
        elif form == "bitmap":
            if not _int(count, 0, numel):
                raise bad(f"{name!r} has count {shown(count, 30)}")
            head = (numel + 7) // 8
        elif form == "relidx":
            if not _int(g, 1, 8) or not _int(count, 0, 1 << 50):
                raise bad(f"{name!r} has gap bits {shown(g, 30)} / count {shown(count, 30)}")
            head = _packed_bytes(count, g)
        else:
            raise bad(f"{name!r} has form {shown(form, 30)}")
        expected = head + _values_size(count, itemsize, bits)
        if info.get("offset") != offset or info.get("nbytes") != expected:
            raise bad(f"{name!r} has offset {shown(info.get('offset'), 30)} and size {shown(info.get('nbytes'), 30)}"
                      f", expected {offset} and {expected}")
        offset += expected
        info.update(_numel=numel, _itemsize=itemsize, _head=head, _count=count)
    if offset != meta["raw_bytes"] - meta["table_bytes"] or total != dense:
        raise bad(f"its sections hold {offset} bytes and {total} tensor bytes, the header says "
                  f"{meta['raw_bytes'] - meta['table_bytes']} and {dense}")
    return tensors


def _decompress(blob: np.ndarray, codec: str, raw: int, bad) -> np.ndarray:
    data = blob.tobytes()
    if codec == "none":
        out = data
    elif codec == "zstd":
        import zstandard

        try:
            size = zstandard.frame_content_size(data)
        except zstandard.ZstdError:
            raise bad("not a zstd frame") from None
        if size != raw:
            raise bad(f"the zstd frame holds {size} bytes, the layout says {raw}")
        try:
            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=raw)
        except zstandard.ZstdError as exc:
            raise bad(f"zstd: {str(exc)[:80]}") from None
    else:
        import lz4.frame

        try:
            if lz4.frame.get_frame_info(data).get("content_size") != raw:
                raise bad(f"the lz4 frame does not declare {raw} bytes")
            d = lz4.frame.LZ4FrameDecompressor()
            out = d.decompress(data, max_length=raw)
            if not d.eof or d.unused_data:
                raise bad("the lz4 frame is longer than declared")
        except RuntimeError as exc:
            raise bad(f"lz4: {str(exc)[:80]}") from None
    if len(out) != raw:
        raise bad(f"it decompresses to {len(out)} bytes, the layout says {raw}")
    return np.frombuffer(out, dtype=np.uint8)


def _decode_values(buf: np.ndarray, info: dict[str, Any], count: int) -> np.ndarray:
    itemsize, signed = info["_itemsize"], _DTYPES[info["dtype"]][1]
    word = np.dtype(f"<u{itemsize}")
    if info.get("bits") is not None:
        shifted = _unpack(buf, count, info["bits"]).astype(np.int64) + np.int64(info.get("min", 0))
        return shifted.astype(np.dtype(signed)).view(word)
    if info.get("planes"):
        return np.ascontiguousarray(buf[:count * itemsize].reshape(itemsize, count).T).reshape(-1).view(word)
    return buf[:count * itemsize].view(word)


def _decode_tensor(section: np.ndarray, info: dict[str, Any], bad) -> torch.Tensor:
    numel, itemsize, head, count = info["_numel"], info["_itemsize"], info["_head"], info["_count"]
    word = np.dtype(f"<u{itemsize}")
    form = info["form"]
    if form == "dense":
        words = _decode_values(section, info, numel)
    else:
        values = _decode_values(section[head:], info, count)
        words = np.zeros(numel, dtype=word)
        if form == "bitmap":
            mask = np.unpackbits(section[:head], bitorder="little", count=numel).astype(bool)
            if int(mask.sum()) != count:
                raise bad(f"{info['name']!r}'s bitmap marks {int(mask.sum())} values, the layout says {count}")
            words[mask] = values
        else:
            positions = np.cumsum(_unpack(section[:head], count, info["gap_bits"]).astype(np.int64) + 1) - 1
            if count and positions[-1] >= numel:
                raise bad(f"{info['name']!r}'s indices run past its {numel} elements")
            words[positions] = values
    if numel == 0:
        return torch.empty(info["shape"], dtype=_DTYPES[info["dtype"]][0])
    raw = torch.from_numpy(np.ascontiguousarray(words).view(np.uint8).copy())
    return raw.view(_DTYPES[info["dtype"]][0]).reshape(info["shape"])


def decode(blob: torch.Tensor, header: Any, where: str) -> dict[str, torch.Tensor]:
    """The tensors a compact payload holds; ``where`` names the file in error messages."""
    def bad(what: str) -> CompressError:
        return CompressError(f"{where}: the compact payload is damaged ({what}); save it again from the model.")

    meta = _checked_header(header, bad)
    if blob.dtype != torch.uint8 or blob.dim() != 1:
        raise bad(f"payload tensor {blob.dtype} {tuple(blob.shape)}, expected 1-D uint8")
    raw = _decompress(blob.numpy(), meta["codec"], meta["raw_bytes"], bad)
    tensors = _checked_table(raw, meta, bad)
    raw = raw[meta["table_bytes"]:]
    out = {}
    for info in tensors:
        section = raw[info["offset"]:info["offset"] + info["nbytes"]]
        out[info["name"]] = _decode_tensor(section, info, bad)
    return out
