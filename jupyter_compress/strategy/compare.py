"""``compare``: every method family at a matched size budget, measured on the user's model.

Each row is measured here, on this model and this CPU: size, quality change (task metric with
labels, else the user's eval, else fidelity to the original), latency change, time to compress.
"Needs retraining?" is advised from the measured drop (``retrain_above``); "works on this
hardware?" from the measured speedup. The candidates come from the methods' ``compare`` declarations
(:mod:`.budget`), so a newly registered method gets its row by itself. The Pareto plot of the rows is
drawn by :func:`jupyter_compress.plotting.comparison_figure` (this module imports no plotting).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..core.apply import compress
from ..core.evaluate import Evaluator
from ..core.inputs import prepare_all
from ..core.jsonsafe import json_safe
from ..core.metrics import model_bytes
from ..core.metrics_size import disk_sizes
from ..core.metrics_speed import paired_latency
from ..core.plan import Plan
from ..core.thresholds import QUALITY_KEYS, quality_key
from .budget import Candidate, default_candidates

__all__ = ["compare", "ComparisonTable", "hardware_summary"]

def hardware_summary() -> str:
    """This CPU as torch sees it: vector ISA, threads, int8 engine."""
    cap = torch.backends.cpu.get_cpu_capability()
    return (f"CPU {cap}, {torch.get_num_threads()} threads, int8 engine "
            f"{torch.backends.quantized.engine or 'none'}")


class ComparisonTable:
    """The rows of :func:`compare` (dicts), shown as text and HTML; ``models`` holds the compressed copies
    by row label (``table.models["pruning, structured"]``). ``points()`` are the data of its Pareto plot
    (``jupyter_compress.plotting.comparison_figure(table)``; ``plotting.attach_comparison_plot(table)`` makes
    the table's HTML view show it)."""

    COLUMNS = ("method", "size", "quality", "latency", "compress time", "needs data?", "needs retraining?",
               "works on this hardware?")

    def __init__(self, rows: list[dict[str, Any]], *, budget: float, quality_key: str | None, hardware: str,
                 models: dict[str, nn.Module] | None = None):
        self.rows, self.budget, self.quality_key, self.hardware = rows, budget, quality_key, hardware
        self.models = models or {}
        self.plots_html: list[str] = []

    def attach_html(self, fragment: str) -> None:
        """Show ``fragment`` (trusted HTML, e.g. a plot from :mod:`jupyter_compress.plotting`) below the table."""
        self.plots_html.append(fragment)

    def cells(self, row: dict[str, Any]) -> list[str]:
        if row.get("error"):
            return [row["label"], "-", "-", "-", "-", row.get("needs_data_text", "-"), "-", row["error"]]
        size = f"{row['size_ratio']:.2f}x smaller" if row["size_ratio"] > 1.01 else "same size in memory"
        if row["sparse_ratio"] > row["size_ratio"] * 1.05:
            size += f" ({row['sparse_ratio']:.2f}x stored sparse)"
        q = "-"
        if row.get("quality_after") is not None:
            q = f"{row['quality_before']:.4g} -> {row['quality_after']:.4g} ({row['quality_change']:+.4g})"
        lat = "-" if row.get("latency_ratio") is None else f"{row['latency_ratio']:.2f}x time"
        return [row["label"], size, q, lat, f"{row['compress_s']:.2f} s", row["needs_data_text"],
                row["needs_retraining"], row["hardware"]]

    def title(self) -> str:
        key = self.quality_key or "no quality metric (pass data= or eval=)"
        return f"compression methods at budget {self.budget:g} (quality: {key}; {self.hardware})"

    def to_text(self) -> str:
        cells = [list(self.COLUMNS)] + [self.cells(r) for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.COLUMNS))]
        lines = [self.title(), ""] + ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
        return "\n".join(lines)

    def to_html(self) -> str:
        esc = html.escape
        cell = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"
        out = [f"<div class='jupyter-compress-compare'><b>{esc(self.title())}</b>",
               "<table style='border-collapse:collapse;font-family:monospace;font-size:12px'><tr>"
               + "".join(f"<th style='{cell}'>{esc(h)}</th>" for h in self.COLUMNS) + "</tr>"]
        for r in self.rows:
            out.append("<tr>" + "".join(f"<td style='{cell}'>{esc(v)}</td>" for v in self.cells(r)) + "</tr>")
        out.append("</table>")
        out.extend(self.plots_html)  # trusted HTML built by jupyter_compress.plotting
        out.append("</div>")
        return "".join(out)

    def points(self) -> list[dict[str, Any]]:
        """One point per measured row: size kept (x, lower is better) and quality (y) with its plan."""
        return [{"size_kept": 1 / r["size_ratio"], "quality": r["quality_after"], "plan": r["plan"],
                 "label": r["label"]} for r in self.rows if not r.get("error") and r.get("quality_after") is not None]

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON data (non-finite floats as strings, see core.jsonsafe)."""
        return json_safe({"budget": self.budget, "quality_key": self.quality_key, "hardware": self.hardware,
                          "rows": self.rows})

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        # No application/json here: JupyterLab ranks its JSON tree viewer ahead of text/html, so the table
        # would show as a collapsed tree. The data stays available as ``to_dict()``.
        return {"text/plain": self.to_text(), "text/html": self.to_html()}


# Keys the Evaluator itself adds; any other key in the metrics came from the user's eval.
_MEASURED_HERE = {"params", "nonzeros", "cosine", "sqnr_db", "top1_agreement", "kl_div", "accuracy",
                  "precision_macro", "recall_macro", "f1_macro", "mae", "mse", "r2"}


def _sparse_ratio(model: nn.Module, dense_before: int) -> float:
    sparse = disk_sizes(model, codecs=())["sparse_bytes"]
    return dense_before / sparse if sparse else float("inf")


def _hardware_cell(cand: Candidate, row: dict[str, Any]) -> str:
    ratio = row["latency_ratio"]
    if ratio is None:
        return "not measured (pass example_inputs=)"
    if ratio < 0.9:  # the band [0.9, 1.1] is within what paired timings on a busy machine can tell
        return f"yes: {1 / ratio:.2f}x faster here"
    why = ""
    if row["size_ratio"] <= 1.01 and row["sparse_ratio"] > 1.05:  # zeros inside dense tensors
        why = "dense kernels multiply the zeros; only a sparse format saves bytes"
    if "precision" in cand.stages:
        why = f"int8 engine here: {torch.backends.quantized.engine or 'none'}"
    words = "no speedup here" if ratio <= 1.1 else f"no: {ratio:.2f}x slower here"
    return f"{words}{'; ' + why if why else ''}"


def _measure(model, cand: Candidate, *, ev: Evaluator, base: dict, key: str | None, example_inputs, data,
             retrain_above: float, dense_before: int, keep: dict) -> dict[str, Any]:
    row: dict[str, Any] = {"label": cand.label, "family": cand.family, "methods": list(cand.methods),
                           "needs_data": cand.needs_data, "needs_data_text": cand.needs_text}
    if cand.skip:
        row["error"] = f"skipped: {cand.skip}"
        return row
    try:
        configs = cand.plan() if callable(cand.plan) else cand.plan
        plan = Plan.of(*configs)
        row["plan"] = plan.describe()
        # no example_inputs for compress's own timing: latency is measured below, paired
        small, report = compress(model, plan, data=data) if not cand.needs_data else compress(
            model, plan, example_inputs=example_inputs, data=data)
    except Exception as exc:  # one family failing must not hide the others
        row["error"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return row
    after = ev(small)
    keep[cand.label] = small
    row["compress_s"] = report.timings.get("compress s", 0.0)
    row["size_ratio"] = dense_before / max(model_bytes(small), 1)
    row["sparse_ratio"] = _sparse_ratio(small, dense_before)
    row["params_after"], row["bytes_after"] = report.model_params_after, report.model_bytes_after
    if key is not None and key in after:
        row["quality_before"], row["quality_after"] = float(base[key]), float(after[key])
        row["quality_change"] = row["quality_after"] - row["quality_before"]
    lb = la = None
    if example_inputs is not None:
        lb, la = paired_latency(model, small, example_inputs)
    row["latency_before_ms"], row["latency_after_ms"] = lb, la
    row["latency_ratio"] = la / lb if lb and la else None
    drop = -row.get("quality_change", 0.0)
    row["needs_retraining"] = ("yes: it trains the model" if cand.trains else
                               f"advised: lost {drop:.3g}" if drop > retrain_above else "no")
    row["hardware"] = _hardware_cell(cand, row)
    return row


def compare(model: nn.Module, data: Any = None, *, eval: Callable[[nn.Module], Any] | None = None,
            budget: float = 0.5, example_inputs: Any = None, methods: Sequence[str] | None = None,
            retrain_above: float = 0.01, max_batches: int | None = None, tokenizer: Any = None) -> ComparisonTable:
    """Run each method family at ``budget`` (fraction of the targeted layers' parameters kept) on a
    copy of ``model`` and measure it: see :class:`ComparisonTable`. ``data`` is ``(X, y)``, ``X`` or
    batches (labels give task metrics, otherwise fidelity to ``model``'s outputs); ``eval`` adds the
    user's own metric (used as the quality column when no labels are given); ``example_inputs``
    (default: the first batch of ``data``) is used for latency and to trace structured pruning;
    ``methods`` keeps only rows whose methods or family are listed; lists of sentences are tokenized by
    ``tokenizer`` (or the model's own). ``model`` is never changed."""
    example_inputs, data = prepare_all(model, example_inputs, data, tokenizer)
    if not 0 < budget < 1:
        raise ValueError(f"budget must be a float in (0, 1) (fraction of parameters kept); got {budget!r}.")
    from ..core.data import iter_batches

    first = next(iter_batches(data, max_batches=1)) if data is not None else (None, None)
    if example_inputs is None:
        example_inputs = first[0]
    labelled = first[1] is not None
    ev = Evaluator(data, reference=model if data is not None else None, user_eval=eval, max_batches=max_batches)
    base = ev(model)
    key = None
    if labelled:  # a task metric measured against the labels
        key = quality_key({k: base[k] for k in QUALITY_KEYS[:3] if k in base})
    if key is None and eval is not None:  # else the user's own metric
        key = quality_key({k: v for k, v in base.items() if k not in _MEASURED_HERE})
    if key is None and data is not None:
        key = "cosine"  # without labels: closeness to the original outputs (class scores or embeddings)
    candidates = default_candidates(model, budget, example_inputs=example_inputs, data=data, labelled=labelled)
    if methods is not None:
        wanted = set(methods)
        candidates = [c for c in candidates if wanted & (set(c.methods) | {c.family, c.label})]
    dense_before = model_bytes(model)
    keep: dict[str, nn.Module] = {}
    rows = []
    for cand in candidates:
        start = time.perf_counter()
        row = _measure(model, cand, ev=ev, base=base, key=key, example_inputs=example_inputs, data=data,
                       retrain_above=retrain_above, dense_before=dense_before, keep=keep)
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
    return ComparisonTable(rows, budget=budget, quality_key=key, hardware=hardware_summary(), models=keep)

