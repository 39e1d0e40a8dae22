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

from jupyter_compress import accuracy, count_params, model_bytes, state_dict_hash

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
# Now compress a copy: `--tucker 0.5` splits each `Conv2d` into a 1x1, a smaller kxk and a 1x1 convolution
# keeping about half its parameters (Tucker-2), then `--quantize int8` stores the weights of the `Linear`
# head in int8 (`--example probe` gives it a batch to pick the fastest int8 route). `--eval evaluate`
# measures accuracy before and after, and `--as small` binds the compressed copy to the name `small`.

# %%
%load_ext jupyter_compress
probe = X_test[:64]
%compress model --tucker 0.5 --quantize int8 --example probe --eval evaluate --as small

# %%
for name, m in [("model", model), ("small", small)]:
    print(f"{name:>5}: accuracy {evaluate(m)['accuracy']:.3f}, {model_bytes(m) / 1024:.1f} KiB in memory")

# %% [markdown]
# About 2.6x smaller in memory for under a point of accuracy. Now the pitfalls. Unstructured pruning
# zeroes weights but stores them densely, so alone it makes the model neither smaller in memory nor
# faster; the report gives the size a sparse encoding would take:

# %%
%compress model --prune 0.5 --eval evaluate --as pruned --no-report
print(f"pruned: accuracy {evaluate(pruned)['accuracy']:.3f}, {model_bytes(pruned) / 1024:.1f} KiB in memory")

# %% [markdown]
# And the output layer: its 10 outputs make it rank 10 at most, so a truncated SVD keeping half its
# parameters leaves it rank 4, and that is where the accuracy goes. SVD (like Tucker, CP, TT and structured
# pruning) keeps the output layer by default and says so in the report; this plan asks for it anyway
# (`keep_head: false`), and the report's per-layer error shows the damage:

# %%
%%compress model --eval evaluate --as headless
steps:
  - method: svd
    rank: 0.5
    keep_head: false

# %% [markdown]
# ## Before / after plots
#
# The same compression through the Python API, with an `Evaluator` that measures accuracy, precision /
# recall / F1, fidelity to the original (top-1 agreement, cosine, KL, SQNR), latency and bytes on disk
# through zlib / LZ4 / Zstandard. `plotting.attach_plots` adds interactive figures to the report: per-layer
# parameters and bytes, per-layer error, latency, weight histograms (pick a layer) and, for SVD steps, the
# singular values with the chosen rank. The plots travel as data only: the JupyterLab extension draws them
# with the BokehJS it ships (no CDN, nothing in the saved notebook). For a front end without the extension,
# `%config CompressMagics.bokeh_resources = 'inline'` (or `plotting.configure("inline")`) writes BokehJS into
# the notebook once.

# %%
from jupyter_compress import DynamicQuantConfig, Evaluator, Plan, Thresholds, TuckerConfig, attach_thresholds, compress
from jupyter_compress import plotting

# %%
evaluator = Evaluator((X_test, y_test), reference=model, example_inputs=X_test[:64], disk=True)
small2, report = compress(model, Plan.of(TuckerConfig(rank=0.5), DynamicQuantConfig()), eval=evaluator,
                          example_inputs=probe)
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
assert model_bytes(small) < model_bytes(model) and count_params(small) < count_params(model)
assert state_dict_hash(model) == hash_before
assert evaluate(model)["accuracy"] >= 0.95
print("ok")
