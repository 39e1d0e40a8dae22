"""Submodules by name: the one place a layer is put into a model in place of another."""

from __future__ import annotations

from torch import nn

__all__ = ["swap_submodule"]


def swap_submodule(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at the dotted ``name`` inside ``model`` and return the module that was there.

    Only the parent's child entry changes (no hooks, no ``__setattr__`` side effects), so a swap is undone
    exactly by swapping the returned module back. ``name`` must name a submodule, not ``model`` itself."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if attr not in parent._modules:
        raise AttributeError(f"{type(parent).__name__} {parent_name or 'model'!r} has no submodule {attr!r}")
    old = parent._modules[attr]
    parent._modules[attr] = new
    return old
