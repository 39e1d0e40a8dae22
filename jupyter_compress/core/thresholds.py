"""User limits on a compression (max accuracy drop, max latency, max size) and their status."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from ..errors import InvalidConfigError, shown

__all__ = ["Thresholds", "check_thresholds", "quality_key", "metric_number", "nan_when", "QUALITY_KEYS"]

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


def nan_when(before: float, after: float) -> str:
    """'before', 'after' or 'before and after': when a metric is NaN (one of the two is)."""
    both = math.isnan(before) and math.isnan(after)
    return "before and after" if both else ("before" if math.isnan(before) else "after")


def check_thresholds(thresholds: Thresholds, *, metrics_before: dict[str, Any], metrics_after: dict[str, Any],
                     bytes_after: int) -> list[dict[str, Any]]:
    """One ``{"name", "limit", "value", "ok", "message"}`` per limit set (``max_drop`` adds ``"metric"``,
    the metric it read: :func:`quality_key` of the metrics before).

    ``ok`` is None when the value needed was not measured (no eval given, the metric missing after
    compression, no latency timed), which the report shows as unchecked. A NaN (an eval that returned NaN, a
    timing that failed) crosses the limit on it (``ok`` False): no limit holds on a number nothing can be
    compared with; the CLI's gate reads these same results."""
    out: list[dict[str, Any]] = []
    if thresholds.max_drop is not None:
        limit = thresholds.max_drop
        key = quality_key(metrics_before, thresholds.metric)
        before = None if key is None else metric_number(metrics_before[key])
        after = None if key is None else metric_number(metrics_after.get(key))
        row = {"name": "max_drop", "limit": limit, "metric": key, "value": None, "ok": None}
        if key is None or before is None:
            row["message"] = "not checked: no quality metric measured before and after (pass eval=)"
        elif after is None:
            row["message"] = f"not checked: {key} was not measured after compression"
        elif math.isnan(before) or math.isnan(after):
            row.update(value=math.nan, ok=False, message=f"{key} is NaN {nan_when(before, after)} compression, "
                                                         f"so the limit {limit:.4g} cannot hold")
        else:
            drop = before - after
            row.update(value=drop, ok=bool(drop <= limit + 1e-12),  # an undefined drop (inf - inf) is no pass
                       message=f"{key} dropped by {drop:.4g} (limit {limit:.4g})")
        out.append(row)
    if thresholds.max_latency_ms is not None:
        limit = thresholds.max_latency_ms
        value = metric_number(metrics_after.get("latency_ms"))
        if value is None:
            ok, message = None, "not checked: no latency measured (pass example_inputs=)"
        elif math.isnan(value):
            ok, message = False, f"latency is NaN (the timing failed), so the limit {limit:.3g} ms cannot hold"
        else:
            ok, message = bool(value <= limit), f"latency {value:.3g} ms (limit {limit:.3g} ms)"
        out.append({"name": "max_latency_ms", "limit": limit, "value": value, "ok": ok, "message": message})
    if thresholds.max_bytes is not None:
        ok = bool(bytes_after <= thresholds.max_bytes)
        out.append({"name": "max_bytes", "limit": thresholds.max_bytes, "value": bytes_after, "ok": ok,
                    "message": f"{bytes_after:,} bytes in memory (limit {int(thresholds.max_bytes):,})"})
    return out
