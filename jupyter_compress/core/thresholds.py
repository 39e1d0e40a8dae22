"""User limits on a compression (max accuracy drop, max latency, max size) and their status."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import InvalidConfigError, shown

__all__ = ["Thresholds", "check_thresholds"]

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


def _quality_key(metrics: dict[str, Any], wanted: str | None) -> str | None:
    if wanted is not None:
        return wanted if wanted in metrics else None
    return next((k for k in QUALITY_KEYS if isinstance(metrics.get(k), (int, float))), None)


def check_thresholds(thresholds: Thresholds, *, metrics_before: dict[str, Any], metrics_after: dict[str, Any],
                     bytes_after: int) -> list[dict[str, Any]]:
    """One ``{"name", "limit", "value", "ok", "message"}`` per limit set; ``ok`` is None when the
    value needed was not measured (e.g. no eval given), which the report shows as unchecked."""
    out: list[dict[str, Any]] = []
    if thresholds.max_drop is not None:
        key = _quality_key(metrics_after, thresholds.metric)
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
