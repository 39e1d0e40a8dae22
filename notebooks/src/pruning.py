# %% [markdown]
# # Pruning: which kind makes a model smaller, which makes it faster, and why
#
# Pruning removes weights the network can do without. Three kinds, with very different payoffs:
#
# - **Unstructured**: zero individual weights (the smallest, or by a gradient-based score). The
#   tensors stay dense, so the model takes the same memory and a dense kernel multiplies the zeros too:
#   no speedup on a CPU. It pays off only in a sparse storage format, or on sparse kernels.
# - **Structured**: remove whole output channels, neurons or attention heads. The layers really get
#   narrower, so parameters, multiply-adds and (usually) latency fall. Coupled layers must shrink
#   together (a residual addition, BatchNorm, the next layer's inputs): a dependency graph finds them.
# - **N:M semi-structured**: keep N of every M consecutive weights (2:4). Sparse tensor cores of
#   recent NVIDIA GPUs run that at up to twice the speed; a CPU does not.
#
# Every number below is measured here, on this machine, when the notebook runs.

# %%
import torch

import jupyter_compress as jc
from jupyter_compress.core.metrics_speed import paired_latency
from jupyter_compress.examples.digits import digits_data, evaluate, fine_tune, train_digits_cnn
from jupyter_compress.examples.vision import resnet18

torch.manual_seed(0)
model, X_test, y_test = train_digits_cnn(epochs=10)
X_train, _, y_train, _ = digits_data(0)
evaluate_fn = evaluate(X_test, y_test)
print(f"digits CNN: {jc.count_params(model):,} parameters, accuracy {evaluate_fn(model)['accuracy']:.3f}")

# %% [markdown]
# ## Unstructured: smaller only in a sparse encoding
# A wide MLP block (768 -> 3072 -> 768, the shape of a transformer's feed-forward layer) pruned to 50%
# and 90%. The report says what a sparse encoding would take; the latency ratio shows the rest.

# %%
mlp = torch.nn.Sequential(torch.nn.Linear(768, 3072), torch.nn.GELU(), torch.nn.Linear(3072, 768)).eval()
x = torch.randn(8, 768)
for amount in (0.5, 0.9):
    pruned, report = jc.compress(mlp, jc.PruneConfig(amount=amount), measure=False)
    dense_ms, pruned_ms = paired_latency(mlp, pruned, x)
    sparse = sum(r.sparse_bytes for r in report.compressed_rows)
    print(f"{amount:.0%} zeros: memory {report.model_bytes_after / report.model_bytes_before:.2f}x of dense, "
          f"sparse encoding {report.model_bytes_before / sparse:.2f}x smaller, "
          f"speedup {dense_ms / pruned_ms:.2f}x")

# %% [markdown]
# ## Structured: fewer channels, really faster
# ResNet-18 (random weights: latency does not depend on their values) with half the channels of each
# group removed. Torch-Pruning's dependency graph keeps residual additions and BatchNorm consistent;
# the first convolution and the classifier are kept by default.

# %%
net = resnet18(num_classes=10)
image = torch.randn(1, 3, 112, 112)
narrow, report = jc.compress(net, jc.StructuredPruneConfig(amount=0.5), example_inputs=image, measure=False)
dense_ms, narrow_ms = paired_latency(net, narrow, image)
print(f"parameters {report.model_params_before:,} -> {report.model_params_after:,} "
      f"({report.model_params_before / report.model_params_after:.2f}x fewer); "
      f"latency {dense_ms:.1f} -> {narrow_ms:.1f} ms ({dense_ms / narrow_ms:.2f}x faster)")
print("skipped:", [(r.name, r.skipped[:60]) for r in report.skipped_rows][:3])

# %% [markdown]
# Before you apply it, `preview` says what a plan would remove (groups, coupled layers, counts),
# changing nothing:

# %%
peek = jc.preview(model, jc.StructuredPruneConfig(amount=0.5, keep_first=False), example_inputs=X_test[:8])
for row in peek.compressed_rows:
    print(f"{row.name:>6}: {row.params_before:>5,} -> {row.params_after:>5,} parameters  {row.detail}")
peek

# %% [markdown]
# ## Accuracy: one shot, fine-tuning, and gradual schedules
# Structured pruning removes capacity the network was using; a short fine-tune recovers most of it.
# Pruning in steps with fine-tuning in between (a cubic schedule removes most early) recovers more.

# %%
config = jc.StructuredPruneConfig(amount=0.5, keep_first=False)
one_shot, _ = jc.compress(model, config, example_inputs=X_test[:8])
print(f"one shot:            accuracy {evaluate_fn(one_shot)['accuracy']:.3f}")
fine_tune(one_shot, X_train, y_train, epochs=3, lr=3e-3)
print(f"one shot + 3 epochs: accuracy {evaluate_fn(one_shot)['accuracy']:.3f}")
gradual, report = jc.prune_gradually(model, config, steps=3, schedule="cubic", example_inputs=X_test[:8],
                                     fine_tune=lambda m, step: fine_tune(m, X_train, y_train, epochs=1, lr=3e-3),
                                     eval=evaluate_fn)
print(f"gradual (3 cubic steps, 1 epoch each): accuracy {evaluate_fn(gradual)['accuracy']:.3f}; "
      f"steps {[round(h['cumulative_amount'], 3) for h in report.history]}")

# %% [markdown]
# Unstructured pruning keeps accuracy much longer, because it can take weights from everywhere: the
# magnitude criterion, a gradient-based (Taylor) score, and random choice as a baseline:

# %%
for criterion in ("magnitude", "taylor", "random"):
    accs = []
    for amount in (0.5, 0.8, 0.9):
        pruned, _ = jc.compress(model, jc.PruneConfig(amount=amount, criterion=criterion, scope="global"),
                                data=(X_train, y_train), measure=False)
        accs.append(evaluate_fn(pruned)["accuracy"])
    print(f"{criterion:>9}: accuracy at 50/80/90% zeros: " + ", ".join(f"{a:.3f}" for a in accs))

# %% [markdown]
# Read these numbers rather than trusting a rule of thumb: on this well-converged model the one-shot
# Taylor score (|weight x gradient| on a few batches) does worse than plain magnitude, because the
# gradients of a converged network are small and noisy. Random pruning is the floor any criterion must beat.

# %% [markdown]
# ## N:M: exact structure, speed only on sparse tensor cores

# %%
sparse24, report = jc.compress(model, jc.NMConfig(n=2, m=4))
w = sparse24.conv2.weight.detach().flatten(1)
groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
print("every group of 4 keeps at most 2:", bool((groups <= 2).all()), "| accuracy", evaluate_fn(sparse24)["accuracy"])
print([n for n in report.notes if "tensor cores" in n or "CPU" in n][:1])

# %% [markdown]
# ## Exercises
# 1. Raise the structured amount to 0.7: how much fine-tuning brings accuracy back within one point?
# 2. Prune ResNet-18 with `round_to=8` and compare its latency with `round_to=1`. Why might
#    multiples of 8 matter more on a GPU than here?
# 3. With `scope="global"` the per-layer fractions differ: which layers lose most, and why?
# 4. Why does random pruning fail so much earlier than magnitude pruning?
