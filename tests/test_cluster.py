"""quantize.cluster: weight sharing by 1-D k-means with linear initialisation (Deep Compression, section 3)."""

from __future__ import annotations

import pytest
import torch
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.io import load, save
from jupyter_compress.methods.quantize.cluster import (
    ClusteredLayer,
    cluster_layer,
    finetune_centroids,
    kmeans_1d,
)


def test_kmeans_1d_starts_linear_and_converges_to_the_obvious_clusters():
    values = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 5.2, 10.0, 10.1, 10.2])
    centroids, assign = kmeans_1d(values, 3, iterations=1)  # one step from linspace(0, 10.2, 3) is enough here
    assert torch.allclose(centroids, torch.tensor([0.1, 5.1, 10.1], dtype=torch.float64), atol=1e-12)
    assert assign.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # deterministic: the same answer every time, no seed
    v = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    a, b = kmeans_1d(v, 16, 1000), kmeans_1d(v, 16, 1000)  # enough to converge (stops when settled)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # a k-means fixed point: each centroid is the mean of its values, each value at its nearest centroid
    c, idx = a
    for j in range(16):
        if (idx == j).any():
            assert abs(float(v[idx == j].double().mean()) - float(c[j])) < 1e-9
    nearest = (v[:, None].double() - c[None, :]).abs().argmin(dim=1)
    assert torch.equal(nearest, idx)


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_a_pruned_layer_keeps_its_zeros_and_has_at_most_2_to_the_bits_values(bits):
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    with torch.no_grad():
        layer.weight[torch.rand_like(layer.weight) < 0.9] = 0
    new = cluster_layer(layer, bits, 50)
    w = new.dense_weight()
    assert torch.equal(w == 0, layer.weight == 0)  # zeros stay zeros, no non-zero becomes zero
    assert torch.unique(w).numel() <= 2 ** bits and new.codebook.numel() == 2 ** bits
    assert new.indices.dtype == torch.uint8 and int(new.indices.max()) < 2 ** bits
    err = float((w - layer.weight.detach()).norm() / layer.weight.detach().norm())
    # relative weight error shrinks with the bits: measured 0.25 / 0.018 / 0.0013 (2 / 5 / 8 bits)
    assert err < {2: 0.35, 5: 0.04, 8: 0.005}[bits]
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.allclose(new(x), nn.functional.linear(x, w, layer.bias), atol=1e-6)


def test_conv_layers_take_conv_bits_and_compute_like_the_decoded_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="reflect")
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    x = torch.randn(2, 3, 8, 8)
    small, report = jc.compress(model, jc.ClusterConfig(bits=3, conv_bits=6), example_inputs=x)
    assert isinstance(small[0], ClusteredLayer) and isinstance(small[3], ClusteredLayer)
    assert small[0].bits == 6 and small[3].bits == 3
    with torch.no_grad():
        ref = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), small[0].dense_weight(),
                                   conv.bias, stride=2)
        assert torch.allclose(small[0](x), ref, atol=1e-6)
    rows = {r.name: r for r in report.compressed_rows}
    assert rows["0"].detail["bits"] == 6 and rows["3"].detail["shared_values"] == 8
    assert small[0].weight.shape == conv.weight.shape  # the stand-in weight has the conv's shape


def test_prune_then_cluster_saves_compact_and_loads_bit_identical(tmp_path):
    model, x = make("cnn")
    plan = jc.Plan.of(jc.PruneConfig(amount=0.9), jc.ClusterConfig(bits=5))
    small, report = jc.compress(model, plan, example_inputs=x)
    dense = save(small, report, tmp_path / "d.safetensors", example_inputs=x)
    packed = save(small, report, tmp_path / "c.safetensors", example_inputs=x, compact=True)
    loaded = load(lambda: make("cnn", seed=3)[0], packed)
    assert jc.state_dict_hash(loaded) == jc.state_dict_hash(small)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    assert packed.stat().st_size < dense.stat().st_size


