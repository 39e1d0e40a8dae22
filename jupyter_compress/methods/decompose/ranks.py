"""Rank rules shared by the decompositions: an int (or a tuple per mode), a fraction of the layer's
parameters to keep, ``'energy:E'`` (smallest rank keeping a share E of the squared singular values)
or ``'auto'`` (empirical variational Bayes, :mod:`.vbmf`); plus rounding to a multiple.

The core's :class:`~jupyter_compress.core.config.RankSpec` knows the first three; :class:`RankRule`
extends it with ``'auto'`` and tuples so that each method can say which forms it accepts.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...core.config import Constraint, parse_rank

__all__ = ["RankRule", "parse_any_rank", "energy_rank", "round_rank", "choose_rank"]


def parse_any_rank(value: Any) -> tuple[str, Any]:
    """('int', r) | ('fraction', f) | ('energy', e) | ('auto', None) | ('tuple', (r1, r2, ...))."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto", None
    if isinstance(value, (tuple, list)):
        if 0 < len(value) <= 16 and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 2**31
                                        for v in value):
            return "tuple", tuple(value)
        raise ValueError(value)
    return parse_rank(value)


class RankRule(Constraint):
    """The rank forms one method accepts; ``tuple_len`` is the length a tuple must have (None: any)."""

    _TEXT = {
        "int": "an int >= 1",
        "fraction": "a float in (0, 1] (fraction of parameters to keep)",
        "energy": "'energy:E' with E in (0, 1]",
        "auto": "'auto' (VBMF)",
        "tuple": "a tuple of ints >= 1 (one per mode)",
    }

    def __init__(self, *kinds: str, tuple_len: int | None = None):
        self.kinds, self.tuple_len = kinds, tuple_len

    def check(self, value: Any) -> bool:
        try:
            kind, parsed = parse_any_rank(value)
        except (ValueError, TypeError):
            return False
        if kind == "tuple" and self.tuple_len is not None and len(parsed) != self.tuple_len:
            return False
        return kind in self.kinds

    def describe(self) -> str:
        texts = [self._TEXT[k] for k in self.kinds]
        if "tuple" in self.kinds and self.tuple_len is not None:
            texts[self.kinds.index("tuple")] = f"a tuple of {self.tuple_len} ints >= 1 (one per mode)"
        return ", ".join(texts[:-1]) + " or " + texts[-1] if len(texts) > 1 else texts[0]

    def normalize(self, value: Any) -> Any:
        kind, parsed = parse_any_rank(value)
        if kind == "energy":
            return "energy:" + repr(parsed)
        if kind == "auto":
            return "auto"
        if kind == "tuple":
            return parsed
        return value


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with sum(s[:r]^2) >= energy * sum(s^2) (a hair of slack for float round-off)."""
    s2 = singular_values.double() ** 2
    if s2.numel() == 0 or float(s2.sum()) == 0.0:
        return 1
    share = torch.cumsum(s2, 0) / s2.sum()
    r = int(torch.searchsorted(share, torch.tensor(energy, dtype=share.dtype) - 1e-12)) + 1
    return min(r, s2.numel())


def round_rank(rank: int, multiple: int, max_rank: int) -> int:
    """``rank`` rounded to the nearest multiple of ``multiple`` (at least one multiple, at most max_rank)."""
    if multiple <= 1:
        return max(1, min(rank, max_rank))
    rounded = max(multiple, int(math.floor(rank / multiple + 0.5)) * multiple)
    return max(1, min(rounded, max_rank))


def choose_rank(spec, out_features: int, in_features: int, singular_values: torch.Tensor | None = None,
                round_to: int = 1) -> int:
    """The rank a spec asks for on an (out x in) matrix (see :class:`SVDConfig`)."""
    kind, value = parse_any_rank(spec)
    max_rank = min(out_features, in_features)
    if kind == "int":
        rank = int(value)
    elif kind == "fraction":
        rank = max(1, int(math.floor(value * out_features * in_features / (out_features + in_features))))
    elif singular_values is None:
        raise ValueError(f"a {kind!r} rank needs the singular values")
    elif kind == "energy":
        rank = energy_rank(singular_values, value)
    elif kind == "auto":
        from .vbmf import vbmf_rank

        rank = max(1, vbmf_rank(singular_values, (out_features, in_features)))
    else:
        raise ValueError(f"a {kind} rank does not apply to a matrix")
    return round_rank(rank, round_to, max_rank) if round_to > 1 else rank
