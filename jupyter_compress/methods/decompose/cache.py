"""Per-layer analyses (full spectra, factors) computed once per weight version, then re-used.

Entries are keyed by a content digest of the weight (BLAKE2b over its bytes, shape and dtype), so
``compress`` (which works on a deep copy) and a reloaded checkpoint hit the same entry. Hashing a
weight costs one pass over its bytes; to skip even that when the very same tensor is asked again,
its digest is memoised on the tensor's identity, torch's in-place version counter and its data
pointer, plus a few sampled values (edits through ``.data`` do not bump the version counter; the
sample catches whole-tensor updates such as a training step; after surgical edits of single values
through ``.data`` call :func:`clear_cache`). Any in-place change of the weight thus yields a new
digest: the old entry is never served for new weights.

Memory is bounded: least recently used entries are evicted beyond ``limit`` bytes (default 512 MiB).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from ...core.metrics import single_thread

__all__ = ["weight_digest", "cached", "clear_cache", "cache_info", "set_cache_limit"]

_LOCK = threading.RLock()
_STORE: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
_STATE = {"limit": 512 * 2**20, "bytes": 0, "hits": 0, "misses": 0}
_MEMO: dict[int, tuple[weakref.ref, int, int, torch.Tensor, str]] = {}


def _sample(t: torch.Tensor, copy: bool = True) -> torch.Tensor:
    """A few values of ``t`` spread over it (a copy to keep; ``copy=False``: a view, to compare at once)."""
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // 61)
    return flat[::step].clone() if copy else flat[::step]


def weight_digest(t: torch.Tensor) -> str:
    """Content digest of a tensor (memoised on the tensor's identity and version)."""
    key = id(t)
    with _LOCK:
        memo = _MEMO.get(key)
        if (memo is not None and memo[0]() is t and memo[1] == t._version and memo[2] == t.data_ptr()
                and torch.equal(memo[3], _sample(t, copy=False))):
            return memo[4]
    data = t.detach().contiguous().cpu()
    h = hashlib.blake2b(f"{data.dtype}|{tuple(data.shape)}|".encode(), digest_size=20)
    if data.numel():
        h.update(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
    digest = h.hexdigest()
    with _LOCK:
        _MEMO[key] = (weakref.ref(t, lambda _ref, k=key: _MEMO.pop(k, None)), t._version, t.data_ptr(),
                      _sample(t), digest)
    return digest


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 64


def cached(weight: torch.Tensor, kind: tuple, compute: Callable[[], Any], digest: str | None = None) -> Any:
    """``compute()``'s result for this weight's content and ``kind``, computed at most once while cached.

    The result must be treated as read-only (tensors are shared between callers). ``digest``: the weight's
    :func:`weight_digest` when the caller has just taken it (several entries of one weight: one digest).
    """
    key = (weight_digest(weight) if digest is None else digest, *kind)
    with _LOCK:
        if key in _STORE:
            _STORE.move_to_end(key)
            _STATE["hits"] += 1
            return _STORE[key][0]
        _STATE["misses"] += 1
    with single_thread():  # the same bits whoever fills the cache (see core.metrics.single_thread)
        value = compute()
    size = _nbytes(value)
    with _LOCK:
        if size <= _STATE["limit"] and key not in _STORE:
            _STORE[key] = (value, size)
            _STATE["bytes"] += size
            _evict()
    return value


def _evict() -> None:
    while _STATE["bytes"] > _STATE["limit"] and _STORE:
        _, (_, size) = _STORE.popitem(last=False)
        _STATE["bytes"] -= size


def clear_cache() -> None:
    """Forget every cached analysis."""
    with _LOCK:
        _STORE.clear()
        _MEMO.clear()
        _STATE.update(bytes=0, hits=0, misses=0)


def set_cache_limit(nbytes: int) -> None:
    """Bound the cache to ``nbytes`` (evicting least recently used entries now if needed)."""
    if not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"The cache limit must be an int >= 0 (bytes); got {nbytes!r}.")
    with _LOCK:
        _STATE["limit"] = nbytes
        _evict()


def cache_info() -> dict[str, int]:
    """Entries, bytes held, limit, hits and misses since the last clear."""
    with _LOCK:
        return {"entries": len(_STORE), **dict(_STATE)}
