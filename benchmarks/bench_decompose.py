"""Decomposition figures: re-ranking from the cache, randomized vs exact SVD, Tucker-2 on ResNet-18,
Tucker-2 / CP on the digits CNN with a short fine-tune. All ratios measured in this run."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.apply import Context
from jupyter_compress.core.metrics import relative_error, single_thread
from jupyter_compress.core.registry import get_method
from jupyter_compress.methods.decompose import clear_cache, linear_svd, randomized_linear_svd

from .timing import at_least, at_most, paired_speedup, speedup_note


def _median_s(fn, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rerank_rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.minilm import load_minilm

    model = load_minilm()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    apply = get_method("svd").apply
    ctx = Context(seed=0, generator=torch.Generator())
    n = 3 if quick else 7

    def build(rank):  # as the core calls a method (core.steps): no autograd, one thread
        with torch.no_grad(), single_thread():
            return apply(model, names, jc.SVDConfig(rank=rank), ctx)

    def cold():
        clear_cache()
        build(0.25)

    # interleaved: each round times one cold build, then (analyses cached again by it, every later rank a
    # truncation) five warm builds; the figure is the median of the rounds' ratios, so a burst of other work
    # on the machine slows both sides of a round alike instead of one side of the whole measurement
    ratios, colds, warms = [], [], []
    build(0.5)
    for _ in range(n):
        start = time.perf_counter()
        cold()
        colds.append(time.perf_counter() - start)
        build(0.5)
        warm = _median_s(lambda: build(0.25), 5)
        warms.append(warm)
        ratios.append(colds[-1] / warm)
    cold_s, warm_s, rerank = statistics.median(colds), statistics.median(warms), statistics.median(ratios)
    analyses = jc.spectrum(model, layers=names)

    def preview():  # what a slider shows: rank, parameters and error per layer for a new rule
        for a in analyses.values():
            r = a.rank_for(0.25)
            a.params(r), a.error(r)

    preview_s = _median_s(preview, 5 * n)
    step = jc.Step(jc.SVDConfig(rank=0.25), jc.Selector(types=("Linear",)))

    def verbs():
        jc.compress_(model, step)
        jc.revert_(model)

    verbs_warm = _median_s(verbs, n)
    verbs_cold = _median_s(lambda: (clear_cache(), verbs()), n)
    label = f"MiniLM, re-rank its {len(names)} Linear layers"
    return [
        {"name": label, "figure": "speedup, build replacements from cache", "baseline": f"recompute {cold_s:.3f} s",
         "value": f"{rerank:.0f}x", **at_least(rerank, 200, ">= 200x"),
         "note": f"{warm_s * 1e3:.1f} ms; svd apply incl. report rows, one thread as the core runs it; median of "
                 f"{n} interleaved rounds' ratios (range {min(ratios):.0f}-{max(ratios):.0f}x)"},
        {"name": label, "figure": "speedup, preview from cached spectra", "baseline": f"recompute {cold_s:.3f} s",
         "value": f"{cold_s / preview_s:.0f}x", "note": f"{preview_s * 1e3:.2f} ms for rank, params, error"},
        {"name": label, "figure": "speedup, compress_ + revert_", "baseline": f"cold {verbs_cold:.3f} s",
         "value": f"{verbs_cold / verbs_warm:.0f}x",
         "note": f"{verbs_warm * 1e3:.0f} ms; includes the core's whole-model counts and undo"},
    ]


def _randomized_rows(quick: bool) -> list[dict]:
    # a 768 x 3072 weight with a power-law spectrum (s_k ~ k^-0.7), as trained layers tend to have
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(3072, 768, generator=g))
    v, _ = torch.linalg.qr(torch.randn(768, 768, generator=g))
    s = torch.arange(1, 769, dtype=torch.float32) ** -0.7
    w = ((u * s) @ v.T).T.contiguous()
    out = []
    for rank in (32, 76):
        n = 3 if quick else 7
        exact_s = _median_s(lambda: linear_svd(w), n)
        rand_s = _median_s(lambda r=rank: randomized_linear_svd(w, r, seed=0), n)
        ue, se, ve = linear_svd(w)
        ur, sr, vr = randomized_linear_svd(w, rank, seed=0)
        err_exact = relative_error(w, (ue[:, :rank] * se[:rank]) @ ve[:rank])
        err_rand = relative_error(w, (ur * sr) @ vr)
        out.append({"name": f"randomized vs exact SVD, 768x3072 at rank {rank}", "figure": "speed ratio",
                    "baseline": f"exact {exact_s:.3f} s", "value": f"{exact_s / rand_s:.1f}x",
                    "note": f"error ratio {err_rand / err_exact:.3f} (rel. error {err_rand:.4f} vs {err_exact:.4f})"})
    return out


def _resnet_rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.vision import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]
    small, report = jc.compress(model, jc.Step(jc.TuckerConfig(rank=0.5), jc.Selector(layers=tuple(names))))
    rows = report.compressed_rows
    params = sum(r.params_after for r in rows) / sum(r.params_before for r in rows)
    errors = [r.error for r in rows]
    size = 64 if quick else 112
    r = paired_speedup(model, small, torch.randn(1, 3, size, size),
                       **({"rounds": 5, "repeats": 3} if quick else {"rounds": 15, "repeats": 5}))
    return [{"name": f"ResNet-18 (random init), Tucker-2 on its {len(rows)} 3x3 convs", "figure": "latency speedup",
             "baseline": f"dense {r['baseline_ms']:.1f} ms at 1x3x{size}x{size}", "value": f"{r['speedup']:.2f}x",
             "note": f"conv params kept {params:.2f}; rel. error mean {statistics.mean(errors):.3f}, "
                     f"max {max(errors):.3f}; {speedup_note(r)}"}]


def _digits_rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.digits import digits_data, evaluate, fine_tune, train_digits_cnn

    model, X_test, y_test = train_digits_cnn()
    X_train, _, y_train, _ = digits_data(0)
    score = evaluate(X_test, y_test)
    base = score(model)["accuracy"]
    conv_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    out = []
    for label, config in (("Tucker-2", jc.TuckerConfig(rank=0.5)), ("CP", jc.CPConfig(rank=0.5))):
        small, report = jc.compress(model, jc.Step(config, jc.Selector(types=("Conv2d",))))
        kept = conv_params - sum(r.params_before - r.params_after for r in report.rows)
        before_ft = score(small)["accuracy"]
        fine_tune(small, X_train, y_train, epochs=2 if quick else 3, lr=1e-3)
        after = score(small)["accuracy"]
        drop = 100 * (base - after)
        out.append({"name": f"digits CNN, {label} at 0.5 of conv params + fine-tune", "figure": "accuracy drop (points)",
                    "baseline": f"{base:.4f}", "value": f"{drop:+.2f}", **at_most(drop, 1.0, "<= 1 point"),
                    "note": f"{before_ft:.4f} before fine-tune, {after:.4f} after; conv weights kept "
                            f"{kept / conv_params:.2f} (conv1 has 1 input channel: skipped)"})
    return out


def rows(quick: bool) -> list[dict]:
    return _rerank_rows(quick) + _randomized_rows(quick) + _resnet_rows(quick) + _digits_rows(quick)
