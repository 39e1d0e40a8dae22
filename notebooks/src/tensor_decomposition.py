# %% [markdown]
# # Tensor decomposition: SVD, Tucker, CP and Tensor-Train
#
# A weight matrix or kernel often has far fewer "directions" that matter than its size suggests.
# A decomposition writes it as a product of smaller factors; keeping only the strong directions
# (a low **rank**) shrinks parameters and multiply-adds by the same ratio.
#
# - **SVD** (`Linear`): W (out x in) ~ U_r S_r V_r^T, i.e. two Linears, in -> r -> out.
# - **Tucker-2** (`Conv2d`, Kim et al. 2016): compress the input and output channel modes: a 1x1 conv
#   down to r_in channels, a kxk conv r_in -> r_out, a 1x1 conv up.
# - **CP** (`Conv2d`, Lebedev et al. 2015): a sum of R rank-one kernels: 1x1, kx1 depthwise,
#   1xk depthwise, 1x1.
# - **Tensor-Train** (large `Linear` / `Embedding`): the matrix reshaped into a higher-order tensor
#   and written as a chain of small cores.
#
# All the decompositions run in tensorly (PyTorch backend). The error of a truncated SVD is exactly
# the energy in the discarded singular values: the spectrum tells you the price of each rank before
# you pay it.

# %%
import time

import torch

import jupyter_compress as jc
from jupyter_compress import plotting
from jupyter_compress.plotting import figures
from jupyter_compress.examples.digits import digits_data, evaluate, fine_tune, train_digits_cnn

model, X_test, y_test = train_digits_cnn(epochs=10)
X_train, _, y_train, _ = digits_data(0)
evaluate_fn = evaluate(X_test, y_test)
print(f"baseline accuracy {evaluate_fn(model)['accuracy']:.3f}, {jc.count_params(model):,} parameters")
plotting.load_bokehjs()

# %% [markdown]
# ## The spectrum, and three ways to pick a rank
# `spectrum(model)` analyses each layer once (cached); any rank question after that is a lookup.
# A rank can be an int, a fraction of the parameters to keep, an energy threshold (`energy:0.95`: keep
# 95% of the squared singular values) or `auto` (VBMF, a Bayesian estimate of the rank hidden under noise).

# %%
analyses = jc.spectrum(model)
head = analyses["head"]
for rule in (4, 0.5, "energy:0.95", "auto"):
    rank = head.rank_for(rule)
    print(f"{str(rule):>12}: rank {rank:>2} of {head.max_rank[0]}, relative error {head.error(rank):.4f}, "
          f"{head.params(rank):,} weights instead of {head.shape[0] * head.shape[1]:,}")
plotting.show(figures.spectrum_figure(model, "head", rank=head.rank_for("energy:0.95")))

# %% [markdown]
# ## SVD, Tucker-2 and CP on the digits CNN
# The same budget (about half the parameters of the layers each method touches), measured. The CNN's only
# Linear is its output layer, which SVD (and TT below) leave alone by default (`keep_head=True`: a 512 -> 10
# head is rank 10 at most, so factoring it buys little and costs accuracy); here we ask for it with
# `keep_head=False`, to see exactly what it costs:

# %%
plans = {"svd (Linear)": jc.SVDConfig(rank=0.5, keep_head=False), "tucker-2 (Conv2d)": jc.TuckerConfig(rank=0.5),
         "cp (Conv2d)": jc.CPConfig(rank=0.5)}
results = {}
for label, config in plans.items():
    small, report = jc.compress(model, config, eval=evaluate_fn, measure=False)
    results[label] = small
    rows = ", ".join(f"{r.name} rank {r.detail.get('rank')} err {r.error:.3f}" for r in report.compressed_rows)
    print(f"{label:>18}: accuracy {report.metrics_after['accuracy']:.3f}, params "
          f"{report.model_params_before:,} -> {report.model_params_after:,}; {rows}")
report

# %% [markdown]
# A picture of the factors: the Tucker-2 replacement of `conv2` is three ordinary convolutions.
# Their kernels are small enough to look at:

# %%
tucker = results["tucker-2 (Conv2d)"]
print(tucker.conv2)
from bokeh.layouts import row
from bokeh.plotting import figure

pictures = []
for i, part in enumerate(tucker.conv2):
    w = part.weight.detach().flatten(1)
    fig = figure(title=f"factor {i}: {tuple(part.weight.shape)}", width=220, height=220, toolbar_location=None)
    fig.image(image=[w.numpy()], x=0, y=0, dw=w.shape[1], dh=w.shape[0], palette="RdBu11")
    pictures.append(fig)
plotting.show(row(*pictures))

# %% [markdown]
# ## Tensor-Train for a large Linear
# The head (512 -> 10) reshaped into a 3-way tensor and written as a train of cores:

# %%
tt_model, report = jc.compress(model, jc.TTConfig(rank=0.3, keep_head=False), eval=evaluate_fn, measure=False)
print(tt_model.head)
print(f"accuracy {report.metrics_after['accuracy']:.3f}, head {report.rows[0].params_before:,} -> "
      f"{report.rows[0].params_after:,} parameters, error {report.rows[0].error:.3f}")

# %% [markdown]
# ## Re-ranking is instant
# The decomposition is computed once per layer and weight version; a new rank is a truncation.
# This is what lets the tuning panel (`%compress model --tune`) follow a slider.

# %%
from jupyter_compress.methods.decompose import clear_cache

clear_cache()
start = time.perf_counter()
jc.compress(model, jc.SVDConfig(rank=0.5, keep_head=False), measure=False)
first = time.perf_counter() - start
start = time.perf_counter()
for rank in (0.2, 0.3, 0.4, 0.6, 0.7):
    jc.compress(model, jc.SVDConfig(rank=rank, keep_head=False), measure=False)
again = (time.perf_counter() - start) / 5
print(f"first decomposition {first * 1e3:.1f} ms; each re-rank after it {again * 1e3:.1f} ms")

# %% [markdown]
# ## A short fine-tune recovers what truncation lost

# %%
for label in ("tucker-2 (Conv2d)", "cp (Conv2d)"):
    small = results[label]
    before = evaluate_fn(small)["accuracy"]
    fine_tune(small, X_train, y_train, epochs=3, lr=3e-3)
    print(f"{label:>18}: {before:.3f} -> {evaluate_fn(small)['accuracy']:.3f} after 3 epochs "
          f"(baseline {evaluate_fn(model)['accuracy']:.3f})")

# %% [markdown]
# ## Exercises
# 1. Plot `head.error_curve()` against rank. Where would you put the rank if you could lose at most
#    1% of the weight energy? Check with `head.rank_for("energy:0.99")`.
# 2. Compare CP and Tucker-2 at rank fractions 0.2, 0.3 and 0.5: which degrades faster, and does a
#    3-epoch fine-tune close the gap?
# 3. `conv1` has a single input channel: why is it skipped by Tucker-2 and CP?
# 4. Time a low-rank `Linear(768, 3072)` at batch 1 and batch 256 (`jc.measure_latency`): when does
#    the saved arithmetic turn into saved time?
