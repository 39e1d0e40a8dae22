"""Quantization figures: MiniLM int8 routes (speed, cosine, Linear bytes), weight-only int4, digits static int8.

All MiniLM rows come from one run: fp32 and each candidate are timed interleaved at batch 32, cosine is the
mean over 100 sentences of the cosine to the fp32 embeddings, Linear bytes are weights + biases (+ scales).
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import torch
from torch import nn

from jupyter_compress import (
    DynamicQuantConfig,
    StaticQuantConfig,
    WeightOnlyConfig,
    accuracy,
    compress,
    measure_latency,
)

from .timing import at_least, at_most, paired_speedup, rounds_repeats, speedup_note

BATCH, SENTENCES = 32, 100
PRESET = "MiniLM int8 preset (quantize.dynamic, auto)"


def _linear_bytes(model: nn.Module) -> int:
    return sum(m.weight.numel() * 4 + (m.bias.numel() * 4 if m.bias is not None else 0)
               for m in model.modules() if isinstance(m, nn.Linear))


def _report_linear_bytes(report) -> tuple[int, int]:
    rows = [r for r in report.rows if r.layer_type == "Linear"]
    return sum(r.bytes_before for r in rows), sum(r.bytes_after for r in rows)


def _torch_ao(model: nn.Module, per_channel: bool) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear: qconfig}, dtype=torch.qint8)


def _ort_defaults(model: nn.Module, feats: dict) -> nn.Module:
    """What a user gets from ONNX Runtime's own dynamic int8 (every MatMul, per channel) of the encoder."""
    from jupyter_compress.methods.quantize.ort import export_quantized

    new = copy.deepcopy(model)
    encoder = new[0].model.encoder
    calls = {}

    def record(module, args, kwargs, output):
        calls.setdefault("c", (args, dict(kwargs), output))

    handle = encoder.register_forward_hook(record, with_kwargs=True)
    with torch.no_grad():
        new(dict(feats))
    handle.remove()
    paths = {n: True for n, m in encoder.named_modules() if isinstance(m, nn.Linear)}
    module, _ = export_quantized(encoder, *calls["c"], paths, label="ort defaults", quantize_other_matmuls=True)
    new[0].model.encoder = module
    return new


def interleaved_speedups(baseline: nn.Module, candidates: dict[str, nn.Module], x, *, rounds: int,
                         repeats: int) -> dict[str, dict]:
    """Like ``timing.paired_speedup`` for several candidates at once: each round times the baseline and every
    candidate (order rotated per round), so one baseline timing serves all ratios of that round."""
    names = list(candidates)
    times: dict[str, list[float]] = {n: [] for n in ["__base__", *names]}
    models = {"__base__": baseline, **candidates}
    for i in range(rounds):
        order = ["__base__", *names]
        order = order[i % len(order):] + order[:i % len(order)]
        for n in order:
            times[n].append(measure_latency(models[n], x, repeats=repeats, warmup=1).median_ms)
    out = {}
    for n in names:
        ratios = [b / c for b, c in zip(times["__base__"], times[n])]
        q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        out[n] = {"speedup": median, "q1": q1, "q3": q3, "baseline_ms": statistics.median(times["__base__"]),
                  "candidate_ms": statistics.median(times[n])}
    return out


