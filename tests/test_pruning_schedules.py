"""Taylor importance, global / per-layer structured pruning, gradual schedules, preview, bad input."""

from __future__ import annotations

import pytest
import torch
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.examples.vision import mobilenet_v2
from jupyter_compress.methods import PruneConfig, StructuredPruneConfig
from jupyter_compress.methods._taylor import taylor_scores


def _labelled(x, classes=10, seed=0):
    return x, torch.randint(0, classes, (len(x),), generator=torch.Generator().manual_seed(seed))


def test_taylor_scores_equal_a_hand_computation():
    model, x = make("mlp")
    data = _labelled(x)
    scores = taylor_scores(model, ["fc2"], data, max_batches=1)
    # by hand: one batch, cross-entropy, |w * dL/dw| with autograd on a copy
    copy = make("mlp")[0]
    loss = nn.functional.cross_entropy(copy(data[0]), data[1])
    loss.backward()
    expected = (copy.fc2.weight * copy.fc2.weight.grad).abs()
    torch.testing.assert_close(scores["fc2"], expected, rtol=1e-5, atol=1e-8)  # same float32 ops


def test_taylor_pruning_leaves_the_user_model_alone_even_in_train_mode_without_grad():
    model, x = make("cnn")
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    before = jc.state_dict_hash(model)
    with torch.no_grad():  # a model in training mode with gradients disabled: still works, changes nothing
        small, report = jc.compress(model, PruneConfig(amount=0.5, criterion="taylor"), data=_labelled(x))
    assert jc.state_dict_hash(model) == before  # BatchNorm running stats untouched too
    assert model.training and all(p.grad is None and not p.requires_grad for p in model.parameters())
    sparsity = 1 - jc.count_nonzero(small.block.conv1) / jc.count_params(small.block.conv1)
    assert sparsity == pytest.approx(0.5, abs=0.01)


def test_taylor_zeroes_exactly_the_lowest_scores():
    model, x = make("mlp")
    data = _labelled(x)
    scores = taylor_scores(model, ["fc1"], data, max_batches=4)["fc1"]
    small, _ = jc.compress(model, jc.Plan.of(PruneConfig(amount=0.25, criterion="taylor"),), data=data)
    zeroed = small.fc1.weight == 0
    k = int(round(0.25 * scores.numel()))
    assert int(zeroed.sum()) == k
    assert scores[zeroed].max() <= scores[~zeroed].min()


def test_taylor_without_data_is_a_clear_error():
    model, _ = make("mlp")
    with pytest.raises(jc.InvalidConfigError, match="data="):
        jc.compress(model, PruneConfig(criterion="taylor"))
    with pytest.raises(jc.InvalidConfigError, match="data="):
        jc.compress(model, StructuredPruneConfig(importance="taylor"), example_inputs=make("mlp")[1])


def test_structured_taylor_runs_and_differs_from_l1():
    model, x = make("mlp")
    a, _ = jc.compress(model, StructuredPruneConfig(amount=0.5, importance="taylor"), example_inputs=x,
                       data=_labelled(x))
    b, _ = jc.compress(model, StructuredPruneConfig(amount=0.5, importance="l1"), example_inputs=x)
    assert a.fc2.out_features == b.fc2.out_features == 24
    assert not torch.equal(a.fc2.weight, b.fc2.weight)


def test_per_layer_ratios_by_name_and_pattern():
    model, x = make("mlp")
    config = StructuredPruneConfig(amount=0.5, ratios={"fc2": 0.25}, keep_first=False)
    small, _ = jc.compress(model, config, example_inputs=x)
    assert small.fc1.out_features == 32 and small.fc2.out_features == 36  # 0.5 of 64, 0.25 of 48
    small, _ = jc.compress(model, StructuredPruneConfig(amount=0.5, ratios={"re:fc.*": 0.75}, keep_first=False),
                           example_inputs=x)
    assert small.fc1.out_features == 16 and small.fc2.out_features == 12
    with pytest.raises(jc.InvalidConfigError, match="'ratios' parameter"):
        StructuredPruneConfig(ratios={"fc2": 1.5})


def test_global_scope_removes_the_target_total_but_unevenly():
    model, x = make("mlp")
    with torch.no_grad():
        model.fc1.weight.mul_(torch.linspace(0.01, 3, 64)[:, None])  # fc1 neurons of very different norms
    small, report = jc.compress(model, StructuredPruneConfig(amount=0.5, scope="global", keep_first=False),
                                example_inputs=x)
    removed = (64 - small.fc1.out_features) + (48 - small.fc2.out_features)
    assert removed == pytest.approx(0.5 * (64 + 48), abs=1)
    assert small.fc1.out_features != 32  # not the same fraction in each layer


