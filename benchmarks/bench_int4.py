"""Fast int4 on CPU (issue 22, item 6): weight-only int4 on PyTorch's packed int4 matmul
(``aten._weight_int4pack_mm_for_cpu``) against fp32 ``nn.Linear`` and against the same int4 weights
dequantized per call, on Linear(4096, 4096) at batch 1 and 8 and on MiniLM at batch 1.

Each speedup is a median of per-round ratios, baseline and candidate interleaved in the same run
(``timing.paired_speedup`` / ``bench_quantize.interleaved_speedups``). The dequantized path is timed in its own
interleaved comparison with fewer repeats (it is ~15x slower than fp32 here). The error rows compare the kernel's
outputs (bf16 activations, f32 accumulation, bf16 output) with the float32 dequantized path on the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from jupyter_compress import WeightOnlyConfig, compress
from jupyter_compress.methods.quantize.qlinear import INT4_KERNEL, WeightOnlyLinear

from .bench_quantize import interleaved_speedups
from .timing import REPORT, at_least, paired_speedup, rounds_repeats, speedup_note

SIZE, GROUP = 4096, 128
TARGET = 1.5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _int4(model: nn.Module, kernel: str) -> tuple[nn.Module, object]:
    return compress(model, WeightOnlyConfig(bits=4, group_size=GROUP, kernel=kernel), measure=False)


def _kernel_share(report) -> str:
    rows = report.compressed_rows
    fast = sum(str(r.detail.get("kernel", "")).startswith("int4 kernel") for r in rows)
    return f"{fast}/{len(rows)} Linears on the int4 kernel"


def linear_rows(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(SIZE, SIZE))  # random weights: latency does not depend on the values
    fast, fast_report = _int4(dense, "auto")
    slow, _ = _int4(dense, "dequantize")
    layer: WeightOnlyLinear = fast[0]
    label = layer.kernel_label()
    fp32_bytes, int4_bytes = fast_report.model_bytes_before, fast_report.model_bytes_after
    out = []
    slow_timing = {"rounds": 5, "repeats": 2} if quick else {"rounds": 11, "repeats": 3}
    for batch in (1, 8):
        x = torch.randn(batch, SIZE)
        with torch.no_grad():
            y_fast, y_slow, y_fp32 = fast(x), slow(x), dense(x)
        err, int4_err = _rel(y_fast, y_slow), _rel(y_slow, y_fp32)
        r = paired_speedup(dense, fast, x, **rounds_repeats(quick))
        d = paired_speedup(dense, slow, x, **slow_timing)
        name = f"fast int4 Linear({SIZE}, {SIZE}), group {GROUP}, batch {batch}"
        out.append({"name": name, "figure": "speedup vs fp32 nn.Linear", "baseline": f"fp32 {r['baseline_ms']:.3f} ms",
                    "value": f"{r['speedup']:.2f}x",
                    **(at_least(r["speedup"], TARGET, f">= {TARGET}x") if batch == 1 else REPORT),
                    "note": f"{label}, {r['candidate_ms']:.3f} ms; {speedup_note(r)}; "
                            f"bytes {fp32_bytes / int4_bytes:.2f}x smaller"})
        out.append({"name": f"int4 dequantized per call Linear({SIZE}, {SIZE}), batch {batch}",
                    "figure": "speedup vs fp32 nn.Linear", "baseline": f"fp32 {d['baseline_ms']:.3f} ms",
                    "value": f"{d['speedup']:.2f}x", **REPORT,
                    "note": f"kernel='dequantize', {d['candidate_ms']:.1f} ms; {speedup_note(d)}; the same weights"})
        out.append({"name": f"int4 kernel vs dequantized path, Linear({SIZE}, {SIZE}), batch {batch}",
                    "figure": "relative output error", "baseline": "fp32 dequantized", "value": f"{err:.1e}",
                    **REPORT, "note": f"bf16 activations / output; int4's own error vs fp32 {int4_err:.1e}"})
    return out


def minilm_rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.minilm import corpus, cosine, embed, features, load_minilm

    model = load_minilm()
    sentences = corpus(16 if quick else 64)
    feats = features(model, sentences[:1])
    ref = embed(model, sentences, 16)
    fast, fast_report = _int4(model, "auto")
    slow, _ = _int4(model, "dequantize")
    cos_fast = float(cosine(ref, embed(fast, sentences, 16)).mean())
    cos_slow = float(cosine(ref, embed(slow, sentences, 16)).mean())
    # per-layer error of the kernel against the dequantized path, on each Linear's real inputs
    errors = []
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, output) -> None:  # returns None: the output is left as it is
            captured.setdefault(name, args[0].detach())
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in fast.named_modules() if isinstance(m, WeightOnlyLinear)]
    with torch.no_grad():
        fast(dict(feats))
    for h in hooks:
        h.remove()
    slow_layers = dict(slow.named_modules())
    with torch.no_grad():
        for name, x in captured.items():
            errors.append(_rel(fast.get_submodule(name)(x), slow_layers[name](x)))
    timing = {"rounds": 7, "repeats": 3} if quick else {"rounds": 21, "repeats": 10}
    speed = interleaved_speedups(model, {"kernel": fast, "dequantize": slow}, (dict(feats),), **timing)
    tokens = int(feats["input_ids"].shape[1])
    k, d = speed["kernel"], speed["dequantize"]
    return [
        {"name": f"MiniLM int4 (kernel auto), group {GROUP}, batch 1", "figure": "speedup vs PyTorch fp32",
         "baseline": f"fp32 {k['baseline_ms']:.2f} ms", "value": f"{k['speedup']:.2f}x", **REPORT,
         "note": f"{_kernel_share(fast_report)}; {tokens} tokens; cosine {cos_fast:.4f}; {speedup_note(k)}"},
        {"name": f"MiniLM int4 dequantized per call, group {GROUP}, batch 1", "figure": "speedup vs PyTorch fp32",
         "baseline": f"fp32 {d['baseline_ms']:.2f} ms", "value": f"{d['speedup']:.2f}x", **REPORT,
         "note": f"cosine {cos_slow:.4f}; {speedup_note(d)}"},
        {"name": "MiniLM int4 kernel vs dequantized path, per Linear", "figure": "relative output error (max)",
         "baseline": "fp32 dequantized", "value": f"{max(errors):.1e}", **REPORT,
         "note": f"median {sorted(errors)[len(errors) // 2]:.1e} over {len(errors)} Linears ({INT4_KERNEL}: bf16 "
                 f"activations and output); mean cosine to fp32 {cos_fast:.4f} vs {cos_slow:.4f} dequantized"},
    ]


def rows(quick: bool) -> list[dict]:
    return linear_rows(quick) + minilm_rows(quick)


if __name__ == "__main__":
    import sys

    from .__main__ import format_table

    print(format_table(rows("--quick" in sys.argv)))
