"""Structured channel pruning of ResNet-18: measured speedup vs the ideal (MAC-reduction) ratio, in PyTorch
eager and on the best runtime (issue 21): the ``runtime`` step serves the dense and the pruned model each on
the route it measures fastest for that batch size, and the pruned/dense ratio on those routes is set against
the MAC ratio (target >= 0.8 of it)."""

from __future__ import annotations

import torch

from jupyter_compress import RuntimeConfig, StructuredPruneConfig, compress, count_params
from jupyter_compress.examples.vision import ResNet18

from .timing import at_least, paired_speedup, speedup_note


def _macs(model, x) -> int:
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(model, x)
    return int(macs)


def rows(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    size = 112 if quick else 224
    dense = ResNet18().eval()
    pruned, report = compress(dense, StructuredPruneConfig(amount=0.5), example_inputs=torch.randn(1, 3, size, size))
    out = []
    for batch in (1, 16):
        x = torch.randn(batch, 3, size, size)
        ideal = _macs(dense, x[:1]) / _macs(pruned, x[:1])
        r = paired_speedup(dense, pruned, x, rounds=5 if quick else 11, repeats=3 if quick else 5)
        out.append({
            "name": f"ResNet-18 structured 50%, batch {batch}, {size}px", "figure": "latency speedup",
            "baseline": f"dense {r['baseline_ms']:.1f} ms", "value": f"{r['speedup']:.2f}x",
            **at_least(r["speedup"], 0.6 * ideal, f">= 0.6 x ideal = {0.6 * ideal:.2f}x"),
            "note": f"ideal (MAC ratio) {ideal:.2f}x; {r['speedup'] / ideal:.2f} of ideal; "
                    f"params {count_params(dense) / count_params(pruned):.2f}x fewer; {speedup_note(r)}",
        })
    for batch in (1, 16):
        x = torch.randn(batch, 3, size, size)
        ideal = _macs(dense, x[:1]) / _macs(pruned, x[:1])
        served = {}
        for label, model in (("dense", dense), ("pruned", pruned)):
            served[label], rep = compress(model, RuntimeConfig(), example_inputs=x, measure=False)
            served[label + " route"] = rep.plan["steps"][0]["backend"]
        r = paired_speedup(served["dense"], served["pruned"], x, rounds=5 if quick else 11, repeats=3 if quick else 5)
        e = paired_speedup(dense, served["pruned"], x, rounds=3 if quick else 5, repeats=3)
        out.append({
            "name": f"ResNet-18 structured 50% on its best runtime, batch {batch}, {size}px",
            "figure": "latency speedup, both on their best route",
            "baseline": f"dense on {served['dense route']} {r['baseline_ms']:.1f} ms", "value": f"{r['speedup']:.2f}x",
            **at_least(r["speedup"], 0.8 * ideal, f">= 0.8 x ideal = {0.8 * ideal:.2f}x"),
            "note": f"{r['speedup'] / ideal:.2f} of the MAC ratio {ideal:.2f}x (eager: row above); pruned on "
                    f"{served['pruned route']} is {e['speedup']:.2f}x dense PyTorch eager; {speedup_note(r)}",
        })
    skipped = [r.name for r in report.skipped_rows]
    if skipped:
        out[-1]["note"] += f"; skipped groups: {', '.join(skipped)}"
    return out