def test_finetune_centroids_moves_only_the_codebooks_and_lowers_the_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(256, 16)
    y = model(x).argmax(dim=1).detach()
    small, _ = jc.compress(model, jc.Plan.of(jc.PruneConfig(amount=0.5), jc.ClusterConfig(bits=2)))
    indices = [m.indices.clone() for m in small if isinstance(m, ClusteredLayer)]
    before = float(nn.functional.cross_entropy(small(x), y))
    after = finetune_centroids(small, [(x, y)], epochs=30, lr=1e-2)
    assert after < before
    for m, idx in zip([m for m in small if isinstance(m, ClusteredLayer)], indices):
        assert torch.equal(m.indices, idx) and float(m.codebook[0]) == 0.0 and not m.codebook.requires_grad
    with pytest.raises(jc.CompressError, match="no clustered layer"):
        finetune_centroids(model, [(x, y)])


def test_bad_bits_are_one_line_errors():
    with pytest.raises(jc.CompressError, match="'bits' parameter of ClusterConfig.*Got 9"):
        jc.ClusterConfig(bits=9)
    from jupyter_compress.methods.quantize.cluster import _parse_bits

    assert _parse_bits("4") == 4
    with pytest.raises(jc.CompressError, match="--cluster 'x': bits must be an integer from 1 to 8"):
        _parse_bits("x")


def test_the_deep_compression_plan_runs_as_one_cell_body_and_saves_compact(tmp_path):
    """The README's %%compress body: prune (global), recover by distillation with the zeros kept, share."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    X, y = torch.rand(256, 1, 8, 8), torch.randint(0, 10, (256,))
    plan = jc.Plan.from_yaml(
        "steps:\n"
        "- {method: prune, amount: 0.9, scope: global}\n"
        "- {method: distill, epochs: 2}\n"
        "- {method: quantize.cluster, bits: 4}\n")
    small, report = jc.compress(model, plan, data=(X, y), example_inputs=X[:4])
    layers = [m for m in small.modules() if isinstance(m, ClusteredLayer)]
    assert len(layers) == 2 and all(m.bits == 4 for m in layers)
    kept = sum(int(torch.count_nonzero(m.dense_weight())) for m in layers)
    assert kept <= 0.1 * (64 * 128 + 128 * 10) + 1  # distillation kept the zeros, sharing kept them too
    done = jc.Plan.from_dict(report.plan)  # the plan only: the report's rows would dominate so small a file
    dense = save(small, done, tmp_path / "d.safetensors", example_inputs=X[:4])
    packed = save(small, done, tmp_path / "c.safetensors", example_inputs=X[:4], compact=True)
    # dense: uint8 indices + fp32 biases (~10 KB); compact: ~10% of the indices at 4 bits with relative indices
    # in a few bits, coded (~2.5 KB, the header included)
    assert dense.stat().st_size / packed.stat().st_size > 2.5
    loaded = load(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)), packed)
    assert jc.state_dict_hash(loaded) == jc.state_dict_hash(small)


def test_bias_bits_share_the_biases_too_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    x = torch.randn(8, 16)
    small, report = jc.compress(model, jc.ClusterConfig(bits=4, bias_bits=3), example_inputs=x)
    layer = small[0]
    assert layer.shares_bias and "bias" not in dict(layer.named_buffers())
    assert {"bias_indices", "bias_codebook"} <= set(dict(layer.named_buffers()))
    assert torch.unique(layer.bias).numel() <= 8 and layer.bias.shape == model[0].bias.shape
    # 8 shared values for 64 biases: relative error measured 0.05
    assert float((layer.bias - model[0].bias.detach()).norm() / model[0].bias.detach().norm()) < 0.1
    with torch.no_grad():
        assert torch.allclose(layer(x), nn.functional.linear(x, layer.dense_weight(), layer.bias), atol=1e-6)
    assert jc.count_params(small) == jc.count_params(model)
    assert report.compressed_rows[0].detail["bias_bits"] == 3
    path = save(small, report, tmp_path / "c.safetensors", example_inputs=x, compact=True)
    loaded = load(lambda: nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)), path)
    assert jc.state_dict_hash(loaded) == jc.state_dict_hash(small)
    jc.compress_(model, jc.ClusterConfig(bias_bits=3))
    jc.revert_(model)
    assert isinstance(model[0], nn.Linear)
