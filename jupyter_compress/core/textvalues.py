"""Values typed as text (a magic line, a CLI flag, a panel box): one parser per kind, shared by every layer.

Each raises :class:`~jupyter_compress.errors.InvalidConfigError` (a ``ValueError``) with a message that
names the value and the form it should take; callers put their own option name in front.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidConfigError, shown

__all__ = ["parse_number", "parse_amount", "parse_count", "parse_pair"]


def parse_number(text: str) -> Any:
    """'8' -> 8, '0.5' -> 0.5, '50%' -> 0.5; other text (e.g. 'energy:0.9', 'auto') stays a string."""
    text = str(text).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def parse_amount(text: str) -> float:
    """'0.5' or '50%' -> 0.5 (a fraction); anything else is refused."""
    value = parse_number(text)
    if isinstance(value, str):
        raise InvalidConfigError(f"amount {shown(text)} is not a number; give a fraction such as 0.5 or a "
                                 f"percentage such as 50%.")
    return float(value)


def parse_count(text: str) -> int:
    """A whole number >= 1 ('3')."""
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidConfigError(f"{shown(text)} is not a whole number >= 1 (e.g. 3).")
    return value


def parse_pair(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4)."""
    try:
        n, m = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise InvalidConfigError(f"{shown(text)} is not N:M; give two ints such as 2:4.") from None
    return n, m
