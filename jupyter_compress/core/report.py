"""Reports: per-layer rows, totals, metrics before/after, notes; rendered as text, HTML and JSON."""

from __future__ import annotations

import dataclasses
import html
from typing import Any

__all__ = ["LayerRow", "Report", "REPORT_MIME"]

REPORT_MIME = "application/vnd.jupyter-compress.report+json"


@dataclasses.dataclass
class LayerRow:
    """What one step did to one layer. Counts are of what the layer *holds*, dense."""

    name: str
    method: str
    layer_type: str
    new_type: str
    params_before: int
    params_after: int
    nonzeros_before: int
    nonzeros_after: int
    bytes_before: int
    bytes_after: int
    error: float | None = None
    error_kind: str = "rel_error"
    sparse_bytes: int | None = None
    sparse_encoding: str | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _ratio(before: float, after: float) -> str:
    return f"{before / after:.2f}x" if after else "inf"


def _fmt_metric(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass
class Report:
    """The result of a compression: per-layer rows, model totals, metrics and plain-word notes."""

    rows: list[LayerRow]
    plan: dict[str, Any]
    model_params_before: int
    model_params_after: int
    model_nonzeros_before: int
    model_nonzeros_after: int
    model_bytes_before: int
    model_bytes_after: int
    metrics_before: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics_after: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    inplace: bool = False
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per-step metrics (schedules)

    # -- totals ------------------------------------------------------------
    @property
    def totals(self) -> dict[str, int]:
        """Sums over rows of the counts (before and after each step)."""
        keys = ("params_before", "params_after", "nonzeros_before", "nonzeros_after", "bytes_before", "bytes_after")
        return {k: sum(getattr(r, k) for r in self.rows) for k in keys}

    @property
    def compressed_rows(self) -> list[LayerRow]:
        return [r for r in self.rows if r.skipped is None]

    @property
    def skipped_rows(self) -> list[LayerRow]:
        return [r for r in self.rows if r.skipped is not None]

    # -- serialization -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["totals"] = self.totals
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["rows"] = [LayerRow(**r) for r in data.get("rows", [])]
        return cls(**kwargs)

    # -- rendering ---------------------------------------------------------
    def summary(self) -> list[tuple[str, str, str, str]]:
        """(quantity, before, after, ratio) lines shared by the text and HTML views."""
        lines = [
            ("parameters", f"{self.model_params_before:,}", f"{self.model_params_after:,}",
             _ratio(self.model_params_before, self.model_params_after)),
            ("non-zero parameters", f"{self.model_nonzeros_before:,}", f"{self.model_nonzeros_after:,}",
             _ratio(self.model_nonzeros_before, self.model_nonzeros_after)),
            ("bytes in memory", _fmt_bytes(self.model_bytes_before), _fmt_bytes(self.model_bytes_after),
             _ratio(self.model_bytes_before, self.model_bytes_after)),
        ]
        for key in sorted(set(self.metrics_before) | set(self.metrics_after)):
            before, after = self.metrics_before.get(key), self.metrics_after.get(key)
            ratio = ""
            if isinstance(before, (int, float)) and isinstance(after, (int, float)):
                ratio = f"{after / before:.2f}x time" if "latency" in key and before else f"{after - before:+.4g}"
            lines.append((key, _fmt_metric(before), _fmt_metric(after), ratio))
        return lines

    def _row_cells(self, r: LayerRow) -> list[str]:
        err = "" if r.error is None else f"{r.error:.4g}"
        sparse = "" if r.sparse_bytes is None else f"{_fmt_bytes(r.sparse_bytes)} ({r.sparse_encoding})"
        detail = ", ".join(f"{k}={_fmt_metric(v)}" for k, v in r.detail.items())
        if r.skipped:
            detail = f"skipped: {r.skipped}"
        return [r.name, r.method, f"{r.layer_type} -> {r.new_type}", f"{r.params_before:,}", f"{r.params_after:,}",
                f"{r.nonzeros_after:,}", err, sparse, detail]

    _HEAD = ["layer", "method", "change", "params before", "params after", "non-zeros after", "rel. error",
             "sparse size", "detail"]

    def to_text(self) -> str:
        out = ["jupyter_compress report" + (" (in place)" if self.inplace else ""), ""]
        width = max(len(s[0]) for s in self.summary())
        for name, before, after, ratio in self.summary():
            out.append(f"  {name:<{width}}  {before:>14} -> {after:<14} {ratio}")
        cells = [self._HEAD] + [self._row_cells(r) for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(self._HEAD))]
        out.append("")
        for c in cells:
            out.append("  " + "  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
        if self.notes:
            out.append("")
            out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_html(self) -> str:
        esc = html.escape
        style = "border-collapse:collapse;font-family:monospace;font-size:12px"
        cell = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"
        parts = [f'<div class="jupyter-compress-report"><b>jupyter_compress report</b>'
                 f'{" (in place)" if self.inplace else ""}',
                 f'<table style="{style}"><tr>'
                 + "".join(f'<th style="{cell}">{h}</th>' for h in ("", "before", "after", "ratio / change"))
                 + "</tr>"]
        for row in self.summary():
            parts.append("<tr>" + "".join(f'<td style="{cell}">{esc(v)}</td>' for v in row) + "</tr>")
        parts.append("</table>")
        parts.append(f'<details open><summary>{len(self.rows)} layer changes</summary><table style="{style}"><tr>'
                     + "".join(f'<th style="{cell}">{esc(h)}</th>' for h in self._HEAD) + "</tr>")
        for r in self.rows:
            parts.append("<tr>" + "".join(f'<td style="{cell}">{esc(v)}</td>' for v in self._row_cells(r)) + "</tr>")
        parts.append("</table></details>")
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in self.notes) + "</ul>")
        parts.append("</div>")
        return "".join(parts)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": self.to_text(), "text/html": self.to_html(), REPORT_MIME: self.to_dict()}
