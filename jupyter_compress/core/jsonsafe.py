"""Strict JSON: nothing the package writes holds NaN or Infinity (RFC 8259 has neither; jupyter_client warns
"Out of range float values are not JSON compliant" and browsers' ``JSON.parse`` rejects them).

The one rule: a non-finite float is written as the string ``"Infinity"``, ``"-Infinity"`` or ``"NaN"``. The
meaning survives (an SQNR of infinity is an exact layer, not a missing value), Python's ``float()`` and
JavaScript's ``Number()`` both read these strings back, and :func:`json_restore` turns them into floats again.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["json_safe", "json_restore", "dumps", "NONFINITE"]

NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _word(x: float) -> str:
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (at any depth of dicts, lists and tuples) replaced by its string;
    containers keep their types, other values are returned as they are."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _word(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [json_safe(v) for v in obj]
        return out if isinstance(obj, list) else tuple(out)
    if hasattr(obj, "dtype") and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        value = obj.item()
        return json_safe(value) if isinstance(value, float) else value
    return obj


def json_restore(obj: Any) -> Any:
    """The inverse of :func:`json_safe`: the strings ``"Infinity"``, ``"-Infinity"``, ``"NaN"`` become floats."""
    if isinstance(obj, str):
        return NONFINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: json_restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_restore(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(json_restore(v) for v in obj)
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)`` with ``allow_nan=False``: always valid JSON."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
