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
# ## Deep Compression end to end: smaller on disk, stage by stage
# Han et al. (Deep Compression, 2016) make LeNet-300-100 40x smaller on disk in three stages: prune (and
# retrain), share weights (k-means per layer, a few bits per weight), code (Huffman). Here the same on
# digits: `prune_gradually` to 95% with a masked fine-tune between steps (the zeros stay zeros while the
# rest retrains), `quantize.cluster` at 4 bits (16 shared values per layer, index 0 kept for the zeros),
# and `save(..., compact=True)`: each tensor dense, as a bitmap or as relative indices (whichever is
# smallest), indices at their bit width, then zstd in place of Huffman. The bytes are the artifact files'
# sizes, measured: the dense file of the original, the pruned model stored compact without a codec, with
# weight sharing, and with zstd.

# %%
import tempfile
from pathlib import Path

from torch import nn


class LeNet300(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


def masked_fine_tune(m, epochs=10, lr=1e-3):
    masks = [(layer.weight, layer.weight.detach() != 0) for layer in m.modules() if isinstance(layer, nn.Linear)]
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    m.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(X_train)).split(64):
            loss = nn.functional.cross_entropy(m(X_train[batch]), y_train[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for w, keep in masks:
                    w.masked_fill_(~keep, 0)  # +0.0 (w * 0 would leave -0.0, which is stored as a value)
    m.eval()


torch.manual_seed(0)
lenet = fine_tune(LeNet300(), X_train, y_train, epochs=30, lr=2e-3)
pruned, _ = jc.prune_gradually(lenet, jc.PruneConfig(amount=0.95, scope="global"), steps=5,
                               fine_tune=lambda m, step: masked_fine_tune(m))
shared, _ = jc.compress(pruned, jc.ClusterConfig(bits=4), measure=False)
plan = jc.Plan.of(jc.PruneConfig(amount=0.95, scope="global"), jc.ClusterConfig(bits=4))
folder = Path(tempfile.mkdtemp())
stages = {
    "fp32 dense": jc.save(lenet, jc.Plan.of(jc.PruneConfig(amount=0.0)), folder / "dense.safetensors"),
    "pruned (sparse forms)": jc.save(pruned, plan, folder / "pruned.safetensors", compact=True, codec="none"),
    "+ weight sharing": jc.save(shared, plan, folder / "shared.safetensors", compact=True, codec="none"),
    "+ coding (zstd)": jc.save(shared, plan, folder / "compact.safetensors", compact=True),
}
sizes = {k: p.stat().st_size for k, p in stages.items()}
loaded = jc.load(LeNet300, stages["+ coding (zstd)"])
print("accuracy: dense", evaluate_fn(lenet)["accuracy"], "| pruned", evaluate_fn(pruned)["accuracy"],
      "| shared", evaluate_fn(shared)["accuracy"], "| loaded", evaluate_fn(loaded)["accuracy"])
print("loaded state_dict bit-identical:", jc.state_dict_hash(loaded) == jc.state_dict_hash(shared))
for k, v in sizes.items():
    print(f"{k:>22}: {v:>8,} B  ({sizes['fp32 dense'] / v:5.1f}x smaller than dense)")

# %% [markdown]
# The stacked bar splits the dense file into what each stage removed and what is left (as the paper's
# figure does with its compression ratios): pruning removes most of the bytes, sharing most of the rest,
# coding a last slice. `python -m benchmarks --only compact` runs the longer recipe (3 seeds, more
# fine-tuning, biases shared too): LeNet-300-100 and LeNet-5 both end more than 35x smaller on disk.

# %%
from bokeh.io import output_notebook, show
from bokeh.plotting import figure

output_notebook(hide_banner=True)
b = list(sizes.values())
parts = {"removed by pruning": [b[0] - b[1]], "removed by sharing": [b[1] - b[2]],
         "removed by coding": [b[2] - b[3]], "left on disk": [b[3]]}
bar = figure(x_range=["LeNet-300-100 (digits)"], height=360, width=480, tools="",
             title="Deep Compression: bytes of the dense artifact, by stage")
bar.vbar_stack(list(parts), x="model", width=0.5, source={"model": ["LeNet-300-100 (digits)"], **parts},
               color=["#1f77b4", "#ff7f0e", "#2ca02c", "#444444"], legend_label=list(parts))
bar.yaxis.axis_label = "bytes"
show(bar)

# %% [markdown]
# ## Exercises
# 1. Raise the structured amount to 0.7: how much fine-tuning brings accuracy back within one point?
# 2. Prune ResNet-18 with `round_to=8` and compare its latency with `round_to=1`. Why might
#    multiples of 8 matter more on a GPU than here?
# 3. With `scope="global"` the per-layer fractions differ: which layers lose most, and why?
# 4. Why does random pruning fail so much earlier than magnitude pruning?
