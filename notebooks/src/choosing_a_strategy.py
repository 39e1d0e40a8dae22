# %% [markdown]
# # Choosing a compression strategy, measured on *your* model
#
# Guides describe the four families with rules of thumb: pruning removes up to ~90% of the weights,
# int8 quantization saves ~4x, distillation trains a ~10x smaller student, low-rank factorization helps
# dense layers. Whether any of that holds for *your* model, on *your* hardware, within *your* accuracy
# budget, only a measurement says. This notebook walks a practitioner's decision:
#
# 1. **What kind of model and data?** Here, images (a CNN); the questions change for text (Linear layers dominate).
# 2. **What hardware, and what is the bottleneck?** A CPU server: latency and memory.
# 3. **What data is available?** None, a calibration set, or labelled training data decide which methods qualify.
# 4. **What accuracy loss is acceptable?** An explicit budget: at most 1 point.
#
# Then: the side-by-side comparison, per-layer sensitivity, an automatic search, and the advisor's ranking.

# %%
import jupyter_compress as jc
from jupyter_compress import plotting
from jupyter_compress.examples.digits import digits_data, evaluate, train_digits_cnn

model, X_test, y_test = train_digits_cnn(epochs=10)
X_train, _, y_train, _ = digits_data(0)
evaluate_fn = evaluate(X_test, y_test)
print(f"baseline: {jc.count_params(model):,} parameters, accuracy {evaluate_fn(model)['accuracy']:.4f}")

# %% [markdown]
# ## 1. The families side by side
# `compare` runs each family at the same size budget (half the parameters of the layers it touches) on a
# copy of the model, and measures every cell: size, accuracy, latency, time to compress, whether it needs
# data or retraining, and whether this CPU can turn the saving into speed. Below the rows, the trade-off:
# bytes kept against accuracy, the frontier in red.

# %%
table = jc.compare(model, (X_test, y_test), budget=0.5)
table

# %% [markdown]
# ## 2. Which layers are fragile?
# Each layer compressed alone at several ratios, scored on held-out data. Layers that tolerate a lot are
# where to compress; fragile ones should be kept or treated gently.

# %%
sens = jc.sensitivity(model, eval=evaluate_fn, example_inputs=X_test[:8], methods=["prune", "svd", "prune.structured"],
                      progress=False, cache_dir=False)
print(sens.summary(max_drop=0.01))
plotting.show(plotting.sensitivity_heatmap(sens, "prune"))  # layers x ratio, colour = drop in accuracy

# %% [markdown]
# ## 3. The smallest plan within 1 point
# `auto` starts from the sensitivity curves (a greedy per-layer choice), verifies candidates with real
# evaluations and refines; it always returns the best plan found and the whole frontier.

# %%
found = jc.auto(model, eval=evaluate_fn, example_inputs=X_test[:8], max_drop=0.01, max_trials=12,
                methods=["prune", "svd", "prune.structured"], progress=False, cache_dir=False)
print(found)
print(found.plan.describe())

# %% [markdown]
# ## 4. The advisor
# Given what data you have and your limits, `advise` ranks strategies with the evidence it measured and
# a short reason for each. Distillation is a training run, so the advisor lists it with what it needs
# instead of probing it (`compare` measures it when labelled data is given).

# %%
advice = jc.advise(model, data=(X_train, y_train), eval=evaluate_fn, target="cpu-server", max_drop=0.01,
                   time_budget_s=60, example_inputs=X_test[:8])
advice

# %%
no_data = jc.advise(model, eval=evaluate_fn, example_inputs=X_test[:8], target="edge", max_drop=0.01,
                    time_budget_s=30, mix=False)
print(no_data.to_text()[:1500])

# %% [markdown]
# ## 5. Keep the decision reproducible
# The winning plan is an ordinary plan: write it as a `%%compress` cell or a YAML file for the pipeline
# (`jupyter-compress run plan.yaml --model ... --max-drop 1%` fails when a threshold is crossed).

# %%
print(found.plan.to_yaml())
small, report = jc.compress(model, found.plan, eval=evaluate_fn, example_inputs=X_test[:8])
assert jc.state_dict_hash(small) == jc.state_dict_hash(found.model)
report

# %% [markdown]
# ## Exercises
# 1. Tighten the budget to 0.2 points: what does `auto` give up first?
# 2. Re-run `advise` with `target="edge"` and `memory_mb=0.02`: which strategies still meet the limits?
# 3. Why is unstructured pruning ranked low for latency on this CPU, whatever the sparsity?
# 4. Apply the same decision process to the MiniLM encoder (`real_transformer` notebook): which family wins there, and why?
