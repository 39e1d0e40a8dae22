"""Bytes on disk through zlib / LZ4 / Zstandard on MiniLM's weights, dense and 50%-pruned: ratio and
compression speed measured in this run (the LZ4-vs-zlib trade-off practitioners quote, on our model)."""

from __future__ import annotations

import jupyter_compress as jc
from jupyter_compress.core.metrics_size import codec_sizes, state_bytes


def rows(quick: bool = False) -> list[dict]:
    from jupyter_compress.examples.minilm import load_minilm

    model = load_minilm()
    pruned, _ = jc.compress(model, jc.PruneConfig(amount=0.5))
    out = []
    for label, m in (("dense", model), ("pruned 50%", pruned)):
        payload = state_bytes(m)
        if quick:
            payload = payload[: len(payload) // 8]
        results = {r.codec: r for r in codec_sizes(payload)}
        for name, r in results.items():
            out.append({"name": f"MiniLM {label}: {name}", "figure": "size ratio / compress MB/s",
                        "baseline": f"{r.raw_bytes / 1e6:.1f} MB raw",
                        "value": f"{r.ratio:.2f}x / {r.compress_mb_s:.0f} MB/s",
                        "note": f"decompress {r.decompress_mb_s:.0f} MB/s; "
                                f"zlib level 6, lz4 frame default, zstd level 3"})
    return out
