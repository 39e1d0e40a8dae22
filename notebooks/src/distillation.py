# %% [markdown]
# # Knowledge distillation: a small student learns from a big teacher
#
# A trained network's outputs carry more than the label: how much a "3" looks like an "8". Hinton et
# al. (2015) train a small **student** on the teacher's softened output distribution (softmax at a
# temperature T > 1, which spreads probability over the near misses), mixed with the true labels by a
# weight alpha. The student needs no labels for the soft part, only inputs.
#
# Distillation is also the way to **recover** after compression: the pruned or decomposed model is the
# student, the original is the teacher.

# %%
import torch

import jupyter_compress as jc
from jupyter_compress import plotting
from jupyter_compress.examples.digits import DigitsCNN, digits_data, evaluate, fine_tune, train_digits_cnn

teacher, X_test, y_test = train_digits_cnn(epochs=15)
X_train, _, y_train, _ = digits_data(0)
evaluate_fn = evaluate(X_test, y_test)
teacher_acc = evaluate_fn(teacher)["accuracy"]
print(f"teacher: {jc.count_params(teacher):,} parameters, accuracy {teacher_acc:.3f}")

# %% [markdown]
# ## Temperature
# The same teacher logits at three temperatures: higher T reveals the runner-up classes.

# %%
with torch.no_grad():
    logits = teacher(X_test[:1])[0]
for T in (1, 4, 10):
    probs = torch.softmax(logits / T, dim=0)
    top = probs.topk(3)
    print(f"T={T:>2}: " + ", ".join(f"{int(i)}: {float(p):.3f}" for p, i in zip(top.values, top.indices)))

# %% [markdown]
# ## A student with 13x fewer parameters, with and without the teacher
# Same student, same data order, same epochs: once trained on labels alone (`alpha=0`), once
# distilled (T=4, alpha=0.5). The curve below updates live while the distilled student trains.

# %%
curve = plotting.LiveCurve("distilling the width-2 student")
curve

# %%
student = DigitsCNN(width=2)
print(f"student: {jc.count_params(student):,} parameters ({jc.count_params(teacher) / jc.count_params(student):.1f}x fewer)")
labels_only, _ = jc.distill(student, teacher, (X_train, y_train), epochs=20, alpha=0.0, lr=1e-2,
                            progress=False, seed=0)
distilled, report = jc.distill(student, teacher, (X_train, y_train), epochs=20, lr=1e-2, val_data=(X_test, y_test),
                               metric="accuracy", on_epoch=curve.update, progress=False, seed=0)
for name, m in (("labels only", labels_only), ("distilled", distilled)):
    acc = evaluate_fn(m)["accuracy"]
    print(f"{name:>12}: accuracy {acc:.3f} ({acc / teacher_acc:.1%} of the teacher)")

# %% [markdown]
# One seed is one draw; `benchmarks/bench_distill.py` repeats this over 5 seeds and reports the spread.
# (Note: picking the best epoch on the test set, as `val_data` does here, flatters the distilled
# student a little; in practice keep a separate validation split.)
#
# ## Recovery: compress, then distil
# Structured pruning removes 70% of the channels; accuracy falls. Three epochs of distillation from the
# original bring most of it back (the numbers below are this run's). In a plan this is one more step: `{method: distill, epochs: 3}`.

# %%
plan = jc.Plan.of(jc.StructuredPruneConfig(amount=0.7, keep_first=False))
pruned, _ = jc.compress(teacher, plan, example_inputs=X_test[:8])
recovered, report = jc.compress(teacher, jc.Plan.from_dict({"jupyter_compress_plan": 1, "steps": [
    {"method": "prune.structured", "amount": 0.7, "keep_first": False},
    {"method": "distill", "epochs": 3}]}), example_inputs=X_test[:8], data=(X_train, y_train), eval=evaluate_fn)
print(f"pruned 70%: {evaluate_fn(pruned)['accuracy']:.3f} -> after 3 epochs of distillation "
      f"{evaluate_fn(recovered)['accuracy']:.3f} (teacher {teacher_acc:.3f}); "
      f"{report.model_params_before / report.model_params_after:.1f}x fewer parameters")
report

# %% [markdown]
# ## Interrupting
# Training stops cleanly: Ctrl-C (or an exception from a callback, as simulated here) returns the best
# student so far, and the report says it was interrupted. The teacher is never modified.

# %%
def stop_early(info):
    if info["step"] == 30:  # as if the user pressed Ctrl-C during the second epoch
        raise KeyboardInterrupt


before = jc.state_dict_hash(teacher)
partial, report = jc.distill(DigitsCNN(width=2), teacher, (X_train, y_train), epochs=10, lr=1e-2,
                             on_step=stop_early, progress=False)
print([n for n in report.notes if n.startswith("Interrupted")][0][:120])
assert jc.state_dict_hash(teacher) == before

# %% [markdown]
# ## Exercises
# 1. Try T = 1, 2, 8 with alpha = 0.5: which temperature suits this small student best?
# 2. Make the student even smaller (`DigitsCNN(width=1)`): does distillation help more or less?
# 3. Distil with no labels at all (`data=X_train` only, `alpha=1`): how close does the student get?
# 4. Recover a model pruned by 90%: how many epochs does it need to come within one point?