def test_mobilenet_v2_depthwise_groups_shrink_together():
    model = mobilenet_v2(num_classes=10, width=0.5)
    x = torch.randn(1, 3, 64, 64)
    small, report = jc.compress(model, StructuredPruneConfig(amount=0.3), example_inputs=x)
    block = small.features[2].conv  # expand 1x1 -> depthwise 3x3 -> project 1x1
    expand, depthwise = block[0][0], block[1][0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == expand.out_channels
    assert expand.out_channels < model.features[2].conv[0][0].out_channels
    assert small(x).shape == (1, 10)
    assert report.model_params_after < 0.8 * report.model_params_before


def test_gradual_schedules():
    assert jc.schedule_amounts(0.8, 4, "linear") == pytest.approx([0.2, 0.4, 0.6, 0.8])
    cubic = jc.schedule_amounts(0.8, 4, "cubic")
    assert cubic[-1] == pytest.approx(0.8) and cubic[0] == pytest.approx(0.8 * (1 - 0.75 ** 3))
    assert all(b - a < a for a, b in zip(cubic, cubic[1:]))  # big steps first, small at the end
    with pytest.raises(jc.InvalidConfigError, match="schedule"):
        jc.schedule_amounts(0.5, 3, "exponential")


def test_prune_gradually_calls_fine_tune_between_steps_and_keeps_zeros():
    model, x = make("mlp")
    before = jc.state_dict_hash(model)
    calls = []

    def fine_tune(net, step):
        calls.append(step)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.01)  # a "training step" that would revive pruned weights if the mask were not kept

    small, report = jc.prune_gradually(model, PruneConfig(amount=0.6), steps=3, fine_tune=fine_tune,
                                       eval=lambda m: {"out": float(m(x).detach().abs().mean())})
    assert calls == [0, 1, 2]
    assert jc.state_dict_hash(model) == before
    for name in ("fc1", "fc2", "head"):
        w = small.get_submodule(name).weight
        assert float((w == 0).float().mean()) == pytest.approx(0.6, abs=0.01)
    assert [h["step"] for h in report.history] == [1, 2, 3] and "out" in report.history[0]
    assert len(report.plan["steps"]) == 3


def test_structured_gradual_reaches_the_target_and_replays():
    model, x = make("mlp")
    small, report = jc.prune_gradually(model, StructuredPruneConfig(amount=0.5, keep_first=False), steps=2,
                                       schedule="linear", example_inputs=x)
    assert small.fc1.out_features == 32 and small.fc2.out_features == 24
    replayed, _ = jc.compress(model, jc.Plan.from_dict(report.plan), example_inputs=x)
    assert replayed.fc1.out_features == 32 and torch.equal(replayed.fc2.weight, small.fc2.weight)


def test_preview_names_what_would_go_and_changes_nothing():
    model, x = make("cnn")
    before = jc.state_dict_hash(model)
    report = jc.preview(model, StructuredPruneConfig(amount=0.5), example_inputs=x)
    assert jc.state_dict_hash(model) == before
    assert "latency_ms" not in report.metrics_after and report.notes[0].startswith("Preview")
    detail = {r.name: r.detail for r in report.compressed_rows}
    assert detail["block.conv1"]["removed_out"] == 8 and "block.bn1" in detail["block.conv1"]["coupled"]
    assert "block.conv2" in {r.name for r in report.skipped_rows}


class _ArgmaxHead(nn.Module):
    """A custom module whose output carries no gradient: the tracer cannot follow it."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(10))

    def forward(self, x):
        return (x * self.scale).argmax(dim=1)


def test_untraceable_custom_module_is_named_and_model_unchanged():
    model, x = make("mlp")
    net = nn.Sequential(model, _ArgmaxHead()).eval()
    before = jc.state_dict_hash(net)
    with pytest.raises(jc.CompressError) as info:
        jc.compress(net, StructuredPruneConfig(amount=0.5), example_inputs=x)
    message = str(info.value)
    assert "\n" not in message and "'1'" in message and "_ArgmaxHead" in message and "exclude" in message
    assert jc.state_dict_hash(net) == before
