"""distill(): losses against hand-computed values, determinism, interruption, validation, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.methods.distill import cosine_loss, kd_loss, soft_target_loss
from jupyter_compress.methods.distill.losses import choose_loss, output_loss


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


# -- losses, against arithmetic done with the math module (float32 torch vs float64: tolerance 1e-6) --------

def test_soft_target_loss_matches_hand_computed_kl_times_t_squared():
    s, t, T = [1.0, 0.0, -1.0], [0.0, 2.0, 0.5], 2.0
    p_s, p_t = _softmax([v / T for v in s]), _softmax([v / T for v in t])
    expected = T * T * sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    got = soft_target_loss(torch.tensor([s]), torch.tensor([t]), T)
    assert abs(float(got) - expected) < 1e-6
    assert float(soft_target_loss(torch.tensor([s]), torch.tensor([s]), T)) == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_mixes_soft_targets_and_cross_entropy_by_alpha():
    s, t, y, T, alpha = [0.5, 1.5], [2.0, -1.0], 1, 4.0, 0.7
    p_s, p_t = _softmax([v / T for v in s]), _softmax([v / T for v in t])
    soft = T * T * sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    hard = -math.log(_softmax(s)[y])
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), T=T, alpha=alpha)
    assert abs(float(got) - (alpha * soft + (1 - alpha) * hard)) < 1e-6
    # no labels: the soft term alone; rows of a batch are averaged
    two = kd_loss(torch.tensor([s, s]), torch.tensor([t, t]), None, T=T, alpha=alpha)
    assert abs(float(two) - soft) < 1e-6


def test_cosine_and_mse_losses():
    got = cosine_loss(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 5.0]]))
    assert abs(float(got) - (1 - 1 / math.sqrt(2) + 0.0) / 2) < 1e-6
    s, t, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[3.0, 2.0]])
    # mse mixed with a regressor's float targets: 0.25 * ((1 + 0) / 2) + 0.75 * ((4 + 0) / 2)
    assert float(output_loss("mse", s, t, y, T=1.0, alpha=0.25)) == pytest.approx(0.125 + 1.5, abs=1e-6)


def test_auto_loss_follows_outputs_and_targets():
    logits = torch.zeros(4, 10)
    assert choose_loss(logits, logits, torch.tensor([1, 2, 3, 4]))[0] == "kd"
    assert choose_loss(logits, logits, torch.zeros(4, 10))[0] == "mse"
    assert choose_loss(torch.zeros(4, 1), torch.zeros(4, 1), None)[0] == "mse"
    assert choose_loss({"sentence_embedding": logits}, logits, None)[0] == "cosine"


# -- training -----------------------------------------------------------------------------------------------

def _task(seed: int = 0):
    """A teacher MLP and labelled data it classifies (labels = its own argmax, so it is 100% right)."""
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    X = torch.randn(256, 12, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y = teacher(X).argmax(-1)
    return teacher, X, y


def _student(seed: int = 5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4)).eval()


def test_distill_trains_the_student_and_leaves_both_arguments_unchanged():
    teacher, X, y = _task()
    student = _student()
    t_hash, s_hash = jc.state_dict_hash(teacher), jc.state_dict_hash(student)
    before = jc.accuracy(student, X, y)
    out, report = jc.distill(student, teacher, (X, y), epochs=8, lr=1e-2, val_data=(X[:64], y[:64]),
                             progress=False)
    assert jc.state_dict_hash(teacher) == t_hash and jc.state_dict_hash(student) == s_hash
    assert out is not student and not out.training
    assert jc.accuracy(out, X, y) > before + 0.2
    assert report.metrics_before["accuracy"] == 1.0 and report.metrics_after["accuracy"] > 0.7
    assert [h["epoch"] for h in report.history] == list(range(9))  # epoch 0: the starting student
    assert report.model_params_after == jc.count_params(student)
    assert report.plan["steps"][0]["method"] == "distill" and report.plan["steps"][0]["loss"] == "kd"
    inplace, _ = jc.distill(student, teacher, X, epochs=1, progress=False, inplace=True)
    assert inplace is student and jc.state_dict_hash(student) != s_hash


def test_same_seed_gives_identical_weights_and_another_seed_does_not():
    teacher, X, y = _task()
    runs = [jc.distill(_student(), teacher, (X, y), epochs=2, seed=s, progress=False)[0] for s in (3, 3, 4)]
    hashes = [jc.state_dict_hash(m) for m in runs]
    assert hashes[0] == hashes[1] and hashes[0] != hashes[2]


def test_keyboard_interrupt_mid_epoch_returns_the_last_whole_epoch_and_spares_the_teacher():
    teacher, X, y = _task()
    t_hash = jc.state_dict_hash(teacher)
    two_epochs, _ = jc.distill(_student(), teacher, (X, y), epochs=2, progress=False)
    steps_per_epoch = 256 // 64

    def stop(info):
        if info["step"] == 2 * steps_per_epoch + 2:  # mid-way through epoch 3
            raise KeyboardInterrupt

    out, report = jc.distill(_student(), teacher, (X, y), epochs=5, progress=False, on_step=stop)
    # the run is deterministic, so "the student after 2 whole epochs" is known exactly
    assert jc.state_dict_hash(out) == jc.state_dict_hash(two_epochs)
    assert jc.state_dict_hash(teacher) == t_hash
    assert any(n.startswith("Interrupted") for n in report.notes)
    assert len(report.history) == 2


def test_interrupt_with_validation_returns_the_best_epoch():
    teacher, X, y = _task()
    Xv, yv = X[:96], y[:96]
    seen = []

    def stop(history):
        seen.append(len(history))
        if len(history) == 4:  # epochs 0..3 done
            raise KeyboardInterrupt

    out, report = jc.distill(_student(), teacher, (X, y), epochs=10, lr=1e-2, val_data=(Xv, yv),
                             progress=False, on_epoch=stop)
    assert seen == [2, 3, 4]
    best = max(h["accuracy"] for h in report.history)
    assert report.metrics_after["accuracy"] == best
    # accuracy recomputed on the returned student: equal up to one example (batched float sums may differ)
    assert abs(jc.accuracy(out, Xv, yv) - best) <= 1 / len(Xv)
    assert any(n.startswith("Interrupted") for n in report.notes)


def test_early_stopping_when_the_metric_does_not_improve():
    teacher, X, y = _task()
    out, report = jc.distill(_student(), teacher, (X, y), epochs=20, lr=1e-9, val_data=(X, y), patience=2,
                             progress=False)
    assert len(report.history) == 1 + 2
    assert any("stopped early" in n for n in report.notes)


def test_feature_matching_with_a_learned_projection():
    from jupyter_compress.examples.digits import DigitsCNN

    torch.manual_seed(0)
    teacher, student = DigitsCNN(16).eval(), DigitsCNN(4).eval()
    X = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out, report = jc.distill(student, teacher, X, epochs=6, lr=1e-2, features={"conv2": "conv2"},
                             output_weight=0.0, progress=False)
    losses = [h["loss"] for h in report.history]
    assert losses[-1] < 0.5 * losses[0]
    assert jc.count_params(out) == jc.count_params(student)  # the projection is not part of the student
    with pytest.raises(jc.InvalidConfigError, match=r"conv1.*\(64, 4, 8, 8\).*head.*\(64, 10\)"):
        jc.distill(student, teacher, X, features={"head": "conv1"}, output_weight=0.0, progress=False)
    with pytest.raises(jc.SelectorError, match="conv3"):
        jc.distill(student, teacher, X, features={"conv3": "conv2"}, progress=False)


def test_keep_zeros_keeps_pruned_weights_at_zero():
    teacher, X, y = _task()
    pruned, _ = jc.compress(teacher, jc.PruneConfig(amount=0.5))
    zeros = jc.count_params(pruned) - jc.count_nonzero(pruned)
    out, _ = jc.distill(pruned, teacher, (X, y), epochs=1, progress=False)
    assert jc.count_params(out) - jc.count_nonzero(out) == zeros
    dense, _ = jc.distill(pruned, teacher, (X, y), epochs=1, progress=False, keep_zeros=False)
    assert jc.count_params(dense) - jc.count_nonzero(dense) < zeros


# -- bad input: one-line errors --------------------------------------------------------------------------

def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_incompatible_output_shapes_name_both_and_suggest_features():
    teacher, X, y = _task()
    student = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(jc.InvalidConfigError) as err:
        jc.distill(student, teacher, X, progress=False)
    text = _one_line(err)
    assert "(64, 3)" in text and "(64, 4)" in text and "features=" in text


@pytest.mark.parametrize("data", [torch.empty(0, 12), (torch.empty(0, 12), torch.empty(0)), []])
def test_empty_data_is_an_error(data):
    teacher, _, _ = _task()
    with pytest.raises(jc.InvalidConfigError, match="empty") as err:
        jc.distill(_student(), teacher, data, progress=False)
    _one_line(err)


@pytest.mark.parametrize("T", [0, -1.0])
def test_temperature_must_be_positive(T):
    teacher, X, _ = _task()
    with pytest.raises(jc.InvalidConfigError, match="'T' parameter") as err:
        jc.distill(_student(), teacher, X, T=T, progress=False)
    _one_line(err)


def test_data_on_another_device_is_an_error():
    teacher, X, _ = _task()
    with pytest.raises(jc.InvalidConfigError, match="meta.*cpu") as err:
        jc.distill(_student(), teacher, X.to("meta"), progress=False)
    _one_line(err)


def test_other_bad_options():
    teacher, X, y = _task()
    with pytest.raises(jc.InvalidConfigError, match="val_data"):
        jc.distill(_student(), teacher, X, metric="accuracy", progress=False)
    with pytest.raises(jc.InvalidConfigError, match="patience"):
        jc.distill(_student(), teacher, X, patience=-1, val_data=X, progress=False)
    with pytest.raises(jc.InvalidConfigError, match="teacher itself"):
        jc.distill(teacher, teacher, X, progress=False)
    with pytest.raises(jc.InvalidConfigError, match="needs data"):
        jc.distill(_student(), teacher, None, progress=False)


def test_progress_bar_shows_loss_and_metric(capsys):
    teacher, X, y = _task()
    jc.distill(_student(), teacher, (X, y), epochs=2, val_data=(X[:32], y[:32]), progress=True)
    err = capsys.readouterr().err
    assert "distill" in err and "loss=" in err


# -- attention-relation matching (MiniLM) ------------------------------------------------------------------

def _tiny_bert(layers: int = 4):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(1, 50, (16, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[8:, 6:] = 0  # half the rows padded after six tokens
    return model, [{"input_ids": ids[i:i + 8], "attention_mask": mask[i:i + 8]} for i in (0, 8)]


def test_relation_kl_is_zero_for_equal_inputs_and_ignores_padding():
    from jupyter_compress.methods.distill._attention import relation, relation_kl

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    t = relation(q, k, 2, mask)
    assert torch.allclose(t.exp().sum(-1), torch.ones(2, 2, 5))
    assert float(t[1, :, :, 3:].exp().max()) == 0.0  # padded keys get no attention
    assert float(relation_kl(t, t, mask)) == 0.0
    other = relation(q + 0.5 * torch.randn(2, 5, 8, generator=g), k, 2, mask)
    value = float(relation_kl(other, t, mask))
    assert value > 0.0
    q2, k2 = q.clone(), k.clone()
    q2[1, 3:], k2[1, 3:] = 100.0, -100.0  # what padded tokens carry does not count
    assert float(relation_kl(relation(q2, k2, 2, mask), t, mask)) == 0.0 == float(
        relation_kl(relation(q2, k2, 2, mask), relation(q, k, 2, mask), mask))


def test_attention_loss_is_zero_for_identical_models_and_positive_for_a_shallow_student():
    import copy

    teacher, batches = _tiny_bert()
    t_hash = jc.state_dict_hash(teacher)
    att = {"encoder.layer.3.attention.self": "encoder.layer.3.attention.self"}
    losses = []
    jc.distill(copy.deepcopy(teacher), teacher, batches, epochs=1, attention=att, output_weight=0.0,
               patience=0, progress=False, on_step=lambda info: losses.append(info["loss"]))
    assert losses and losses[0] == 0.0
    student = jc.make_student(teacher, "shallow", amount=0.5)
    att = {"encoder.layer.3.attention.self": "encoder.layer.1.attention.self"}
    history = []
    trained, report = jc.distill(student, teacher, batches, epochs=8, lr=1e-2, attention=att, output_weight=0.0,
                                 patience=0, progress=False, on_epoch=lambda h: history.append(h[-1]["loss"]))
    assert history[0] > 0.0 and history[-1] < 0.5 * history[0]  # the relations are learnable
    assert jc.state_dict_hash(teacher) == t_hash
    assert report.plan["steps"][0]["attention"] == att
    with pytest.raises(jc.SelectorError, match="Did you mean 'encoder.layer.1.attention.self'"):
        jc.distill(student, teacher, batches, attention={"encoder.layer.3.attention.self":
                                                         "encoder.layer.1.attention.sel"}, progress=False)
