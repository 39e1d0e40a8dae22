"""Unstructured pruning of an MLP: no faster in dense kernels; smaller only in a sparse encoding."""

from __future__ import annotations

import torch
from torch import nn

from jupyter_compress import PruneConfig, compress

from .timing import paired_speedup, rounds_repeats, speedup_note

DIMS = (768, 3072, 768)
BATCH = 8


def rows(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(DIMS[0], DIMS[1]), nn.ReLU(), nn.Linear(DIMS[1], DIMS[2]))
    x = torch.randn(BATCH, DIMS[0])
    name = "MLP " + "-".join(map(str, DIMS))
    out = []
    for amount in (0.5, 0.9):
        pruned, report = compress(dense, PruneConfig(amount=amount))
        r = paired_speedup(dense, pruned, x, **rounds_repeats(quick))
        dense_bytes = sum(row.bytes_after for row in report.rows)
        sparse_bytes = sum(row.sparse_bytes for row in report.rows)
        encodings = sorted({row.sparse_encoding for row in report.rows})
        out += [
            {"name": f"{name} pruned {amount:.0%}, batch {BATCH}", "figure": "latency speedup",
             "baseline": f"dense {r['baseline_ms']:.3f} ms", "value": f"{r['speedup']:.2f}x",
             "note": f"report only, expect ~1.0x: zeros are still multiplied; {speedup_note(r)}"},
            {"name": f"{name} pruned {amount:.0%}", "figure": "size ratio (sparse encoding)",
             "baseline": f"dense {dense_bytes / 2**20:.2f} MiB", "value": f"{dense_bytes / sparse_bytes:.2f}x",
             "note": f"{'/'.join(encodings)}: {sparse_bytes / 2**20:.2f} MiB; in memory still dense"},
        ]
    return out
