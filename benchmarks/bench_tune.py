"""Tuning panel on MiniLM: one-time analysis, then slider -> preview latency vs recomputing."""

from __future__ import annotations

import statistics
import time

from jupyter_compress import compress
from jupyter_compress.methods.decompose import clear_cache

from .timing import REPORT, at_least, at_most


def rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.minilm import load_minilm
    from jupyter_compress.widgets import tune

    model = load_minilm()
    clear_cache()
    start = time.perf_counter()
    panel = tune(model)
    panel.method_pickers["decomposition"].value = "svd"
    panel.method_pickers["pruning"].value = "prune"
    analysis_s = panel.engine.analyse() + (time.perf_counter() - start)
    slider = panel.controls["svd"]["rank"]
    values = [round(0.05 + 0.9 * ((i * 37) % 100) / 100, 2) for i in range(20 if quick else 100)]
    times = []
    for value in values:
        t = time.perf_counter()
        slider.value = value
        times.append(time.perf_counter() - t)
    preview_ms = statistics.median(times) * 1e3
    plan = panel.plan()
    clear_cache()  # recomputing from scratch: the decompositions again, then the compression
    t = time.perf_counter()
    compress(model, plan, measure=False)
    recompute_ms = (time.perf_counter() - t) * 1e3
    last = panel.last_preview
    fresh = panel.engine.preview(panel.state.settings(plan)[0])
    same = (last.params_after, last.nonzeros_after) == (fresh.params_after, fresh.nonzeros_after)
    name = "tuning panel on MiniLM: slider -> preview (svd + prune)"
    return [
        {"name": "tuning panel on MiniLM: one-time analysis", "figure": "seconds", "baseline": "-",
         "value": f"{analysis_s:.1f} s", **REPORT,
         "note": f"{len(panel.engine.names)} layers: sorted magnitudes + SVD spectra"},
        {"name": name, "figure": "median ms", "baseline": "-", "value": f"{preview_ms:.1f} ms",
         **at_most(preview_ms, 50, "<= 50 ms"), "note": f"median over {len(values)} slider events"},
        {"name": name, "figure": "recompute / preview", "baseline": f"recompute {recompute_ms:.0f} ms",
         "value": f"{recompute_ms / preview_ms:.0f}x", **at_least(recompute_ms / preview_ms, 100, ">= 100x"),
         "note": "recompute: clear the decomposition cache, then compress with the panel's plan"},
        {"name": f"tuning panel on MiniLM: {len(values)} rapid slider events", "figure": "final state = last event's",
         "baseline": "-", "value": "yes" if same else "no", "target": "yes", "status": "pass" if same else "short",
         "note": "params and non-zeros of the last preview vs a fresh preview of the final settings; no exception"},
    ]
