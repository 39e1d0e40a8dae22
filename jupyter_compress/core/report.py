"""Reports: per-layer rows, totals, metrics before/after, notes; rendered as text, HTML and JSON."""

from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

from .jsonsafe import json_restore, json_safe

__all__ = ["LayerRow", "Report", "REPORT_MIME", "format_bytes"]

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
        return json_safe(dataclasses.asdict(self))


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


format_bytes = _fmt_bytes  # public name for the other views (the tuning panel)


def _ratio(before: float, after: float) -> str:
    return f"{before / after:.2f}x" if after else "inf"


def _fmt_metric(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if key.endswith("_bytes") and isinstance(value, (int, float)):
        return _fmt_bytes(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _change(key: str, before: Any, after: Any) -> str:
    """How a metric moved: a ratio for sizes, times and throughput, a signed difference otherwise."""
    if not (_is_number(before) and _is_number(after)) or not math.isfinite(before - after):
        return ""
    if "latency" in key or key.endswith("_s"):
        return f"{after / before:.2f}x time" if before else ""
    if key.endswith("_bytes"):
        return _ratio(before, after) + " smaller" if after else ""
    if key.startswith("throughput"):
        return f"{after / before:.2f}x" if before else ""
    return f"{after - before:+.4g}"


def _metric_order(key: str) -> tuple[int, str]:
    """Quality first, then speed, memory and size on disk; alphabetical within a group."""
    groups = (("accuracy", "precision", "recall", "f1", "mae", "mse", "r2", "metric"),
              ("top1", "cosine", "kl_", "sqnr", "output_"), ("latency", "throughput"), ("peak_memory",), ("disk_",))
    for i, prefixes in enumerate(groups):
        if key.startswith(prefixes):
            return (i, key)
    return (0, key)  # the user's own metrics sit with the quality ones


# Metrics the summary leaves out because the report's own totals already show them.
_SHOWN_BY_TOTALS = ("params", "nonzeros")


@dataclasses.dataclass
class Report:
    """The result of a compression: per-layer rows, model totals, metrics and plain-word notes.

    ``to_dict()`` is strict JSON data (``json.dumps(report.to_dict(), allow_nan=False)`` always works): a
    non-finite float (an SQNR of infinity for an exactly representable layer, a NaN metric) is written as
    the string ``"Infinity"``, ``"-Infinity"`` or ``"NaN"`` (see :mod:`jupyter_compress.core.jsonsafe`), and
    ``from_dict`` reads those strings back as floats (in metrics, timings, history, thresholds and rows).
    """

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
    thresholds: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # see core.thresholds
    # HTML fragments (plots) shown under the summary; in the notebook's JSON (see _repr_mimebundle_), not in
    # to_dict() by default (a report.json stays small).
    plots_html: list[tuple[str, str]] = dataclasses.field(default_factory=list, repr=False, compare=False)
    # Plots as bokeh JSON items (data only, no BokehJS), each a JSON *string*: a notebook is saved with its keys
    # sorted, which would put bokeh's references ahead of their definitions. The extension draws them.
    plot_items: list[tuple[str, str]] = dataclasses.field(default_factory=list, repr=False, compare=False)

    @property
    def passed(self) -> bool | None:
        """False if a threshold is crossed, True if all set ones hold, None if none set or unchecked."""
        status = [t["ok"] for t in self.thresholds]
        if any(ok is False for ok in status):
            return False
        return True if status and all(ok for ok in status) else None

    def attach_html(self, title: str, fragment: str) -> None:
        """Show ``fragment`` (e.g. a plot's HTML, see :mod:`jupyter_compress.plotting`) in the HTML view."""
        self.plots_html.append((title, fragment))

    def attach_plot(self, title: str, item: dict[str, Any] | str) -> None:
        """Attach a plot as a bokeh JSON item (``bokeh.embed.json_item``, or its JSON text), drawn by the
        JupyterLab extension."""
        import json

        self.plot_items.append((title, item if isinstance(item, str) else json.dumps(item)))

    LARGER = "LARGER than the original"

    @property
    def headline(self) -> str | None:
        """The first line of every view when the compressed model is larger than the original: by how much,
        and why (the note the core wrote); None otherwise."""
        if self.model_bytes_after <= self.model_bytes_before and self.model_params_after <= self.model_params_before:
            return None
        why = next((n for n in self.notes if n.startswith(self.LARGER)), self.LARGER + ".")
        return "WARNING: " + why

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
    def to_dict(self, plots: bool = False) -> dict[str, Any]:
        """Plain JSON data; ``plots=True`` adds ``plots_html`` ([title, HTML] pairs), which may hold BokehJS."""
        data = dataclasses.asdict(self)
        data.pop("plots_html")
        data.pop("plot_items")
        if plots and self.plot_items:  # data only: the extension draws them with its own BokehJS
            data["plot_items"] = [[title, item] for title, item in self.plot_items]
        elif plots and self.plots_html:
            data["plots_html"] = [[title, fragment] for title, fragment in self.plots_html]
        data["totals"] = self.totals
        data["passed"] = self.passed
        data["headline"] = self.headline
        # the rendered summary travels with the data, so the JupyterLab renderer shows exactly these lines
        data["summary"] = [list(line) for line in self.summary()]
        # ... and so do the threshold lines (parallel to ``thresholds``) and the per-layer table's cells
        data["threshold_lines"] = self.threshold_lines()
        data["layer_table"] = {"head": list(self._HEAD), "rows": [self._row_cells(r) for r in self.rows]}
        return json_safe(data)

    # fields whose strings are the user's words, never a non-finite number written as a string
    _TEXT_FIELDS = ("plan", "notes")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: (v if k in cls._TEXT_FIELDS else json_restore(v)) for k, v in data.items() if k in fields}
        kwargs["rows"] = [LayerRow(**{k: (v if k in ("name", "skipped") else json_restore(v)) for k, v in r.items()})
                          for r in data.get("rows", [])]
        kwargs["plots_html"] = [(str(t), str(f)) for t, f in data.get("plots_html") or []]
        kwargs["plot_items"] = [(str(t), str(item)) for t, item in data.get("plot_items") or []]
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
        for key in sorted(set(self.metrics_before) | set(self.metrics_after), key=_metric_order):
            before, after = self.metrics_before.get(key), self.metrics_after.get(key)
            if key in _SHOWN_BY_TOTALS or not (_is_number(before) or _is_number(after)):
                continue  # nested detail (per class, codecs) has its own tables
            lines.append((key, _fmt_metric(before, key), _fmt_metric(after, key), _change(key, before, after)))
        return lines

    def threshold_lines(self) -> list[str]:
        """One line per threshold: PASS / FAIL / UNCHECKED and the measured value against the limit."""
        word = {True: "PASS", False: "FAIL", None: "UNCHECKED"}
        return [f"{word[t['ok']]}: {t['message']}" for t in self.thresholds]

    def _codec_rows(self) -> list[list[str]]:
        rows = []
        for label, metrics in (("before", self.metrics_before), ("after", self.metrics_after)):
            for c in metrics.get("codecs") or []:
                rows.append([label, c["codec"], _fmt_bytes(c["raw_bytes"]), _fmt_bytes(c["compressed_bytes"]),
                             f"{c['ratio']:.2f}x", f"{c['compress_mb_s']:.0f}", f"{c['decompress_mb_s']:.0f}"])
        return rows

    def _class_rows(self) -> list[list[str]]:
        before, after = self.metrics_before.get("per_class") or {}, self.metrics_after.get("per_class") or {}
        rows = []
        for cls in sorted(set(before) | set(after), key=lambda c: (len(c), c)):
            b, a = before.get(cls, {}), after.get(cls, {})
            f1b, f1a = b.get("f1"), a.get("f1")
            rows.append([cls, _fmt_metric(f1b), _fmt_metric(f1a), _change("f1", f1b, f1a),
                         _fmt_metric(a.get("recall")), str(a.get("support", b.get("support", "")))])
        return rows

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
        if self.headline:
            out[1:1] = [self.headline]
        if self.passed is False:
            out[1:1] = ["WARNING: a threshold is crossed: " + "; ".join(
                t["message"] for t in self.thresholds if t["ok"] is False)]
        width = max(len(s[0]) for s in self.summary())
        for name, before, after, ratio in self.summary():
            out.append(f"  {name:<{width}}  {before:>14} -> {after:<14} {ratio}")
        if self.thresholds:
            out.append("")
            out += [f"  {line}" for line in self.threshold_lines()]
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
                 (f'<div style="background:#ffebe9;color:#cf222e;padding:4px;font-weight:bold">{esc(self.headline)}'
                  '</div>' if self.headline else ""),
                 ('<div style="background:#ffebe9;color:#cf222e;padding:4px;font-weight:bold">WARNING: a threshold '
                  'is crossed</div>' if self.passed is False else ""),
                 f'<table style="{style}"><tr>'
                 + "".join(f'<th style="{cell}">{h}</th>' for h in ("", "before", "after", "ratio / change"))
                 + "</tr>"]
        for row in self.summary():
            parts.append("<tr>" + "".join(f'<td style="{cell}">{esc(v)}</td>' for v in row) + "</tr>")
        parts.append("</table>")
        for t, line in zip(self.thresholds, self.threshold_lines()):
            color = {True: "#1a7f37", False: "#cf222e", None: "#9a6700"}[t["ok"]]
            parts.append(f'<div style="color:{color};font-weight:bold;font-family:monospace">{esc(line)}</div>')
        for title, head, rows in (
            ("per-class F1", ["class", "F1 before", "F1 after", "change", "recall after", "support"],
             self._class_rows()),
            ("bytes on disk through general-purpose codecs",
             ["model", "codec", "raw", "compressed", "ratio", "compress MB/s", "decompress MB/s"],
             self._codec_rows()),
        ):
            if rows:
                parts.append(f'<details><summary>{esc(title)}</summary><table style="{style}"><tr>'
                             + "".join(f'<th style="{cell}">{esc(h)}</th>' for h in head) + "</tr>"
                             + "".join("<tr>" + "".join(f'<td style="{cell}">{esc(v)}</td>' for v in r) + "</tr>"
                                       for r in rows) + "</table></details>")
        parts.append(f'<details open><summary>{len(self.rows)} layer changes</summary><table style="{style}"><tr>'
                     + "".join(f'<th style="{cell}">{esc(h)}</th>' for h in self._HEAD) + "</tr>")
        for r in self.rows:
            parts.append("<tr>" + "".join(f'<td style="{cell}">{esc(v)}</td>' for v in self._row_cells(r)) + "</tr>")
        parts.append("</table></details>")
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in self.notes) + "</ul>")
        for title, fragment in self.plots_html:  # trusted HTML built by jupyter_compress.plotting
            parts.append(f'<div class="jupyter-compress-plot"><b>{esc(title)}</b>{fragment}</div>')
        if self.plot_items and not self.plots_html:
            titles = ", ".join(title for title, _ in self.plot_items)
            parts.append(f'<div style="font-style:italic">plots ({esc(titles)}): shown by the jupyter-compress '
                         "JupyterLab extension; elsewhere set %config CompressMagics.bokeh_resources = 'inline' "
                         "before the report</div>")
        parts.append("</div>")
        return "".join(parts)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        # The JSON carries the plots too: JupyterLab shows it (the extension ranks it ahead of text/html) and
        # renders the plots only when the output is trusted.
        return {"text/plain": self.to_text(), "text/html": self.to_html(), REPORT_MIME: self.to_dict(plots=True)}
