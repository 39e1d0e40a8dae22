"""Undo records of big in-place runs kept on disk, so that ``compress_`` needs about the model's own memory.

An in-place run keeps the layers it swapped out, so that ``revert_`` (or a rollback) puts back the very same
module objects. For a big model those originals are as large as the model: keeping them in memory makes an
in-place run as expensive as a copy. So when the model holds at least :data:`SPILL_MIN_BYTES`, each swapped-out
layer's tensors are written to a safetensors file in a private temporary folder and the layer keeps
zero-stride stand-ins of the same shape and dtype (one element of storage each); restoring assigns the saved
values back to the same Parameter / buffer objects, bit for bit. A file is deleted when its layer is restored
or dropped (``forget_undo``, or the model is garbage-collected), and at interpreter exit.

Our own code: torch offers no "page this module out and back" (meta-device moves lose the values, and
``torch.save`` would pickle). Tensors that the live model still uses (a bias the replacement shares) stay.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import torch
from torch import nn

__all__ = ["SPILL_MIN_BYTES", "folder_name", "spill", "restore", "is_spilled", "restored_copy", "spilled_bytes"]

# models holding at least this many bytes of parameters and buffers keep in-place undo records on disk
SPILL_MIN_BYTES = 128 * 2**20

_DIR: Path | None = None
_LOCK = threading.Lock()
_SPILLS: weakref.WeakKeyDictionary[nn.Module, _Spill] = weakref.WeakKeyDictionary()


def folder_name() -> str:
    return str(_DIR) if _DIR is not None else tempfile.gettempdir()


def _folder() -> Path:
    global _DIR
    with _LOCK:
        if _DIR is None or not _DIR.is_dir():
            root = os.environ.get("JUPYTER_COMPRESS_UNDO_DIR") or None
            _DIR = Path(tempfile.mkdtemp(prefix="jupyter_compress_undo_", dir=root))
            atexit.register(shutil.rmtree, str(_DIR), True)  # at exit at the latest
        return _DIR


class _Spill:
    """One layer's tensors on disk: which tensor objects were replaced by stand-ins, and the file."""

    def __init__(self, path: Path, entries: list[tuple[str, torch.Tensor]], nbytes: int):
        self.path, self.entries, self.nbytes = path, entries, nbytes
        self._finalizer = weakref.finalize(self, _unlink, str(path))

    def load(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path))

    def drop(self) -> None:
        self._finalizer()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _stub(t: torch.Tensor) -> torch.Tensor:
    """A tensor of ``t``'s shape and dtype backed by one element (reads give zeros: never read before restore)."""
    return torch.zeros((1,) * max(t.dim(), 1), dtype=t.dtype, device=t.device).expand(t.shape) if t.dim() \
        else torch.zeros((), dtype=t.dtype, device=t.device)


def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    out, seen = [], set()
    for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            out.append((name, t))
    return out


def spill(old: nn.Module, live: nn.Module) -> int:
    """Write ``old``'s tensors to disk and replace their storage by stand-ins; tensors ``live`` still uses
    (same object or same storage) are left. Returns the bytes released (0: nothing was spilled)."""
    from safetensors.torch import save_file

    if old in _SPILLS:
        return 0
    live_ids, live_ptrs = set(), set()
    for t in [*live.parameters(), *live.buffers()]:
        live_ids.add(id(t))
        if t.numel():
            live_ptrs.add(t.untyped_storage().data_ptr())
    chosen = [(k, t) for k, t in _tensors(old)
              if t.numel() > 1 and id(t) not in live_ids and t.untyped_storage().data_ptr() not in live_ptrs
              and t.device.type == "cpu" and t.is_contiguous()]
    ptrs = [t.untyped_storage().data_ptr() for _, t in chosen]
    if not chosen or len(set(ptrs)) != len(ptrs):  # views of one storage within the layer: keep it in memory
        return 0
    fd, name = tempfile.mkstemp(suffix=".safetensors", dir=_folder())
    os.close(fd)
    try:
        save_file({k: t.detach() for k, t in chosen}, name)
    except BaseException:
        _unlink(name)
        raise
    record = _Spill(Path(name), chosen, sum(t.numel() * t.element_size() for _, t in chosen))
    # registered before any tensor is replaced: an interrupt mid-way leaves a record that restores whatever
    # was replaced (restoring a tensor that was not replaced yet writes back the same values)
    _SPILLS[old] = record
    with torch.no_grad():
        for _, t in chosen:
            t.data = _stub(t)
    return record.nbytes


def is_spilled(module: nn.Module) -> bool:
    return module in _SPILLS


def spilled_bytes(module: nn.Module) -> int:
    record = _SPILLS.get(module)
    return record.nbytes if record is not None else 0


def restore(module: nn.Module | None) -> None:
    """Put ``module``'s saved values back into its own tensor objects (no-op when it was not spilled)."""
    record = _SPILLS.get(module) if module is not None else None
    if record is None:
        return
    values = record.load()
    with torch.no_grad():
        for key, t in record.entries:
            t.data = values[key]
    _SPILLS.pop(module, None)
    record.drop()


def restored_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with its real values (``module`` itself stays on disk)."""
    import copy

    record = _SPILLS.get(module)
    clone = copy.deepcopy(module)
    if record is None:
        return clone
    values = record.load()
    targets = dict(_tensors(clone))
    with torch.no_grad():
        for key, _ in record.entries:
            targets[key].data = values[key]
    return clone