def minilm_rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.minilm import corpus, cosine, embed, features, load_minilm

    model = load_minilm()
    sentences = corpus(BATCH + 16 if quick else SENTENCES)
    feats = features(model, sentences[:BATCH])
    ref = embed(model, sentences, BATCH)
    timing = {"rounds": 5, "repeats": 1} if quick else {"rounds": 11, "repeats": 3}
    fp32_linear = _linear_bytes(model)
    out = []

    timed: dict[str, nn.Module] = {}
    notes: dict[str, str] = {}
    measured: dict[str, tuple[float, float | None]] = {}

    def row(name: str, candidate: nn.Module, linear_ratio: float | None, note: str = "", timed_row: bool = True):
        cos = float(cosine(ref, embed(candidate, sentences, BATCH)).mean())
        measured[name] = (cos, linear_ratio)
        text = f"cosine {cos:.4f}" + (f", Linear bytes {linear_ratio:.2f}x smaller" if linear_ratio else "")
        notes[name] = text + (f"; {note}" if note else "")
        if timed_row:
            timed[name] = candidate
        else:
            out.append({"name": name, "figure": "cosine to fp32", "baseline": "fp32 1.0000",
                        "value": f"{cos:.4f}", "note": notes[name]})

    start = time.perf_counter()
    preset, report = compress(model, DynamicQuantConfig(compare_routes=False), data=(dict(feats),))
    preset_before, preset_after = _report_linear_bytes(report)
    route = report.plan["steps"][0].get("backend", "auto")  # measured by the preset and pinned in its plan
    row(PRESET, preset, preset_before / preset_after,
        f"route {route}, compress {time.perf_counter() - start:.0f} s; encode() works: "
        f"{preset.encode(sentences[:2]).shape}")
    row("MiniLM torch.ao dynamic, per-tensor (plain)", _torch_ao(model, False), None)
    row("MiniLM torch.ao dynamic, per-channel (plain)", _torch_ao(model, True), None)
    row("MiniLM ONNX Runtime dynamic int8 (its defaults)", _ort_defaults(model, feats), None,
        "all MatMuls quantized, attention scores included")
    if not quick:  # the other routes the preset could take
        torch_route, rep = compress(model, DynamicQuantConfig(backend="torch"), data=(dict(feats),))
        row("MiniLM route torch (int8 Linears)", torch_route, None)
        errors = sorted((r.error for r in rep.rows if r.error is not None), reverse=True)
        mixed, rep = compress(model, DynamicQuantConfig(backend="torch", max_error=errors[6]), data=(dict(feats),))
        row("MiniLM route torch, 6 most sensitive Linears fp32", mixed, None, f"max_error={errors[6]:.3f}")
    for bits, group in ((4, 32), (4, 64), (4, 128)) if quick else ((8, 128), (4, 32), (4, 64), (4, 128)):
        small, rep = compress(model, WeightOnlyConfig(bits=bits, group_size=group))
        before, after = _report_linear_bytes(rep)
        on_kernel = sum(str(r.detail.get("kernel", "")).startswith("int4 kernel") for r in rep.compressed_rows)
        row(f"MiniLM weight-only int{bits}, group {group}", small, before / after,
            f"report only; {on_kernel}/{len(rep.compressed_rows)} Linears on the int4 kernel (speed: bench_int4)"
            if on_kernel else "report only; dequantized per call: no speedup", timed_row=False)
    speed = interleaved_speedups(model, timed, (dict(feats),), **timing)
    timed_rows = [{"name": name, "figure": "speedup vs PyTorch fp32, batch 32",
                   "baseline": f"fp32 {r['baseline_ms']:.0f} ms", "value": f"{r['speedup']:.2f}x",
                   **(at_least(r["speedup"], 1.5, ">= 1.5x") if name == PRESET else {}),
                   "note": f"{notes[name]}; {speedup_note(r)}"} for name, r in speed.items()]
    cos, linear_ratio = measured[PRESET]
    preset_rows = [
        {"name": PRESET, "figure": f"mean cosine to fp32, {len(sentences)} sentences", "baseline": "fp32 1.0000",
         "value": f"{cos:.4f}", **at_least(cos, 0.99, ">= 0.99"), "note": "same model as the speedup row"},
        {"name": PRESET, "figure": "Linear bytes ratio", "baseline": f"fp32 {preset_before / 2**20:.1f} MiB",
         "value": f"{linear_ratio:.2f}x", **at_least(linear_ratio, 3.5, ">= 3.5x"),
         "note": "weights + biases (+ scales) of the Linear layers"},
    ]
    assert fp32_linear > 0
    return timed_rows[:1] + preset_rows + timed_rows[1:] + out


def digits_rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.digits import digits_data, train_digits_cnn

    model, X_test, y_test = train_digits_cnn()
    X_cal = digits_data()[0][:512]
    small, report = compress(model, StaticQuantConfig(), data=list(X_cal.split(64)))
    acc0, acc1 = accuracy(model, X_test, y_test), accuracy(small, X_test, y_test)
    drop = 100 * (acc0 - acc1)
    out = [{"name": "Digits CNN static int8 (histogram, fused)", "figure": "accuracy drop (points)",
            "baseline": f"fp32 {100 * acc0:.2f}%", "value": f"{drop:+.2f}", **at_most(drop, 0.5, "<= 0.5 point"),
            "note": f"int8 {100 * acc1:.2f}%; bytes {report.model_bytes_before / report.model_bytes_after:.2f}x"
                    " smaller"}]
    for batch in (1, 64):
        r = paired_speedup(model, small, X_test[:batch], **rounds_repeats(quick))
        out.append({"name": f"Digits CNN static int8, batch {batch}", "figure": "latency speedup",
                    "baseline": f"fp32 {r['baseline_ms']:.3f} ms", "value": f"{r['speedup']:.2f}x",
                    "note": speedup_note(r)})
    return out


def rows(quick: bool) -> list[dict]:
    return minilm_rows(quick) + digits_rows(quick)


if __name__ == "__main__":
    import sys

    from .__main__ import format_table

    print(format_table(rows("--quick" in sys.argv)))
