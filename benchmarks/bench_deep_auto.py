"""``auto(objective='disk')`` on LeNet-300-100 trained on scikit-learn's digits (issue 24, point 3): the search
counts the compact artifact's bytes (``save(..., compact=True)``, zstd) and may stack pruning and weight sharing
on a layer, as Deep Compression does by hand (``bench_compact``), here found within an accuracy budget with no
fine-tuning. One row, report only: the fp32 dense artifact of the trained model over the compact artifact of
the plan found (both files as ``save`` writes them, manifests included), the accuracy drop, the evaluations, the
plan; the note gives what the same search finds with pruning alone and with weight sharing alone.
"""

from __future__ import annotations

import time

import torch

import jupyter_compress as jc
from jupyter_compress.examples.digits import digits_data, evaluate, fine_tune
from jupyter_compress.strategy.auto import auto

from .bench_compact import LeNet300
from .timing import REPORT

PRUNE, CLUSTER = "prune", "quantize.cluster"
MAX_DROP = 0.01
RATIOS = (0.5, 0.75, 0.9, 0.95)


def _best(res) -> dict:
    return next(t for t in res.trials if t["plan"] == res.plan)


def rows(quick: bool) -> list[dict]:
    seed = 0
    torch.manual_seed(seed)
    X_train, X_test, y_train, y_test = digits_data(seed)
    model = fine_tune(LeNet300(), X_train, y_train, epochs=40, lr=2e-3, seed=seed)
    ev = evaluate(X_test, y_test)
    before = jc.state_dict_hash(model)
    kw = dict(eval=ev, objective="disk", max_drop=MAX_DROP, ratios=RATIOS, cache_dir=False, progress=False, seed=seed)
    start = time.perf_counter()
    res = auto(model, methods=[PRUNE, CLUSTER], **kw)
    seconds = time.perf_counter() - start
    alone = {m: auto(model, methods=[m], **kw) for m in (PRUNE, CLUSTER)}
    unchanged = jc.state_dict_hash(model) == before
    dense = res.report.metrics_before["disk_artifact_bytes"]
    best = _best(res)
    ratio = dense / best["compact_bytes"]
    others = "; ".join(f"{m} alone: {_best(r)['compact_bytes']:,} B ({dense / _best(r)['compact_bytes']:.1f}x, "
                       f"drop {100 * _best(r)['drop']:+.2f} pt)" for m, r in alone.items() if r.plan is not None)
    return [{"name": "auto objective=disk, LeNet-300-100 on digits",
             "figure": "fp32 dense artifact / compact artifact", "baseline": f"{dense:,} B",
             "value": f"{ratio:.1f}x", **REPORT,
             "note": f"compact {best['compact_bytes']:,} B (with the report in its manifest "
                     f"{res.report.metrics_after['disk_compact_bytes']:,} B); accuracy "
                     f"{res.report.metrics_before['accuracy']:.4f} -> {best['metric']:.4f} (drop "
                     f"{100 * best['drop']:+.2f} pt, budget {100 * MAX_DROP:g} pt); {res.evaluations} evaluations "
                     f"({res.sensitivity.measured} points, {len(res.trials)} plans) in {seconds:.1f} s; "
                     f"budget {'met' if res.met else 'NOT met'}; model {'unchanged' if unchanged else 'CHANGED'}; "
                     f"plan: {res.plan.describe() if res.plan else '(none)'}; {others}"}]
