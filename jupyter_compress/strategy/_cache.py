"""A sweep's results on disk, as JSON, keyed by what decides them.

The key hashes the model's weights (``state_dict_hash``), the probe data, the eval function (its code,
and the values its closure holds: tensors by content) and the sweep's settings. Each measured point is
written as soon as it arrives (atomically: temp file + rename), so an interrupted sweep or a restarted
kernel resumes from what is on disk. JSON, never pickle: the file is safe to open and to share.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.jsonsafe import dumps, json_restore

__all__ = ["default_cache_dir", "fingerprint", "callable_fingerprint", "JsonCache"]


def default_cache_dir() -> Path:
    """``$JUPYTER_COMPRESS_CACHE`` or ``~/.cache/jupyter_compress``."""
    env = os.environ.get("JUPYTER_COMPRESS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "jupyter_compress"


def _feed(h, value: Any, depth: int = 0) -> None:
    if depth > 6:
        h.update(b"<deep>")
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif hasattr(value, "__array__") and hasattr(value, "dtype") and hasattr(value, "shape"):
        _feed(h, torch.as_tensor(value), depth)
    elif isinstance(value, Mapping):
        for k in sorted(value, key=str):
            h.update(str(k).encode())
            _feed(h, value[k], depth + 1)
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for v in value:
            _feed(h, v, depth + 1)
    elif isinstance(value, torch.nn.Module):
        from ..core.metrics import state_dict_hash

        h.update(state_dict_hash(value).encode())
    elif callable(value):
        h.update(callable_fingerprint(value, depth + 1).encode())
    else:
        h.update(repr(value).encode())


def fingerprint(*values: Any) -> str:
    """SHA-256 of values (tensors by content, containers recursively, other objects by repr)."""
    h = hashlib.sha256()
    for v in values:
        _feed(h, v)
    return h.hexdigest()


def callable_fingerprint(fn: Any, depth: int = 0) -> str:
    """Code, constants and closure values of a function; module + name for other callables."""
    if fn is None:
        return "none"
    code = getattr(fn, "__code__", None)
    if code is None:
        return f"{type(fn).__module__}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    h = hashlib.sha256(code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode())
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            _feed(h, cell.cell_contents, depth + 1)
        except ValueError:  # an empty cell
            h.update(b"<empty>")
    return h.hexdigest()


class JsonCache:
    """``{"meta": ..., "points": {key: record}}`` in ``directory/kind-<digest>.json``."""

    def __init__(self, directory: str | os.PathLike | None, kind: str, key: str, meta: dict[str, Any]):
        self.enabled = directory is not False
        self.path = Path(directory or default_cache_dir()) / f"{kind}-{key[:32]}.json"
        self.meta = meta
        self.points: dict[str, Any] = {}
        if self.enabled and self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("key") == key:
                    self.points = json_restore(dict(data.get("points", {})))
            except (OSError, ValueError):
                self.points = {}  # an unreadable cache is ignored and rewritten
        self.key = key

    def put(self, point_key: str, record: Any) -> None:
        self.points[point_key] = record
        self.save()

    def save(self) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = dumps({"key": self.key, "meta": self.meta, "points": self.points}, default=str)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self.path)
