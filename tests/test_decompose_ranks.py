"""Rank rules (hand computations), VBMF, bad input, the analysis cache and the spectrum API."""

from __future__ import annotations

import pytest
import torch
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.methods import decompose
from jupyter_compress.methods.decompose import cache_info, clear_cache, set_cache_limit, vbmf_rank
from jupyter_compress.methods.decompose.ranks import choose_rank, round_rank
from jupyter_compress.methods.decompose.tt import tt_layout, tt_params
from jupyter_compress.methods.decompose.tucker import tucker2_ranks


def _low_rank_plus_noise(m, n, r, noise, seed=0):
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(r, n, generator=g, dtype=torch.float64)
    return signal + noise * torch.randn(m, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("shape,rank", [((100, 200), 7), ((300, 120), 4), ((768, 384), 25)])
def test_vbmf_recovers_the_rank_of_low_rank_plus_noise(shape, rank):
    y = _low_rank_plus_noise(*shape, rank, noise=0.5)
    assert vbmf_rank(torch.linalg.svdvals(y), shape) == rank
    assert vbmf_rank(torch.linalg.svdvals(_low_rank_plus_noise(*shape, 1, noise=1.0) * 0 + torch.randn(*shape)),
                     shape) == 0  # pure noise: nothing to keep


def test_auto_rank_on_a_layer_and_rounding():
    y = _low_rank_plus_noise(96, 64, 5, noise=0.05).float()
    model = nn.Sequential(nn.Linear(64, 96))
    with torch.no_grad():
        model[0].weight.copy_(y)
    _, report = jc.compress(model, jc.SVDConfig(rank="auto"))
    assert report.rows[0].detail["rank"] == 5
    _, report = jc.compress(model, jc.SVDConfig(rank="auto", round_to=8))
    assert report.rows[0].detail["rank"] == 8


def test_rank_rules_by_hand():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])
    assert choose_rank("energy:0.9", 4, 4, s) == 3  # cumulative shares .533, .833, .967, 1.0
    assert choose_rank(0.5, 100, 50, round_to=8) == 16  # floor(5000 / 150 * .5) = 16, already a multiple
    assert choose_rank(0.3, 100, 50, round_to=8) == 8  # floor(1500 / 150) = 10 -> nearest multiple of 8
    assert (round_rank(12, 8, 100), round_rank(11, 8, 100), round_rank(3, 8, 100), round_rank(99, 8, 20)) == (16, 8, 8, 20)
    # Tucker-2 fraction on a 16x8x3x3 kernel, f = 0.5: a^2*1152 + a*320 = 576 -> a = 0.5830 -> (9, 4)
    assert tucker2_ranks(0.5, (16, 8, 3, 3)) == (9, 4)
    assert tucker2_ranks((5, 3), (16, 8, 3, 3)) == (5, 3) and tucker2_ranks(6, (16, 8, 3, 3)) == (6, 6)
    spectra = (torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([3.0, 1.0, 1.0]))
    assert tucker2_ranks("energy:0.9", (4, 3, 3, 3), spectra) == (3, 2)  # shares (.533,.833,.967) and (.818,.909)
    # TT: Linear 32 -> 16 in 3 cores: modes (2, 4, 4) x (2, 2, 4) -> sizes 4, 8, 16; params 4r + 8r^2 + 16r
    rm, cm, max_ranks = tt_layout(32, 16, 3)
    assert (rm, cm, max_ranks) == ((2, 4, 4), (2, 2, 4), [4, 16])
    assert tt_params(rm, cm, [4, 4]) == 16 + 128 + 64


