"""User limits on a compression (max accuracy drop, max latency, max size) and their status."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from ..errors import InvalidConfigError, shown

__all__ = ["Thresholds", "check_thresholds", "quality_key", "metric_number", "QUALITY_KEYS"]

# Metrics where higher is better, in the order one is picked as "the" metric for a drop limit.
QUALITY_KEYS = ("accuracy", "f1_macro", "r2", "top1_agreement", "cosine", "metric")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Limits a report is checked against; ``None`` means no limit.

    ``max_drop`` is in the metric's own units (0.01 = one point of accuracy); ``metric`` names the
    metric (default: the first of accuracy, f1_macro, r2, top1_agreement, cosine, metric present).
    """

    max_drop: float | None = None
    metric: str | None = None
    max_latency_ms: float | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_drop", "max_latency_ms", "max_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise InvalidConfigError(f"The {name!r} parameter of Thresholds must be a finite number >= 0 or "
                                         f"None. Got {shown(value)} instead.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Numbers a report measures about cost, never "the" quality metric.
COST_KEYS = frozenset({"latency_ms", "params", "nonzeros", "bytes", "size_bytes"})


def metric_number(value: Any) -> float | None:
    """A metric as a float (NaN kept): Python, numpy or 0-d torch numbers; None for anything else (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        try:
            return metric_number(value.item())
        except Exception:  # noqa: BLE001 - a scalar-like object that cannot give its value is not a number
            return None
    return None


def quality_key(metrics: dict[str, Any], wanted: str | None = None) -> str | None:
    """The one rule for "the" quality metric (higher is better) that a drop limit, a comparison or a CLI
    gate reads: ``wanted`` when given (None when it is absent), else the first of :data:`QUALITY_KEYS`
    holding a number, else the first numeric entry that is not a cost (latency, parameters, bytes)."""
    if wanted is not None:
        return wanted if wanted in metrics else None
    numeric = [k for k, v in metrics.items() if metric_number(v) is not None]
    return next((k for k in QUALITY_KEYS if k in numeric), None) or next(
        (k for k in numeric if k not in COST_KEYS), None)


def check_thresholds(thresholds: Thresholds, *, metrics_before: dict[str, Any], metrics_after: dict[str, Any],
                     bytes_after: int) -> list[dict[str, Any]]:
    """One ``{"name", "limit", "value", "ok", "message"}`` per limit set; ``ok`` is None when the
    value needed was not measured (e.g. no eval given), which the report shows as unchecked."""
    out: list[dict[str, Any]] = []
    if thresholds.max_drop is not None:
        key = quality_key(metrics_after, thresholds.metric)
        if key is None or not isinstance(metrics_before.get(key), (int, float)):
            out.append({"name": "max_drop", "limit": thresholds.max_drop, "value": None, "ok": None,
                        "message": "not checked: no quality metric measured before and after (pass eval=)"})
        else:
            drop = float(metrics_before[key]) - float(metrics_after[key])
            ok = drop <= thresholds.max_drop + 1e-12
            out.append({"name": "max_drop", "limit": thresholds.max_drop, "value": drop, "ok": ok,
                        "message": f"{key} dropped by {drop:.4g} (limit {thresholds.max_drop:.4g})"})
    if thresholds.max_latency_ms is not None:
        value = metrics_after.get("latency_ms")
        ok = None if value is None else value <= thresholds.max_latency_ms
        out.append({"name": "max_latency_ms", "limit": thresholds.max_latency_ms, "value": value, "ok": ok,
                    "message": "not checked: no latency measured (pass example_inputs=)" if value is None else
                    f"latency {value:.3g} ms (limit {thresholds.max_latency_ms:.3g} ms)"})
    if thresholds.max_bytes is not None:
        ok = bytes_after <= thresholds.max_bytes
        out.append({"name": "max_bytes", "limit": thresholds.max_bytes, "value": bytes_after, "ok": ok,
                    "message": f"{bytes_after:,} bytes in memory (limit {int(thresholds.max_bytes):,})"})
    return out
