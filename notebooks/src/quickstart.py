# %% [markdown]
# # jupyter_compress quickstart
#
# We train a small convolutional network on scikit-learn's bundled handwritten digits (8x8 images,
# no download), then compress a copy of it with one line: `%compress`. The original model is left
# untouched; the compressed copy gets its own name, and a report shows what changed in each layer
# and how accuracy moved. Everything runs on a CPU in a few seconds.

# %%
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from jupyter_compress import accuracy, count_params, state_dict_hash

torch.manual_seed(0)
digits = load_digits()
X = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
y = torch.tensor(digits.target)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
print(f"{len(X_train)} training images, {len(X_test)} test images")

# %% [markdown]
# Two convolutions with batch norm, then a linear head; 20 epochs of Adam on minibatches.

# %%
class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.head(x.flatten(1))


model = DigitsCNN()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for epoch in range(20):
    model.train()
    for batch in torch.randperm(len(X_train)).split(64):
        loss = nn.functional.cross_entropy(model(X_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
model.eval()


def evaluate(m):
    return {"accuracy": accuracy(m, X_test, y_test)}


hash_before = state_dict_hash(model)
print(f"test accuracy {evaluate(model)['accuracy']:.3f}, {count_params(model):,} parameters")

# %% [markdown]
# Now compress a copy: `--svd 0.5` splits each `Linear` into two smaller ones keeping about half
# its parameters (truncated SVD), then `--prune 0.5` zeroes the smaller half of the weights of every
# `Linear` and `Conv2d`. `--eval evaluate` measures accuracy before and after, and `--as small` binds
# the compressed copy to the name `small`.

# %%
%load_ext jupyter_compress
%compress model --svd 0.5 --prune 0.5 --eval evaluate --as small

# %%
for name, m in [("model", model), ("small", small)]:
    print(f"{name:>5}: accuracy {evaluate(m)['accuracy']:.3f}, {count_params(m):,} parameters")

# %% [markdown]
# Read the report before trusting the result. Pruned weights are still stored densely, so
# pruning alone makes the model neither smaller in memory nor faster; the report gives the size a sparse
# encoding would take. The head has only 10 outputs, so keeping half its parameters leaves it rank 4
# (of 10): the report's per-layer error shows it, and that is where most of the accuracy goes.
# Compare with pruning alone, which keeps accuracy but saves bytes only in a sparse encoding:

# %%
%compress model --prune 0.5 --eval evaluate --as pruned --no-report
print(f"pruned: accuracy {evaluate(pruned)['accuracy']:.3f}")

# %% [markdown]
# ## Before / after plots
#
# The same compression through the Python API, with an `Evaluator` that measures accuracy, precision /
# recall / F1, fidelity to the original (top-1 agreement, cosine, KL, SQNR), latency and bytes on disk
# through zlib / LZ4 / Zstandard. `plotting.attach_plots` adds interactive figures to the report: per-layer
# parameters and bytes, per-layer error, latency, weight histograms (pick a layer) and the singular values
# with the chosen rank. BokehJS comes from the installed `bokeh` package (no CDN) and is written into the
# notebook once, by `load_bokehjs()`; every later plot carries only its data.

# %%
from jupyter_compress import Evaluator, Plan, PruneConfig, SVDConfig, Thresholds, attach_thresholds, compress
from jupyter_compress import plotting

plotting.load_bokehjs()

# %%
evaluator = Evaluator((X_test, y_test), reference=model, example_inputs=X_test[:64], disk=True)
small2, report = compress(model, Plan.of(SVDConfig(rank=0.5), PruneConfig(amount=0.5)), eval=evaluator)
attach_thresholds(report, Thresholds(max_drop=0.02))  # warn if accuracy drops by more than 2 points
plotting.attach_plots(report, model, small2)
report

# %% [markdown]
# ## Which method suits this model?
#
# `compare` runs each method family at the same size budget (here half the parameters of the layers it
# touches) on a copy of `model` and measures every cell on this model and this CPU:

# %%
from jupyter_compress import compare

compare(model, (X_test, y_test), budget=0.5)

# %% [markdown]
# ## Tune it by hand
# `--tune` opens a panel on the live model: pick a method per family, drag the sliders, and the size
# and per-layer error update at once (from analyses computed once); the output error on a probe batch
# follows in the background. **Apply** binds the result, **Revert** undoes it, **Generate cell** writes
# the exact plan as a `%%compress` cell right below this one (in JupyterLab with the extension; elsewhere
# the panel shows the cell to copy). Re-running that cell reproduces the applied model bit for bit.

# %%
probe = X_test[:64]
%compress model --tune --example probe --as tuned

# %% [markdown]
# The panel is also a Python object. Here we set it as a user would, then apply and generate the cell:

# %%
panel = _compress_panel
panel.method_pickers["decomposition"].value = "svd"
panel.controls["svd"]["rank"].value = 0.8
panel.method_pickers["pruning"].value = "prune"
panel.controls["prune"]["amount"].value = 0.4
print(f"preview: {panel.last_preview.params_after:,} parameters, {panel.last_preview.nonzeros_after:,} non-zero")
panel.apply()
request = panel.generate_cell()
request.wait(6)
print(panel.code.value if panel.code.value else "cell inserted below")

# %% [markdown]
# ## Save, and load without pickle
# `save` writes the weights as safetensors with the plan and report as JSON; `load` rebuilds the
# architecture by replaying the plan on a fresh model, then loads the weights. No pickled classes.

# %%
import tempfile
from pathlib import Path

from jupyter_compress import load, save

path = Path(tempfile.mkdtemp()) / "digits_tuned.safetensors"
save(tuned, panel.result[1], path, example_inputs=probe)
loaded = load(DigitsCNN, path)
with torch.no_grad():
    assert torch.equal(loaded(probe), tuned(probe))
print(f"saved {path.stat().st_size / 1024:.1f} KiB; the reloaded model gives identical outputs")

# %% [markdown]
# Finally, check that `small` is smaller and that compressing a copy left `model` bit-for-bit unchanged:

# %%
assert count_params(small) < count_params(model)
assert state_dict_hash(model) == hash_before
assert evaluate(model)["accuracy"] >= 0.95
print("ok")