def test_tucker_auto_uses_vbmf_per_mode():
    g = torch.Generator().manual_seed(0)
    core = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    a, b = torch.linalg.qr(torch.randn(32, 4, generator=g, dtype=torch.float64))[0], \
        torch.linalg.qr(torch.randn(24, 3, generator=g, dtype=torch.float64))[0]
    kernel = torch.einsum("or,rshw,is->oihw", a, core, b) + 0.002 * torch.randn(32, 24, 3, 3, generator=g,
                                                                                   dtype=torch.float64)
    conv = nn.Conv2d(24, 32, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(kernel)
    _, report = jc.compress(nn.Sequential(conv), jc.TuckerConfig(rank="auto"))
    assert report.rows[0].detail["rank"] == [4, 3]
    assert report.rows[0].error < 0.05


# -- bad input: one-line errors, the model untouched ---------------------------------------------
@pytest.mark.parametrize("build,message", [
    (lambda: jc.SVDConfig(rank="energy:0"), "Got 'energy:0' instead."),
    (lambda: jc.SVDConfig(rank="energy:1.5"), "'energy:E' with E in (0, 1]"),
    (lambda: jc.TuckerConfig(rank=(3, 4, 5)), "a tuple of 2 ints >= 1 (one per mode)"),
    (lambda: jc.TTConfig(rank=(3, 4, 5)), "has 3 ranks, but 3 cores need 2"),
    (lambda: jc.CPConfig(rank="auto"), "The 'rank' parameter of CPConfig must be an int >= 1 or a float"),
    (lambda: jc.SVDConfig(rank="energy:0.9", solver="randomized"), "needs the full spectrum"),
    (lambda: jc.SVDConfig(rank="sometimes"), "or 'auto' (VBMF). Got 'sometimes' instead."),
])
def test_bad_configs_fail_in_one_line(build, message):
    with pytest.raises(jc.InvalidConfigError) as info:
        build()
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("config,message", [
    (jc.TuckerConfig(rank=17), "larger than layer 'block.conv1' (Conv2d 16 -> 16, 3x3) allows: at most (16, 16)"),
    (jc.TuckerConfig(rank=(4, 20)), "allows: at most (16, 16)"),
    (jc.TTConfig(rank=(2, 900)), "allows: at most (4, 16)"),
])
def test_rank_above_the_maximum_names_it_and_leaves_the_model(config, message):
    model, _ = make("cnn")
    before = jc.state_dict_hash(model)
    step = jc.Step(config, jc.Selector(layers=("block.conv1",) if "Tucker" in type(config).__name__ else ("fc",)))
    with pytest.raises(jc.InvalidConfigError, match="larger than layer") as info:
        jc.compress_(model, step)
    if "TT" not in type(config).__name__:
        assert message in str(info.value)
    assert "at most" in str(info.value) and "\n" not in str(info.value)
    assert jc.state_dict_hash(model) == before
    with pytest.raises(jc.NothingToRevertError):
        jc.revert_(model)


def test_a_layer_type_the_method_does_not_handle_is_named():
    model, _ = make("cnn")
    before = jc.state_dict_hash(model)
    with pytest.raises(jc.LayerNotSupportedError, match="Layer 'fc' is a Linear; tucker handles Conv2d"):
        jc.compress_(model, jc.Step(jc.TuckerConfig(), jc.Selector(layers=("fc",))))
    assert jc.state_dict_hash(model) == before


# -- cache and spectrum -----------------------------------------------------------------------------
def _count_svds(monkeypatch):
    calls = []
    real = decompose.linear_svd
    monkeypatch.setattr(decompose, "linear_svd", lambda w: calls.append(1) or real(w))
    return calls


def test_re_ranking_is_a_truncation_of_one_cached_svd(monkeypatch):
    clear_cache()
    calls = _count_svds(monkeypatch)
    model, _ = make("mlp")
    for rank in (2, 5, 0.3, "energy:0.7", "auto"):
        small, report = jc.compress(model, jc.SVDConfig(rank=rank, keep_head=False))  # compress works on deep copies
    assert len(calls) == 3  # one SVD per layer, whatever the rank and the copy
    analysis = jc.spectrum(model)
    assert len(calls) == 3 and set(analysis) == {"fc1", "fc2", "head"}
    # the spectrum's error curve is the error the method reports
    row = next(r for r in report.rows if r.name == "fc2")
    assert analysis["fc2"].error(row.detail["rank"]) == pytest.approx(row.error, abs=1e-9)
    assert analysis["fc2"].rank_for("auto") == row.detail["rank"]


def test_changing_the_weights_invalidates_the_analysis(monkeypatch):
    clear_cache()
    calls = _count_svds(monkeypatch)
    model, _ = make("mlp")
    s_before = jc.spectrum(model, layers="fc1")["fc1"].singular_values[0]
    with torch.no_grad():
        model.fc1.weight.mul_(2.0)  # in place: bumps torch's version counter
    s_after = jc.spectrum(model, layers="fc1")["fc1"].singular_values[0]
    assert len(calls) == 2
    assert torch.allclose(s_after, 2 * s_before, rtol=1e-5)
    model.fc1.weight.data.add_(1.0)  # through .data: no version bump, caught by the sampled values
    jc.spectrum(model, layers="fc1")
    assert len(calls) == 3


def test_cache_is_bounded_in_bytes(monkeypatch):
    clear_cache()
    try:
        model, _ = make("mlp")
        set_cache_limit(30_000)  # fc1's factors alone take 4 * (32*32 + 32 + 32*64) = 12.4 kB
        jc.spectrum(model)
        info = cache_info()
        assert info["bytes"] <= 30_000 and info["entries"] < 3
        calls = _count_svds(monkeypatch)
        jc.spectrum(model, layers="fc1")  # evicted first (least recently used): computed again
        assert len(calls) == 1
    finally:
        set_cache_limit(512 * 2**20)
        clear_cache()


def test_spectrum_curves_by_hand_and_for_convs():
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0])))
    a = jc.spectrum(nn.Sequential(layer))["0"]
    # tails of (16, 9, 4, 1) over 30: sqrt(30/30, 14/30, 5/30, 1/30, 0)
    expected = torch.tensor([30.0, 14.0, 5.0, 1.0, 0.0]).div(30).sqrt().double()
    assert torch.allclose(a.error_curve(), expected, atol=1e-7)
    assert a.rank_for("energy:0.9") == 3 and a.params(2) == 16
    model, _ = make("cnn")
    conv = jc.spectrum(model, layers="re:block.*")
    assert set(conv) == {"block.conv1", "block.conv2"}
    assert conv["block.conv1"].max_rank == (16, 16)
    assert conv["block.conv1"].to_dict()["error_curve"][0][0] == pytest.approx(1.0)


