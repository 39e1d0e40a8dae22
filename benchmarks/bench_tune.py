"""Tuning panel on MiniLM: one-time analysis, then slider -> preview latency vs recomputing."""

from __future__ import annotations

import statistics
import time

from jupyter_compress import compress
from jupyter_compress.methods.decompose import clear_cache


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
    fresh = panel.engine.preview(panel._settings(plan)[0])
    same = (last.params_after, last.nonzeros_after) == (fresh.params_after, fresh.nonzeros_after)
    return [
        {"name": "tuning panel on MiniLM: one-time analysis", "figure": "seconds", "baseline": "-",
         "value": f"{analysis_s:.1f} s", "note": f"{len(panel.engine.names)} layers: sorted magnitudes + SVD spectra"},
        {"name": "tuning panel on MiniLM: slider -> preview (svd + prune)", "figure": "median ms",
         "baseline": f"recompute {recompute_ms:.0f} ms", "value": f"{preview_ms:.1f} ms",
         "note": f"{recompute_ms / preview_ms:.0f}x less than recomputing (target >= 100x, <= 50 ms); "
                 f"{len(values)} events, final state equals the last event's: {same}"},
    ]
