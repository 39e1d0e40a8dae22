"""Structured pruning through Torch-Pruning's dependency graph: channels really removed."""

from __future__ import annotations

import pytest
import torch
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.methods import StructuredPruneConfig
from jupyter_compress.methods._groups import n_remove as _n_remove


def test_mlp_hidden_neurons_are_removed_with_their_coupled_inputs():
    model, x = make("mlp")
    small, report = jc.compress(model, StructuredPruneConfig(amount=0.5), example_inputs=x)
    # fc1 is the first layer and head the last: kept; fc2's 48 outputs lose 24, head's inputs follow
    assert small.fc1.out_features == 64
    assert small.fc2.out_features == 24 and small.head.in_features == 24
    assert small.head.out_features == 10
    expected = 32 * 64 + 64 + 64 * 24 + 24 + 24 * 10 + 10
    assert jc.count_params(small) == expected == report.model_params_after
    assert small(x).shape == model(x).shape


def test_kept_channels_carry_their_original_weights():
    model, x = make("mlp")
    small, _ = jc.compress(model, StructuredPruneConfig(amount=0.5, importance="l2"), example_inputs=x)
    # each kept fc2 row is an original row, in the original order, and head's columns follow the same indices
    rows = model.fc2.weight.detach()
    kept = [int(torch.nonzero((rows == r).all(dim=1))[0]) for r in small.fc2.weight.detach()]
    assert kept == sorted(kept) and len(set(kept)) == 24
    assert torch.equal(small.fc2.bias, model.fc2.bias[kept])
    assert torch.equal(small.head.weight, model.head.weight[:, kept])
    # the dropped neurons are the least important ones: their weights have smaller norms on average
    dropped = [i for i in range(48) if i not in kept]
    assert rows[dropped].norm(dim=1).mean() < rows[kept].norm(dim=1).mean()


def test_residual_block_is_pruned_together_with_batchnorm():
    model, x = make("cnn")
    small, report = jc.compress(model, StructuredPruneConfig(amount=0.5, keep_first=False), example_inputs=x)
    # the residual couples stem.0, block.conv2 and fc's inputs: all shrink together, BatchNorms follow
    assert small.stem[0].out_channels == small.block.conv2.out_channels == 8
    assert small.stem[1].num_features == small.block.bn2.num_features == 8
    assert small.block.conv1.out_channels == 8 and small.block.bn1.num_features == 8
    assert small.fc.in_features == 8
    assert small(x).shape == (4, 10)
    assert jc.count_params(small) < jc.count_params(model) / 3


def test_protected_first_layer_skips_its_residual_group_and_says_so():
    model, x = make("cnn")
    small, report = jc.compress(model, StructuredPruneConfig(amount=0.5), example_inputs=x)
    skipped = {r.name: r.skipped for r in report.skipped_rows}
    assert "coupled" in skipped["block.conv2"]
    assert small.stem[0].out_channels == 16
    assert any("stem.0 (first layer" in n for n in report.notes)


def test_a_group_that_breaks_the_forward_pass_is_skipped_not_fatal():
    model, x = make("transformer")  # attention reshapes into 4 heads of 8 dims
    small, report = jc.compress(model, StructuredPruneConfig(amount=0.5), example_inputs=x)
    assert small(x).shape == (4, 5)
    reasons = " ".join(r.skipped for r in report.skipped_rows)
    assert "fails to run" in reasons or "coupled" in reasons
    assert small.mlp[0].out_features == 32  # the MLP's hidden neurons are pruned


def test_round_to_keeps_multiples():
    assert _n_remove(64, 0.5, 8) == 32
    assert _n_remove(48, 0.3, 8) == 8  # keep 34 -> rounded up to 40
    assert _n_remove(10, 0.95, 8) == 2  # keep at least one multiple
    model, x = make("mlp")
    small, _ = jc.compress(model, StructuredPruneConfig(amount=0.3, round_to=8), example_inputs=x)
    assert small.fc2.out_features % 8 == 0


def test_structured_needs_example_inputs():
    model, _ = make("mlp")
    with pytest.raises(jc.CompressError, match="needs example inputs"):
        jc.compress(model, StructuredPruneConfig(amount=0.5))


def test_bad_amount_and_model_unchanged():
    with pytest.raises(jc.InvalidConfigError, match="Got 1.0 instead"):
        StructuredPruneConfig(amount=1.0)
    model, x = make("cnn")
    before = jc.state_dict_hash(model)
    jc.compress(model, StructuredPruneConfig(amount=0.5), example_inputs=x)
    assert jc.state_dict_hash(model) == before
    assert isinstance(model.stem[0], nn.Conv2d) and model.stem[0].out_channels == 16


def test_resnet18_really_shrinks_and_still_runs():
    from jupyter_compress.examples.vision import ResNet18

    model = ResNet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    small, report = jc.compress(model, StructuredPruneConfig(amount=0.5), example_inputs=x)
    assert small(x).shape == (2, 10)
    assert jc.count_params(small) < jc.count_params(model) / 3
    # the stem is protected, so the residual stream of layer1 (coupled to its outputs) stays 64 wide
    assert small.conv1.out_channels == 64 and small.layer1[0].conv2.out_channels == 64
    assert small.layer1[0].conv1.out_channels == 32  # inside a block: halved
    assert small.layer4[1].conv2.out_channels == small.fc.in_features == 256
    assert "coupled" in {r.name: r.skipped for r in report.skipped_rows}["layer1.0.conv2"]
    assert jc.count_params(model) == 11_181_642  # the original is untouched (ResNet-18 with 10 classes)


def test_nothing_to_prune_is_said_plainly():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))  # only a first layer and a head
    small, report = jc.compress(model, StructuredPruneConfig(amount=0.5), example_inputs=torch.randn(2, 8))
    assert not report.compressed_rows and any("Nothing was pruned" in n for n in report.notes)
    assert jc.state_dict_hash(small) == jc.state_dict_hash(model)
