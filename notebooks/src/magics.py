# %% [markdown]
# # Every `%compress` magic, and what each mistake says
#
# A tour of the magics on the quickstart's digits CNN: every option, the settings, and the one-line
# error each user mistake gets (each error is asserted here, so this notebook is also a test).
# Run it top to bottom; it takes a minute on a laptop CPU.

# %%
import torch
from IPython.core.error import UsageError

import jupyter_compress as jc
from jupyter_compress.examples.digits import digits_data, evaluate, train_digits_cnn

model, X_test, y_test = train_digits_cnn(epochs=8)
X_train, _, y_train, _ = digits_data(0)
evaluate_fn = evaluate(X_test, y_test)
x = X_test[:8]
train, test = (X_train, y_train), (X_test, y_test)
hash_before = jc.state_dict_hash(model)
%load_ext jupyter_compress

# %% [markdown]
# What is available, with one line of help each, and the full option list (generated from the configs):

# %%
%compress_methods

# %%
%compress --help

# %% [markdown]
# ## One option per method
# Each binds a compressed copy; `model` itself never changes. Amounts take fractions or percentages;
# ranks take an int, a fraction of the parameters to keep, `energy:0.95` or `auto`.

# %%
%compress model --prune 50% --eval evaluate_fn --as pruned

# %%
%compress model --structured 0.3 --example x --eval evaluate_fn --as narrow --no-plots

# %%
%compress model --svd energy:0.9 --tucker 0.5 --eval evaluate_fn --as lowrank --no-report

# %%
%compress model --quantize static-int8 --calib X_train[:256] --eval evaluate_fn --as int8 --no-plots
%compress model --quantize int8 --example x --as dyn8 --no-report
%compress model --quantize int4 --as w4 --no-report
%compress model --quantize bf16 --as half --no-report

# %%
%compress model --cp 4 --as cpd --no-report
%compress model --nm 2:4 --as sparse24 --no-report
%compress model --tt 0.5 --layers head --as tensor_train --no-report
%compress model --svd auto --layers head --as vbmf --no-report
for name in ("pruned", "narrow", "lowrank", "int8", "dyn8", "w4", "half", "cpd", "sparse24", "tensor_train", "vbmf"):
    print(f"{name:>12}: {jc.count_params(globals()[name]):>6,} parameters, accuracy {evaluate_fn(globals()[name])['accuracy']:.3f}")
assert jc.state_dict_hash(model) == hash_before

# %% [markdown]
# Targeting layers, data for methods that need it (Taylor importance takes gradients on `train`),
# and a plan body in a `%%compress` cell (the body is the whole plan: layer choices go in its steps):

# %%
%%compress model --data train --as taylor --no-report
steps:
- {method: prune, criterion: taylor, amount: 0.5, exclude: [head]}
- {method: prune.nm, n: 2, m: 4, layers: [conv2]}

# %%
print(jc.applied_plans(taylor)[-1].describe())

# %% [markdown]
# `--distill [EPOCHS]` adds a recovery step after the others: the compressed copy is trained to
# mimic the original on `--data`.

# %%
%compress model --structured 0.6 --distill 2 --example x --data train --eval evaluate_fn --as recovered --no-plots

# %% [markdown]
# In place, undone exactly; the last report, or the one bound to a name:

# %%
%compress model --prune 0.5 --inplace --no-report
assert jc.state_dict_hash(model) != hash_before
%compress_revert model
assert jc.state_dict_hash(model) == hash_before
%compress_report pruned

# %% [markdown]
# `--emit-config` writes the exact plan as a `%%compress` cell below (in JupyterLab; here, run
# headless, the text is in `_compress_report.plan`). `--compare` measures every family side by side;
# `--tune` opens the panel.

# %%
%compress model --svd 0.5 --as emitted --emit-config --no-report

# %%
%compress model --compare --data test --budget 50%

# %%
%compress model --tune --example x --as tuned

# %% [markdown]
# `--auto --max-drop` searches the smallest plan within an accuracy budget (per-layer settings, mixed
# methods) and always returns the best plan found and the frontier:

# %%
%compress model --auto --max-drop 1% --eval evaluate_fn --example x --as found --no-plots

# %% [markdown]
# Settings are traitlets, checked where they are used:

# %%
%config CompressMagics.plots = False
%config CompressMagics.seed = 3
%compress model --prune 0.5 --scope global --as seeded --no-report
assert _compress_report.plan["seed"] == 3 and _compress_report.plan["steps"][0]["scope"] == "global"
%config CompressMagics.bokeh_resources = 'nowhere'
try:
    get_ipython().run_line_magic("compress", "model --prune 0.5")
except UsageError as exc:
    print("ok:", exc)
%config CompressMagics.bokeh_resources = 'inline'
%config CompressMagics.plots = True

# %% [markdown]
# ## Every mistake gets one line naming the value and the fix
# (and leaves `model` as it was).

# %%
def expect_error(line, text, cell=None):
    ip = get_ipython()
    try:
        if cell is None:
            ip.run_line_magic("compress", line)
        else:
            ip.run_cell_magic("compress", line, cell)
    except UsageError as exc:
        message = str(exc)
        assert text in message and "\n" not in message, (text, message)
        print("ok:", message)
    else:
        raise AssertionError(f"no error for {line!r}")
    assert jc.state_dict_hash(model) == hash_before


expect_error("model --prune 1.5", "must be a float in [0, 1). Got 1.5 instead")
expect_error("model --prune lots", "amount 'lots' is not a number")
expect_error("model --svd 0", "The 'rank' parameter of SVDConfig must be")
expect_error("model --svd 4000 --layers head", "at most")
expect_error("model --nm 4:2", "must be smaller than 'm'")
expect_error("model --nm two", "is not N:M")
expect_error("model --structured 0.5", "needs example inputs")
expect_error("model --prune 0.5 --layers fc9", "The model has no layer named 'fc9'")
expect_error("model --prune 0.5 --layers re:nothing.*", "matches no layer")
expect_error("model --bogus 1", "unrecognized arguments: --bogus")
expect_error("model", "give at least one method")
expect_error("nothing --prune 0.5", "model 'nothing' is not defined")
expect_error("X_test --prune 0.5", "is a Tensor, not a torch.nn.Module")
expect_error("model --prune 0.5 --eval nowhere", "eval function 'nowhere' is not defined")
expect_error("model --prune 0.5 --eval x", "--eval 'x' is not callable")
expect_error("model --prune 0.5 --data nowhere", "data 'nowhere' is not defined")
expect_error("model --prune 0.5 --as 9lives", "--as '9lives' is not a valid Python name")
expect_error("model --compare", "--compare measures on your data")
expect_error("model --prune 0.5 --distill", "distill needs data: add --data")
expect_error("model --quantize int3", "is not a mode; use one of int8")
expect_error("model --prune 0.5 --max-drop 1%", "--max-drop goes with --auto")
expect_error("model --prune 0.5 --example X_test[:", "could not be evaluated")
expect_error("model --prune 0.5 --distill zero --data train", "epochs: 'zero' is not a whole number")
expect_error("model --as t", "Unknown method 'prnue'. Did you mean 'prune'?", "steps:\n- {method: prnue}\n")
expect_error("model --as t", "amout", "steps:\n- {method: prune, amout: 0.5}\n")
try:
    get_ipython().run_line_magic("compress_revert", "model")
except UsageError as exc:
    assert "holds no in-place compression to revert" in str(exc)
    print("ok:", exc)
print("every mistake gave a one-line UsageError, and the model is unchanged")
