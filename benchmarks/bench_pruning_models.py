"""Structured pruning on real models: digits CNN (+ short fine-tune), MobileNetV2, MiniLM MLP neurons."""

from __future__ import annotations

import statistics

import torch

from jupyter_compress import Plan, StructuredPruneConfig, accuracy, compress, count_params
from jupyter_compress.examples.digits import digits_data, fine_tune, train_digits_cnn
from jupyter_compress.examples.vision import mobilenet_v2

from .timing import at_most, paired_speedup, speedup_note


def digits_rows(quick: bool) -> list[dict]:
    seeds = (0,) if quick else (0, 1, 2)
    drops, params = [], None
    for seed in seeds:
        model, X_test, y_test = train_digits_cnn(seed=seed)
        X_train, _, y_train, _ = digits_data(seed)
        base = accuracy(model, X_test, y_test)
        small, report = compress(model, StructuredPruneConfig(amount=0.5, keep_first=False),
                                 example_inputs=X_test[:8])
        fine_tune(small, X_train, y_train, epochs=3, lr=3e-3, seed=seed)
        drops.append(100 * (base - accuracy(small, X_test, y_test)))
        params = report.model_params_before / report.model_params_after
    mean = statistics.mean(drops)
    return [{"name": "digits CNN structured 50% + 3-epoch fine-tune", "figure": "accuracy drop (points)",
             "baseline": "unpruned, same seed", "value": f"{mean:+.2f}",
             **at_most(mean, 1.0, f"<= 1 point (mean of {len(seeds)} seeds)"),
             "note": f"seeds {seeds}: {', '.join(f'{d:+.2f}' for d in drops)}; params {params:.2f}x fewer"}]


def mobilenet_rows(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    dense = mobilenet_v2().eval()
    x = torch.randn(1, 3, 112, 112)
    pruned, report = compress(dense, StructuredPruneConfig(amount=0.5, round_to=8), example_inputs=x)
    r = paired_speedup(dense, pruned, x, rounds=5 if quick else 11, repeats=3 if quick else 5)
    return [{"name": "MobileNetV2 structured 50% (round_to 8), batch 1, 112px", "figure": "latency speedup",
             "baseline": f"dense {r['baseline_ms']:.1f} ms", "value": f"{r['speedup']:.2f}x",
             "note": f"params {count_params(dense) / count_params(pruned):.2f}x fewer; {len(report.skipped_rows)} "
                     f"groups skipped; {speedup_note(r)}"}]


def minilm_rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.minilm import corpus, cosine, embed, features, load_minilm

    model = load_minilm()
    sentences = corpus(32 if quick else 100)
    plan = Plan.from_dict({"jupyter_compress_plan": 1, "steps": [
        {"method": "prune.structured", "amount": 0.25, "layers": [r"re:.*intermediate\.dense"]}]})
    pruned, _ = compress(model, plan, example_inputs=(features(model, sentences[:8]),))
    cos = cosine(embed(model, sentences), embed(pruned, sentences))
    batch = (features(model, sentences[:32]),)
    r = paired_speedup(model, pruned, batch, rounds=3 if quick else 9, repeats=2 if quick else 4)
    return [{"name": "MiniLM 25% of MLP neurons removed, no fine-tune", "figure": "cosine to original",
             "baseline": "fp32 embeddings", "value": f"{float(cos.mean()):.4f}",
             "note": f"min {float(cos.min()):.4f} over {len(sentences)} sentences; params "
                     f"{count_params(model) / count_params(pruned):.3f}x fewer"},
            {"name": "MiniLM 25% of MLP neurons removed, batch 32", "figure": "latency speedup",
             "baseline": f"dense {r['baseline_ms']:.0f} ms", "value": f"{r['speedup']:.2f}x",
             "note": speedup_note(r)}]


def rows(quick: bool) -> list[dict]:
    return digits_rows(quick) + mobilenet_rows(quick) + minilm_rows(quick)
