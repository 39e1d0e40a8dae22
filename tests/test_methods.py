"""Numbers of the two first methods, checked against hand computations."""

from __future__ import annotations

import pytest
import torch
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.metrics import sparse_encoding_bytes
from jupyter_compress.methods.decompose import choose_rank, linear_svd


# -- pruning -------------------------------------------------------------------
@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9])
def test_layer_scope_zeroes_exactly_the_smallest_fraction(amount):
    model, _ = make("mlp")
    small, report = jc.compress(model, jc.PruneConfig(amount=amount))
    for name in ("fc1", "fc2", "head"):
        w_old = model.get_submodule(name).weight
        w_new = small.get_submodule(name).weight
        zeros = int((w_new == 0).sum())
        assert zeros == round(amount * w_old.numel())
        kept = w_new != 0
        if 0 < zeros < w_old.numel():  # every pruned magnitude <= every kept magnitude
            assert w_old.abs()[~kept].max() <= w_old.abs()[kept].min()
        assert torch.equal(w_new[kept], w_old[kept])  # kept weights are not altered
        assert torch.equal(small.get_submodule(name).bias, model.get_submodule(name).bias)
    assert report.model_params_after == report.model_params_before  # dense tensors: no fewer parameters


def test_global_scope_ranks_all_layers_together():
    model, _ = make("mlp")
    small, report = jc.compress(model, jc.PruneConfig(amount=0.6, scope="global"))
    weights = [model.get_submodule(n).weight for n in ("fc1", "fc2", "head")]
    pruned = [small.get_submodule(n).weight for n in ("fc1", "fc2", "head")]
    total = sum(w.numel() for w in weights)
    assert sum(int((p == 0).sum()) for p in pruned) == round(0.6 * total)
    threshold = max(w.abs()[p == 0].max() for w, p in zip(weights, pruned))
    assert all(w.abs()[p != 0].min() >= threshold for w, p in zip(weights, pruned))


def test_random_criterion_is_seeded_and_exact_in_count():
    model, _ = make("mlp")
    plan = jc.Plan.of(jc.PruneConfig(amount=0.5, criterion="random"), seed=5)
    a, _ = jc.compress(model, plan)
    b, _ = jc.compress(model, plan)
    c, _ = jc.compress(model, jc.Plan.of(jc.PruneConfig(amount=0.5, criterion="random"), seed=6))
    assert jc.state_dict_hash(a) == jc.state_dict_hash(b) != jc.state_dict_hash(c)
    assert int((a.fc1.weight == 0).sum()) == 32 * 64 // 2
    magnitude, _ = jc.compress(model, jc.PruneConfig(amount=0.5))
    assert not torch.equal(a.fc1.weight != 0, magnitude.fc1.weight != 0)


def test_pruned_model_equals_dense_model_with_zeroed_weights():
    model, x = make("cnn")
    small, _ = jc.compress(model, jc.PruneConfig(amount=0.5))
    manual, _ = make("cnn")
    with torch.no_grad():
        for name, module in manual.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.mul_(small.get_submodule(name).weight != 0)
        assert torch.equal(manual(x), small(x))


def test_pruning_report_is_honest_about_speed_and_gives_sparse_size():
    model, _ = make("mlp")
    _, report = jc.compress(model, jc.PruneConfig(amount=0.9))
    assert any("no faster" in n for n in report.notes)
    for row in report.rows:
        assert row.sparse_bytes is not None and row.sparse_bytes < row.bytes_after
        assert row.detail["sparsity"] == pytest.approx(0.9, abs=0.01)


def test_sparse_encoding_bytes_by_hand():
    t = torch.zeros(4, 8)
    t[0, 0] = t[1, 3] = t[3, 7] = 1.0  # 3 non-zeros of 32 float32 values
    # csr: 3 * (4 + 4) + (4 + 1) * 4 = 44; bitmap: 3 * 4 + 32 / 8 = 16; dense: 128
    assert sparse_encoding_bytes(t) == (16, "bitmap")
    assert sparse_encoding_bytes(torch.ones(4, 8)) == (128, "dense")


