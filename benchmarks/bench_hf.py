"""A Hugging Face model as users bring it: the pretrained BERT encoder inside MiniLM (a transformers
``BertModel``) with its own tokenizer, called as ``model(**tokenizer(sentences))``.

Rows: structured pruning (MLP neurons and attention heads) with the tokenizer's ``BatchEncoding`` as example
inputs (params, MACs and latency against the dense model, timed interleaved in the same run), and the int8
preset calibrated on a plain list of sentences (``data=sentences, tokenizer=tok``), with the cosine of the
mean-pooled embeddings to fp32 on held-out sentences.
"""

from __future__ import annotations

import torch
from torch import nn

from jupyter_compress import DynamicQuantConfig, Plan, compress, count_params

from .timing import paired_speedup, speedup_note

BATCH = 32


def _macs(model: nn.Module, inputs) -> int:
    """Multiply-accumulates of the Linear layers for one call on ``inputs`` (forward hooks; matmuls of
    attention scores are left out, identical before and after pruning heads' projections only in count)."""
    total = 0

    def hook(module, args, output):
        nonlocal total
        total += args[0].numel() // args[0].shape[-1] * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def _pooled(model: nn.Module, enc) -> torch.Tensor:
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.minilm import corpus, load_minilm

    encoder = load_minilm()
    hf, tok = encoder[0].auto_model.eval(), encoder.tokenizer
    held = corpus(64 if quick else 128, offset=600)
    calib = corpus(32 if quick else 100)
    enc = tok(held[:BATCH], padding=True, truncation=True, return_tensors="pt")
    held_enc = tok(held, padding=True, truncation=True, return_tensors="pt")
    ref = _pooled(hf, held_enc)
    timing = {"rounds": 3, "repeats": 2} if quick else {"rounds": 9, "repeats": 4}
    out = []
    for label, pattern in (("25% of MLP neurons", r"re:.*intermediate\.dense"),
                           ("25% of attention heads", r"re:.*attention\.self\.(query|key|value)")):
        plan = Plan.from_dict({"jupyter_compress_plan": 1, "steps": [
            {"method": "prune.structured", "amount": 0.25, "layers": [pattern]}]})
        small, _ = compress(hf, plan, example_inputs=enc, measure=False)
        r = paired_speedup(hf, small, enc, **timing)
        cos = torch.nn.functional.cosine_similarity(ref.double(), _pooled(small, held_enc).double(), dim=-1)
        out.append({
            "name": f"HF BertModel (MiniLM weights) structured {label}, BatchEncoding input, batch {BATCH}",
            "figure": "latency speedup", "baseline": f"dense {r['baseline_ms']:.0f} ms", "value": f"{r['speedup']:.2f}x",
            "note": f"params {count_params(hf) / count_params(small):.3f}x fewer, Linear MACs "
                    f"{_macs(hf, enc) / _macs(small, enc):.3f}x fewer; cosine {float(cos.mean()):.4f} without "
                    f"fine-tuning; {speedup_note(r)}"})
    int8, report = compress(hf, DynamicQuantConfig(), example_inputs=enc, data=calib, tokenizer=tok, measure=False)
    cos = torch.nn.functional.cosine_similarity(ref.double(), _pooled(int8, held_enc).double(), dim=-1)
    r = paired_speedup(hf, int8, enc, **timing)
    route = "ONNX Runtime" if any("ONNX Runtime" in r_.new_type for r_ in report.compressed_rows) else "torch"
    out.append({
        "name": f"HF BertModel int8 preset, calibrated on {len(calib)} plain sentences (tokenizer=)",
        "figure": "cosine to fp32 (mean-pooled)", "baseline": "fp32", "value": f"{float(cos.mean()):.4f}",
        "note": f"min {float(cos.min()):.4f} over {len(held)} held-out sentences; route {route}; "
                f"{r['speedup']:.2f}x faster at batch {BATCH} ({speedup_note(r)})"})
    return out
