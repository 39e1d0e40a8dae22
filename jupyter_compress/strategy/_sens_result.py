"""The result of a sensitivity sweep: points, plain-word verdicts, heatmap columns (drawn by
:func:`jupyter_compress.plotting.sensitivity_heatmap`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..core.jsonsafe import json_safe

__all__ = ["Sensitivity"]


def _label(point: dict[str, Any]) -> str:
    if point["ratio"] is None:
        return "default"
    return f"{point['ratio']:g}"


@dataclasses.dataclass
class Sensitivity:
    """Measured points (dicts: method, family, unit, layers, ratio, setting, metric, drop, bytes...)."""

    points: list[dict[str, Any]]
    baseline: float
    metric: str
    ratios: tuple[float, ...]
    complete: bool = True
    measured: int = 0
    reused: int = 0
    executor_note: str | None = None  # where a distributed sweep ran and how it was cut into tasks
    pruned: int = 0  # settings not measured: a milder one on the same unit already dropped past the budget
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    cache_path: str | None = None

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(p["method"] for p in self.points))

    def units(self, method: str | None = None) -> list[str]:
        return list(dict.fromkeys(p["unit"] for p in self.points if method in (None, p["method"])))

    def curve(self, method: str, unit: str) -> list[dict[str, Any]]:
        """The points of one unit under one method, mildest first."""
        pts = [p for p in self.points if p["method"] == method and p["unit"] == unit]
        return sorted(pts, key=lambda p: -1.0 if p["ratio"] is None else p["ratio"])

    def heatmap(self, method: str | None = None) -> dict[str, list]:
        """Plain columns for a layers x ratio heatmap: ``layer``, ``setting`` (axis label), ``ratio``,
        ``drop``, ``metric``, ``method`` (one method, or all with ``method=None``)."""
        cols: dict[str, list] = {k: [] for k in ("method", "layer", "setting", "ratio", "drop", "metric")}
        for p in self.points:
            if method in (None, p["method"]) and not p.get("skipped"):
                for k, v in (("method", p["method"]), ("layer", p["unit"]), ("setting", _label(p)),
                             ("ratio", p["ratio"]), ("drop", p["drop"]), ("metric", p["metric"])):
                    cols[k].append(v)
        return cols

    def verdicts(self, max_drop: float) -> list[dict[str, Any]]:
        """Per method and unit: ``safe`` (within ``max_drop`` at the strongest setting measured),
        ``fragile`` (over it already at the mildest), else ``tolerates`` up to the largest ratio within it."""
        out = []
        for method in self.methods:
            for unit in self.units(method):
                curve = [p for p in self.curve(method, unit) if not p.get("skipped")]
                if not curve:
                    continue
                ok = [p for p in curve if p["drop"] <= max_drop]
                if len(ok) == len(curve):
                    verdict = "safe"
                elif curve[0]["drop"] > max_drop:
                    verdict = "fragile"
                else:
                    verdict = "tolerates"
                best = max(ok, key=lambda p: p["ratio"] or 0.0) if ok else None
                out.append({"method": method, "unit": unit, "verdict": verdict,
                            "up_to": best["ratio"] if best else None,
                            "drop_at_mildest": curve[0]["drop"], "drop_at_strongest": curve[-1]["drop"]})
        return out

    def summary(self, max_drop: float = 0.01) -> str:
        """Safe and fragile layers, in plain words, per method."""
        lines = [f"Sensitivity of {self.metric} (original {self.baseline:.4g}); budget: a drop of at most "
                 f"{max_drop:g}."]
        for method in self.methods:
            rows = [v for v in self.verdicts(max_drop) if v["method"] == method]
            safe = [v["unit"] for v in rows if v["verdict"] == "safe"]
            fragile = [f"{v['unit']} ({v['drop_at_mildest']:.3g} already)" for v in rows
                       if v["verdict"] == "fragile"]
            between = [f"{v['unit']} up to {v['up_to']:g}" for v in rows if v["verdict"] == "tolerates"]
            strongest = max((p["ratio"] for p in self.points if p["method"] == method and p["ratio"]), default=None)
            at = f" even at {strongest:g}" if strongest is not None else ""
            lines.append(f"{method}: safe to compress{at}: {', '.join(safe) or 'none'}; "
                         f"fragile (over budget at the mildest setting): {', '.join(fragile) or 'none'}"
                         + (f"; tolerate some: {', '.join(between)}" if between else "") + ".")
        if not self.complete:
            lines.append("Incomplete: the sweep was interrupted; run it again to resume from the cache.")
        if self.errors:
            lines.append(f"{len(self.errors)} point(s) failed, e.g. {next(iter(self.errors.values()))}.")
        if self.executor_note:
            lines.append(self.executor_note)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON data (non-finite floats as strings, see core.jsonsafe)."""
        return json_safe(dataclasses.asdict(self))

    def __repr__(self) -> str:
        return (f"Sensitivity({len(self.points)} points, {len(self.methods)} methods, metric={self.metric!r}, "
                f"complete={self.complete})\n" + self.summary())
