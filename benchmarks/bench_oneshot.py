"""One-shot methods of the transformer era (issue 22), each against its plain counterpart, on MiniLM.

One process, one model, the same calibration sentences (100 from the offline corpus) and held-out sentences
(128 others) for every row. Fidelity: mean cosine of mean-pooled embeddings to fp32's on the held-out set.

- GPTQ int4 and AWQ int4 (group 128) against round-to-nearest int4 (``WeightOnlyConfig``) at the same group;
- Wanda and SparseGPT at 50% unstructured and at 2:4 against magnitude pruning (``PruneConfig``, ``NMConfig``);
- SmoothQuant + dynamic int8 against the same int8 route alone, on the torch and ONNX Runtime routes (the
  OpenVINO route's NNCF preset smooths by itself), speed measured interleaved at batch 32 (equal speed: the
  smoothed model runs the same kernels; its LayerNorms carry the scales).

Targets (ratios / figures of this run): GPTQ >= 0.985 and > round-to-nearest; AWQ > round-to-nearest; Wanda
and SparseGPT > magnitude at 50% and at 2:4; SmoothQuant + int8 > int8 at >= 0.95x its speed.
"""

from __future__ import annotations

import time

import torch

from jupyter_compress import (
    AWQConfig,
    DynamicQuantConfig,
    GPTQConfig,
    NMConfig,
    Plan,
    PruneConfig,
    SmoothQuantConfig,
    SparseGPTConfig,
    WandaConfig,
    WeightOnlyConfig,
    compress,
)

from .bench_quantize import interleaved_speedups
from .timing import REPORT, all_of, at_least, skipped, speedup_note

BATCH = 32


def _mean(cos: torch.Tensor) -> float:
    return float(cos.mean())


def rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.minilm import corpus, cosine, embed, features, load_minilm

    model = load_minilm()
    calibration = corpus(32 if quick else 100)
    held = corpus(64 if quick else 128, offset=600)
    reference = embed(model, held)
    example = features(model, calibration[:BATCH])
    out: list[dict] = []
    built: dict[str, tuple[float, float, torch.nn.Module]] = {}

    def run(label: str, *configs) -> float:
        start = time.perf_counter()
        new, _ = compress(model, Plan.of(*configs), example_inputs=example, data=calibration, measure=False)
        took = time.perf_counter() - start
        value = _mean(cosine(reference, embed(new, held)))
        built[label] = (value, took, new)
        return value

    def row(name: str, label: str, base_label: str, *extra: dict) -> dict:
        value, took, _ = built[label]
        base, _, _ = built[base_label]
        checks = [at_least(value - base, 1e-9, f"> {base_label} ({base:.4f})"), *extra]
        return {"name": f"MiniLM {name}", "figure": "mean cosine to fp32 (mean-pooled, held-out)",
                "baseline": f"{base_label} {base:.4f}", "value": f"{value:.4f}", **all_of(*checks),
                "note": f"{len(calibration)} calibration sentences, {len(held)} held out; compress {took:.0f} s"}

    run("round-to-nearest int4 g128", WeightOnlyConfig(bits=4, group_size=128))
    gptq = run("GPTQ int4 g128", GPTQConfig(bits=4, group_size=128))
    run("AWQ int4 g128", AWQConfig(bits=4, group_size=128))
    out.append(row("GPTQ int4 g128", "GPTQ int4 g128", "round-to-nearest int4 g128",
                   at_least(gptq, 0.985, ">= 0.985")))
    out.append(row("AWQ int4 g128", "AWQ int4 g128", "round-to-nearest int4 g128"))

    run("magnitude 50%", PruneConfig(amount=0.5))
    run("magnitude 2:4", NMConfig(n=2, m=4))
    run("Wanda 50%", WandaConfig(amount=0.5))
    run("Wanda 2:4", WandaConfig(n=2, m=4))
    run("SparseGPT 50%", SparseGPTConfig(amount=0.5))
    run("SparseGPT 2:4", SparseGPTConfig(n=2, m=4))
    for method in ("Wanda", "SparseGPT"):
        out.append(row(f"{method} 50% unstructured", f"{method} 50%", "magnitude 50%"))
        out.append(row(f"{method} 2:4", f"{method} 2:4", "magnitude 2:4"))

    x = features(model, held[:BATCH])
    for backend in ("torch", "onnxruntime"):
        plain, smooth = f"int8 ({backend})", f"SmoothQuant + int8 ({backend})"
        try:
            run(plain, DynamicQuantConfig(backend=backend))
            run(smooth, SmoothQuantConfig(), DynamicQuantConfig(backend=backend))
        except Exception as exc:  # a route missing here says so; the other rows still stand
            out.append({**skipped(f"MiniLM {smooth}", "mean cosine to fp32", f"error: {type(exc).__name__}"),
                        "note": str(exc).splitlines()[0][:200]})
            continue
        if quick:
            out.append(row(smooth, smooth, plain))
            continue
        speed = interleaved_speedups(built[plain][2], {smooth: built[smooth][2]}, (x,), rounds=11, repeats=3)[smooth]
        r = row(smooth, smooth, plain, at_least(speed["speedup"], 0.95, ">= 0.95x its speed"))
        r["note"] += f"; speed vs int8 alone {speed['speedup']:.2f}x at batch {BATCH} ({speedup_note(speed)})"
        out.append(r)
    for label, (value, took, _) in built.items():
        out.append({"name": f"MiniLM {label}", "figure": "mean cosine to fp32 (mean-pooled, held-out)",
                    "baseline": "fp32 1.0000", "value": f"{value:.4f}", **REPORT, "note": f"compress {took:.0f} s"})
    return out
