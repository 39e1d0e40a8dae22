"""Tied parameters (an LM head sharing the embedding's weight): kept tied through every method.

A method returns replacement modules built from copies, so a replaced layer whose weight was shared
would come back with a weight of its own: the model would hold both and grow. After each step the core
calls :func:`keep_ties`: where the replacement still holds a weight of the same shape and dtype (pruning
masks it, distillation trains it), every other owner of the shared tensor is pointed at the new one (the
shared tensor is compressed once); where it does not (the layer became factors or int8), the layer is left
as it was, and a note says why.
"""

from __future__ import annotations

import copy

from torch import nn

__all__ = ["tied_groups", "keep_ties"]


def tied_groups(model: nn.Module) -> list[list[tuple[str, str]]]:
    """Groups of ``(module name, parameter name)`` that hold the very same Parameter (two or more owners)."""
    owners: dict[int, list[tuple[str, str]]] = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        for pname, p in module._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((mname, pname))
    return [group for group in owners.values() if len(group) > 1]


def _within(name: str, root: str) -> str | None:
    """``name`` relative to the replaced module ``root`` ('' for root itself), None when outside it."""
    if name == root:
        return ""
    if not root:
        return name
    return name[len(root) + 1:] if name.startswith(root + ".") else None


def _locate(replacements: dict[str, nn.Module], name: str) -> tuple[str, str] | None:
    for root in replacements:
        rel = _within(name, root)
        if rel is not None:
            return root, rel
    return None


def _opens(module: nn.Module) -> bool:
    """Whether a replacement exposes its submodules (a runtime graph does not: its weights are constants)."""
    return not hasattr(module, "resizable_buffers")


def keep_ties(model: nn.Module, replacements: dict[str, nn.Module], method: str) -> tuple[list[str], list[str]]:
    """Keep the tied groups of ``model`` tied in ``replacements`` (changed in place: partner layers may be
    added, layers that cannot stay tied removed). Returns (names dropped, notes)."""
    dropped: list[str] = []
    notes: list[str] = []
    for group in tied_groups(model):
        located = [(owner, _locate(replacements, owner[0])) for owner in group]
        replaced = [(owner, where) for owner, where in located if where is not None]
        if not replaced:
            continue
        roots = {root for _, (root, _) in replaced}
        if len(replaced) == len(group) and len(roots) == 1 and not _opens(replacements[next(iter(roots))]):
            # the whole tied set inside one runtime graph (ONNX / OpenVINO keep a shared weight as one constant)
            notes.append(f"The tied weights of {', '.join(sorted({m or '(model)' for m, _ in group}))} stay one "
                         f"constant inside the runtime graph that replaced {next(iter(roots)) or 'the model'}.")
            continue
        new_params = []
        for (_mname, pname), (root, rel) in replaced:
            new_module = replacements[root].get_submodule(rel) if rel else replacements[root]
            new_params.append(getattr(new_module, "_parameters", {}).get(pname))
        old = getattr(model.get_submodule(group[0][0]), group[0][1])
        keeper = next((p for p in new_params if isinstance(p, nn.Parameter) and p.shape == old.shape
                       and p.dtype == old.dtype), None)
        if keeper is not None and any(m == "" and _locate(replacements, m) is None for m, _ in group):
            keeper = None  # shared with a parameter of the model itself, which cannot be swapped
        if keeper is None:  # the shared tensor is no longer a plain weight in the replacement: leave the set
            names = sorted({root for _, (root, _) in replaced})
            for root in names:
                replacements.pop(root, None)
            dropped += names
            partners = ", ".join(sorted({m or "(model)" for m, _ in group}))
            notes.append(f"{', '.join(names)} left as {'it was' if len(names) == 1 else 'they were'}: "
                         f"its weight is tied (shared by {partners}), and {method} would untie it (the model "
                         f"would hold two copies and grow).")
            continue
        for mname, pname in group:
            where = _locate(replacements, mname)
            if where is None:  # a partner the method did not touch: a shallow copy that points at the keeper
                partner = copy.copy(model.get_submodule(mname))
                partner._parameters = dict(partner._parameters)
                partner._parameters[pname] = keeper
                replacements[mname] = partner
            else:
                root, rel = where
                target = replacements[root].get_submodule(rel) if rel else replacements[root]
                if target._parameters.get(pname) is not keeper:
                    target._parameters[pname] = keeper
    return dropped, notes
