"""Tucker-2, CP, Tensor-Train and SVD numerics, checked against direct computations with real tensorly."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.metrics import relative_error
from jupyter_compress.methods.decompose import TTEmbedding, TTLinear, randomized_linear_svd
from jupyter_compress.methods.decompose.tt_modules import tt_matrix

# float32 factors of small layers: products match to ~1e-6 relative; 1e-5 leaves margin.
F32_TOL = 1e-5

CONVS = {
    "plain": dict(kernel_size=3, padding=1),
    "strided": dict(kernel_size=3, stride=2, padding=1),
    "dilated": dict(kernel_size=3, dilation=2, padding=2),
    "rect_same": dict(kernel_size=(3, 5), padding="same"),
    "reflect": dict(kernel_size=3, padding=1, padding_mode="reflect"),
}


def _conv_model(**kw) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(6, 10, bias=True, **kw)).eval()


@pytest.mark.parametrize("variant", list(CONVS))
def test_full_rank_tucker2_is_the_same_convolution(variant):
    model = _conv_model(**CONVS[variant])
    x = torch.randn(2, 6, 9, 11)
    _, report = jc.compress(model, jc.TuckerConfig(rank=(10, 6)))
    # full ranks (10, 6) store more than the original, so the method rightly skips; build it directly
    assert report.rows[0].skipped and "would not reduce" in report.rows[0].skipped
    from jupyter_compress.methods.decompose.tucker import tucker2_conv, tucker2_factors

    seq = tucker2_conv(model[0], tucker2_factors(model[0].weight), (10, 6))
    with torch.no_grad():
        assert relative_error(model(x), seq(x)) < F32_TOL


@pytest.mark.parametrize("variant", list(CONVS))
def test_truncated_tucker2_equals_a_conv_with_the_reconstructed_kernel(variant):
    model = _conv_model(**CONVS[variant])
    x = torch.randn(2, 6, 9, 11)
    small, report = jc.compress(model, jc.TuckerConfig(rank=(4, 3)))
    seq = small[0]
    assert [type(m) for m in seq] == [nn.Conv2d] * 3 and seq[1].weight.shape == (4, 3, *model[0].kernel_size)
    kernel = torch.einsum("or,rshw,si->oihw", seq[2].weight[:, :, 0, 0], seq[1].weight, seq[0].weight[:, :, 0, 0])
    ref = nn.Conv2d(6, 10, **CONVS[variant])
    with torch.no_grad():
        ref.weight.copy_(kernel)
        ref.bias.copy_(model[0].bias)
        assert relative_error(ref(x), seq(x)) < F32_TOL
    assert report.rows[0].error == pytest.approx(relative_error(model[0].weight, kernel), abs=1e-5)
    assert report.rows[0].detail["rank"] == [4, 3]
    assert report.rows[0].params_after == 6 * 3 + 3 * 4 * seq[1].weight[0, 0].numel() + 4 * 10 + 10


@pytest.mark.parametrize("variant", list(CONVS))
def test_cp_sequence_equals_a_conv_with_the_reconstructed_kernel(variant):
    model = _conv_model(**CONVS[variant])
    x = torch.randn(2, 6, 9, 11)
    small, report = jc.compress(model, jc.CPConfig(rank=5))
    first, vertical, horizontal, last = small[0]
    assert vertical.groups == horizontal.groups == 5
    kernel = torch.einsum("or,ri,rh,rw->oihw", last.weight[:, :, 0, 0], first.weight[:, :, 0, 0],
                          vertical.weight[:, 0, :, 0], horizontal.weight[:, 0, 0, :])
    ref = nn.Conv2d(6, 10, **CONVS[variant])
    with torch.no_grad():
        ref.weight.copy_(kernel)
        ref.bias.copy_(model[0].bias)
        assert ref(x).shape == small(x).shape
        assert relative_error(ref(x), small(x)) < F32_TOL
    kh, kw = model[0].kernel_size
    assert report.rows[0].params_after == 5 * (6 + kh + kw + 10) + 10


def test_cp_recovers_an_exact_low_rank_kernel():
    g = torch.Generator().manual_seed(1)
    a, b, c, d = (torch.randn(n, 3, generator=g) for n in (12, 8, 3, 3))
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("or,ir,hr,wr->oihw", a, b, c, d))
    _, report = jc.compress(nn.Sequential(conv), jc.CPConfig(rank=3, n_iter=500))
    # ALS on an exactly rank-3 tensor converges to it; 1e-3 allows for the stopping tolerance
    assert report.rows[0].error < 1e-3


def test_grouped_and_depthwise_convs_are_skipped_and_named():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 3, groups=2), nn.Conv2d(16, 32, 3))
    for config in (jc.TuckerConfig(rank=0.5), jc.CPConfig(rank=0.5)):
        small, report = jc.compress(model, config)
        skipped = {r.name: r.skipped for r in report.skipped_rows}
        assert "depthwise convolution (groups=8)" in skipped["0"]
        assert "grouped convolution (groups=2)" in skipped["1"]
        assert [r.name for r in report.compressed_rows] == ["2"]
        assert small[0] is not model[0] and torch.equal(small[0].weight, model[0].weight)


@pytest.mark.parametrize("shape", [(40, 24), (13, 10), (30, 64)])
def test_full_rank_tt_linear_reconstructs_and_computes_the_same(shape):
    out_f, in_f = shape
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(in_f, out_f))
    from jupyter_compress.methods.decompose.tt import tt_cores, tt_layout

    rm, cm, max_ranks = tt_layout(out_f, in_f, 3)
    cores = tt_cores(model[0].weight, rm, cm, max_ranks)
    layer = TTLinear(in_f, out_f, rm, cm, (1, *max_ranks, 1))
    with torch.no_grad():
        for p, c in zip(layer.cores, cores):
            p.copy_(c)
        layer.bias.copy_(model[0].bias)
        assert relative_error(model[0].weight, tt_matrix(list(layer.cores))[:out_f, :in_f]) < F32_TOL
        x = torch.randn(2, 5, in_f)
        assert relative_error(model(x), layer(x)) < F32_TOL


def test_truncated_tt_linear_and_embedding_match_their_reconstructed_matrices():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(60, 24), nn.Linear(24, 36))
    small, report = jc.compress(model, jc.TTConfig(rank=3))
    emb, lin = small[0], small[1]
    assert isinstance(emb, TTEmbedding) and isinstance(lin, TTLinear)
    tokens = torch.randint(0, 60, (3, 7))
    with torch.no_grad():
        table = tt_matrix(list(emb.cores))[:60, :24]
        assert torch.allclose(emb(tokens), table[tokens], atol=1e-6)
        w = tt_matrix(list(lin.cores))[:36, :24]
        h = torch.randn(3, 7, 24)
        assert torch.allclose(lin(h), h @ w.T + lin.bias, atol=1e-5)
    for row, old in zip(report.rows, (model[0].weight, model[1].weight)):
        assert row.detail["rank"] == [3, 3]
        approx = tt_matrix(list(small.get_submodule(row.name).cores))[: old.shape[0], : old.shape[1]]
        assert row.error == pytest.approx(relative_error(old, approx), abs=1e-6)
        assert row.params_after < row.params_before


def test_randomized_svd_is_exact_on_a_low_rank_matrix_and_seeded():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 6, generator=g) @ torch.randn(6, 64, generator=g)
    u, s, vh = randomized_linear_svd(w, 6, seed=3)
    # rank-6 matrix, 6 leading triplets: float32 round-off only
    assert relative_error(w, u @ torch.diag(s) @ vh) < F32_TOL
    model = nn.Sequential(nn.Linear(64, 96))
    with torch.no_grad():
        model[0].weight.copy_(w)
    a, ra = jc.compress(model, jc.Plan.of(jc.SVDConfig(rank=6, solver="randomized"), seed=1))
    b, _ = jc.compress(model, jc.Plan.of(jc.SVDConfig(rank=6, solver="randomized"), seed=1))
    assert jc.state_dict_hash(a) == jc.state_dict_hash(b)
    assert ra.rows[0].error < F32_TOL and ra.rows[0].detail["solver"] == "randomized"


def test_replacements_export_to_onnx_and_agree():
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.Flatten(), nn.Linear(16 * 6 * 6, 40)).eval()
    x = torch.randn(2, 8, 6, 6)
    plan = jc.Plan.of(jc.Step(jc.TuckerConfig(rank=0.5), jc.Selector(layers=("0",))),
                      jc.Step(jc.CPConfig(rank=0.5), jc.Selector(layers=("2",))),
                      jc.TTConfig(rank=0.5, keep_head=False))  # the output Linear too
    small, report = jc.compress(model, plan)
    assert len(report.compressed_rows) == 3
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(small, (x,), f, dynamo=False, input_names=["x"])
    out = ort.InferenceSession(f.getvalue()).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert relative_error(small(x), torch.from_numpy(out)) < F32_TOL
