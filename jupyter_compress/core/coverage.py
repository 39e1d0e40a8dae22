"""What a plan left alone: the layer types no step of it handles, and raw parameters, with their share of
the model's bytes, so a report never lets "compressed" stand for the part it did not touch."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

__all__ = ["left_alone_note", "larger_note"]

# below this share of the model's bytes, left-alone types are summed into one "small" entry (norms, scales)
_SMALL = 0.01


def _direct_bytes(module: nn.Module, seen: set[int]) -> int:
    total = 0
    for t in list(module._parameters.values()) + list(module._buffers.values()):
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def left_alone_note(model: nn.Module, supported: Iterable[type], touched: Iterable[str], methods: str) -> str | None:
    """One note on the weights of ``model`` (before the plan) that lie in layers of types no method of the
    plan handles (``supported``) and outside every ``touched`` layer, grouped by owner type, with shares."""
    supported = tuple(supported)
    touched = [t for t in touched]
    seen: set[int] = set()
    total = 0
    groups: dict[str, int] = {}
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        size = _direct_bytes(module, seen)
        total += size
        if not size or isinstance(module, supported):
            continue
        if any(name == t or name.startswith(t + ".") or t == "" for t in touched):
            continue
        kind = type(module).__name__
        if list(module.children()):  # a container holding weights itself: raw nn.Parameters used in its code
            kind = f"raw parameters of {kind}"
        groups[kind] = groups.get(kind, 0) + size
        counts[kind] = counts.get(kind, 0) + 1
    if not total or not groups:
        return None
    big = sorted(((b, k) for k, b in groups.items() if b / total >= _SMALL), reverse=True)
    small = [(b, k) for k, b in groups.items() if b / total < _SMALL]
    parts = [f"{k}{'' if counts[k] == 1 or k.startswith('raw') else f' x{counts[k]}'} ({b / total:.0%})"
             for b, k in big]
    if small:
        parts.append(f"{len(small)} small types ({', '.join(sorted(k for _, k in small)[:4])}"
                     f"{', ...' if len(small) > 4 else ''}: {sum(b for b, _ in small) / total:.1%})")
    share = sum(groups.values()) / total
    return (f"Left alone, as no step of the plan ({methods}) handles their layer type: {share:.0%} of the "
            f"model's bytes: {'; '.join(parts)}.")


def larger_note(before: tuple[int, int, int], after: tuple[int, int, int],
                swapped: list[tuple[str, nn.Module, nn.Module]]) -> str | None:
    """The first note of a report whose model grew: by how much, and which replaced layers grew."""
    (p0, _, b0), (p1, _, b1) = before, after
    if b1 <= b0 and p1 <= p0:
        return None
    grew = []
    for name, old, new in swapped:
        delta = _bytes(new) - _bytes(old)
        if delta > 0:
            grew.append((delta, name, type(old).__name__, getattr(new, "label", None) or type(new).__name__))
    grew.sort(reverse=True)
    what = f"{b0:,} -> {b1:,} bytes" if b1 > b0 else f"{p0:,} -> {p1:,} parameters"
    if grew:
        layers = ", ".join(f"{n or 'the whole model'} ({o} -> {t}, +{d:,} B)" for d, n, o, t in grew[:3])
        why = (f"these replaced layers grew: {layers}{', ...' if len(grew) > 3 else ''}; on layers this small the "
               f"scales, factors or runtime graph they carry outweigh what the weights save: exclude them or "
               f"use another method")
    else:
        why = "parameters that were shared are now held twice (see the notes)"
    return f"LARGER than the original ({what}): {why}."


def _bytes(module: nn.Module) -> int:
    seen: set[int] = set()
    return sum(_direct_bytes(m, seen) for m in module.modules())