# -- SVD -------------------------------------------------------------------------
def test_full_svd_reconstructs_the_weight():
    w = torch.randn(48, 32)
    u, s, vh = linear_svd(w)
    # float32 SVD of a 48x32 matrix: reconstruction within ~1e-6 relative; 1e-5 leaves margin
    assert jc.core.metrics.relative_error(w, u @ torch.diag(s) @ vh) < 1e-5


@pytest.mark.parametrize("rank", [3, 0.25, "energy:0.8"])
def test_truncated_error_equals_the_tail_of_the_spectrum(rank):
    model, x = make("mlp")
    small, report = jc.compress(model, jc.SVDConfig(rank=rank), )
    s = torch.linalg.svdvals(model.fc2.weight.detach().double())
    row = next(r for r in report.rows if r.name == "fc2")
    r = row.detail["rank"]
    tail = float((s[r:] ** 2).sum().sqrt() / (s**2).sum().sqrt())
    factors = small.fc2
    approx = factors[1].weight @ factors[0].weight
    # the factors are float32: their product matches the spectrum's tail to ~1e-6; 1e-4 allows for that
    assert jc.core.metrics.relative_error(model.fc2.weight, approx) == pytest.approx(tail, abs=1e-4)
    assert row.error == pytest.approx(tail, abs=1e-6)
    assert factors[0].weight.shape == (r, 64) and factors[1].weight.shape == (48, r)
    assert jc.count_params(factors) == r * (64 + 48) + 48


def test_rank_rules_match_a_hand_computation():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])
    # squared: 16, 9, 4, 1 (total 30); cumulative shares .533, .833, .967, 1.0
    assert choose_rank("energy:0.5", 4, 4, s) == 1
    assert choose_rank("energy:0.9", 4, 4, s) == 3
    assert choose_rank("energy:0.8333333333333334", 4, 4, s) == 2
    assert choose_rank("energy:1.0", 4, 4, s) == 4
    assert choose_rank(0.5, 100, 50) == 16  # floor(0.5 * 5000 / 150)
    assert choose_rank(7, 100, 50) == 7


def test_svd_skips_layers_it_cannot_split_and_says_why():
    model, x = make("torch_encoder")
    small, report = jc.compress(model, jc.SVDConfig(rank=0.5))
    skipped = {r.name: r.skipped for r in report.skipped_rows}
    assert "MultiheadAttention reads" in skipped["encoder.self_attn.out_proj"]
    assert "TransformerEncoderLayer reads" in skipped["encoder.linear1"]
    assert {r.name for r in report.compressed_rows} == {"head"}
    with torch.no_grad():
        assert small(x).shape == model(x).shape


def test_svd_rank_that_saves_nothing_is_skipped_not_grown():
    model, _ = make("mlp")
    _, report = jc.compress(model, jc.SVDConfig(rank=10, keep_head=False))  # head 48 -> 10: rank 10 cannot save
    head = next(r for r in report.rows if r.name == "head")
    assert head.skipped and "would not reduce parameters" in head.skipped
    assert head.params_after == head.params_before


def test_svd_rows_count_nonzeros_of_the_current_weights_even_when_cached():
    # the old layer's non-zero count is cached per weight content: a change to the weights must be seen
    model, _ = make("mlp")
    _, first = jc.compress(model, jc.SVDConfig(rank=0.5))
    with torch.no_grad():
        model.fc1.weight[:10] = 0  # an in-place edit: new content, new digest
    _, second = jc.compress(model, jc.SVDConfig(rank=0.5))
    rows = {r.name: r for r in second.rows}
    assert rows["fc1"].nonzeros_before == jc.count_nonzero(model.fc1) == first.rows[0].nonzeros_before - 10 * 32