def _zeros_model(dtype):
    """Linears (and a transformers Conv1D) whose weights hold exact zeros and a rank deficit, so that the
    factors' non-zero counts differ from their sizes; a bias with zeros; the last layer a narrow head."""
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(24, 40), nn.ReLU(), Conv1D(32, 40), nn.ReLU(), nn.Linear(32, 30, bias=False),
                          nn.ReLU(), nn.Linear(30, 6))
    with torch.no_grad():
        for layer in (model[0], model[2], model[4], model[6]):
            w = layer.weight
            low = torch.randn(w.shape[0], 5, generator=g) @ torch.randn(5, w.shape[1], generator=g)
            w.copy_(low + 0.05 * torch.randn(w.shape, generator=g))
            w[:3] = 0.0  # whole zero rows: zero singular values, zero factor rows / columns
            w[:, -2:] = 0.0
            w[4, 7] = 0.0
        model[0].bias[::3] = 0.0
    return model.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_re_ranking_from_the_cache_builds_what_a_cold_run_builds(dtype):
    """Layers built from cached factors (another rank ran first) are bit for bit those a cold run builds at
    the same rank (values, dtype, strides, attributes), and the report rows are equal; the cached counts
    (non-zeros of the new factors per rank, the old layer's) are what counting the built layers gives."""
    from jupyter_compress.core.metrics import count_nonzero, count_params, model_bytes, single_thread

    model = _zeros_model(dtype)
    for rank in (3, 0.3, "energy:0.8", 12):
        clear_cache()
        jc.compress(model, jc.SVDConfig(rank=0.6))  # fills the cache; a different rank
        before = cache_info()["misses"]
        warm, warm_report = jc.compress(model, jc.SVDConfig(rank=rank))
        assert cache_info()["misses"] == before  # nothing recomputed: every analysis came from the cache
        clear_cache()
        cold, cold_report = jc.compress(model, jc.SVDConfig(rank=rank))
        assert warm_report.rows == cold_report.rows
        compressed = [r for r in cold_report.rows if r.skipped is None]
        assert {r.name for r in compressed} == {"0", "2", "4"}  # the head "6" is kept (keep_head)
        for row in compressed:
            a, b = warm.get_submodule(row.name), cold.get_submodule(row.name)
            assert type(a) is type(b) and vars(a).keys() == vars(b).keys()
            assert [vars(m).keys() for m in a] == [vars(m).keys() for m in b]
            for (ka, ta), (kb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
                assert ka == kb and ta.dtype == tb.dtype == dtype and ta.stride() == tb.stride()
                assert torch.equal(ta, tb)
            old = model.get_submodule(row.name)
            # and both are the plain formula on a fresh SVD: sqrt(S_r) V_r^T and U_r sqrt(S_r), in the layer's dtype
            with single_thread():  # as the cache computes it
                u, sv, vh = decompose.linear_svd(old.weight)
            if row.name == "2":  # the Conv1D: factored as stored (in, out), then swapped into Linear layout
                u, vh = vh.T, u.T
            r = row.detail["rank"]
            assert torch.equal(b[0].weight, (sv[:r].sqrt()[:, None] * vh[:r]).to(dtype))
            assert torch.equal(b[1].weight, (u[:, :r] * sv[:r].sqrt()[None, :]).to(dtype))
            assert (row.nonzeros_after, row.params_after, row.bytes_after) == (
                count_nonzero(b), count_params(b), model_bytes(b))
            assert (row.nonzeros_before, row.params_before, row.bytes_before) == (
                count_nonzero(old), count_params(old), model_bytes(old))
            assert row.nonzeros_after < row.params_after  # the zeros above reach the factors


def test_replacement_linears_are_what_the_constructor_makes():
    """The two Linears of a LowRankLinear skip nn.Linear's random init; otherwise they are ordinary ones."""
    from jupyter_compress.methods.decompose.svd import low_rank_linear, matrix_factors

    old = nn.Linear(12, 10)
    u, s, vh = matrix_factors(old.weight)
    new = low_rank_linear(old, u, s, vh, 4)
    for layer, (fan_in, fan_out, bias) in zip(new, ((12, 4, False), (4, 10, True)), strict=True):
        ref = nn.Linear(fan_in, fan_out, bias=bias)
        assert type(layer) is nn.Linear and list(vars(layer)) == list(vars(ref)) and repr(layer) == repr(ref)
        assert list(layer._parameters) == list(ref._parameters)
        assert all(type(p) is nn.Parameter and p.requires_grad for p in layer.parameters())
    assert torch.equal(new[1].bias, old.bias) and new[1].bias.data_ptr() != old.bias.data_ptr()
    seen = []
    handle = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, param: seen.append(name))
    try:
        low_rank_linear(old, u, s, vh, 4)
        built = list(seen)
        seen.clear()
        nn.Linear(12, 4, bias=False), nn.Linear(4, 10)
    finally:
        handle.remove()
    assert built == seen == ["weight", "weight", "bias"]  # a global registration hook sees what the constructor shows
    children = []
    handle = torch.nn.modules.module.register_module_module_registration_hook(
        lambda module, name, child: children.append(name))
    try:
        again = low_rank_linear(old, u, s, vh, 4)
    finally:
        handle.remove()
    assert children == ["0", "1"] and list(again._modules) == ["0", "1"]


def test_layer_counts_agree_with_the_single_counts():
    from jupyter_compress.core.metrics import count_nonzero, count_params, layer_counts, model_bytes

    tied = nn.Sequential(nn.Linear(5, 5), nn.BatchNorm1d(5), nn.Linear(5, 5).half())
    tied[2].weight = tied[0].weight  # tied: counted once
    with torch.no_grad():
        tied[0].weight[0] = 0.0
    model, _ = make("cnn")
    for module in (tied, model, nn.ReLU(), nn.Linear(3, 2, bias=False)):
        expected = (count_params(module), count_nonzero(module), model_bytes(module))
        assert layer_counts(module) == expected
        assert layer_counts(module, nonzeros=False) == (expected[0], None, expected[2])
