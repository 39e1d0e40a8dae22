"""Truncated SVD of a large Linear: latency speedup vs the dense layer, beside the multiply-add ratio."""

from __future__ import annotations

import torch
from torch import nn

from jupyter_compress import SVDConfig, compress

from .timing import at_least, paired_speedup, rounds_repeats, speedup_note

IN, OUT = 768, 3072


def rows(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(IN, OUT))  # random weights: latency does not depend on the values
    low, report = compress(dense, SVDConfig(rank=1 / 3))
    rank = report.rows[0].detail["rank"]
    mac_ratio = IN * OUT / (rank * (IN + OUT))
    params = report.model_params_before / report.model_params_after
    out = []
    for batch in (1, 8, 32):
        r = paired_speedup(dense, low, torch.randn(batch, IN), **rounds_repeats(quick))
        out.append({
            "name": f"SVD Linear({IN}, {OUT}) rank {rank}, batch {batch}",
            "figure": "latency speedup",
            "baseline": f"dense {r['baseline_ms']:.3f} ms",
            "value": f"{r['speedup']:.2f}x",
            **at_least(r["speedup"], 0.5 * mac_ratio, f">= 0.5 x MAC ratio = {0.5 * mac_ratio:.2f}x"),
            "note": f"MACs {mac_ratio:.2f}x fewer, params {params:.2f}x; {speedup_note(r)}",
        })
    return out
