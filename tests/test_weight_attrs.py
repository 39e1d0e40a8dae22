"""Replacement layers keep what model code reads from the layer they replace (issue 17, point A).

T5's feed-forward reads ``wo.weight.dtype`` and ViT casts its pixels to ``projection.weight.dtype`` on every
forward. Every replacement module answers ``weight`` with a stand-in carrying the original weight's dtype,
shape and device (metadata reads never compute the dense weight), and computes the dense weight only when
its values are used. Tolerances: a value read equals the module's own dense reconstruction to float32
round-off (rel. 1e-6; it is the same computation, cast to the original dtype).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import zoo
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.metrics import call_model, count_params, model_bytes, relative_error
from jupyter_compress.methods._common import LayerStandIn, WeightStandIn, parent_reads_weight
from jupyter_compress.methods.decompose.cp import CPConv2d, cp_conv, cp_factors
from jupyter_compress.methods.decompose.cp import reconstruct as cp_reconstruct
from jupyter_compress.methods.decompose.svd import LowRankLinear, linear_svd, low_rank_linear
from jupyter_compress.methods.decompose.tt import tt_cores, tt_layout
from jupyter_compress.methods.decompose.tt_modules import TTEmbedding, TTLinear, tt_matrix
from jupyter_compress.methods.decompose.tucker import TuckerConv2d, tucker2_conv, tucker2_factors
from jupyter_compress.methods.decompose.tucker import reconstruct as tucker_reconstruct
from jupyter_compress.methods.quantize.qat import FakeQuantLayer
from jupyter_compress.methods.quantize.qlinear import DynamicInt8Linear, WeightOnlyLinear
from jupyter_compress.methods.quantize.qstatic import StaticInt8Layer
from jupyter_compress.methods.quantize.recurrent import DynamicInt8Recurrent
from jupyter_compress.methods.quantize.weight import HalfPrecision

VALUE_TOL = 1e-6  # a value read against the module's own reconstruction (same math, float32 round-off)


@pytest.fixture
def materialize_calls(monkeypatch):
    """Counts every dense materialisation of a stand-in (any replacement class)."""
    calls: list[tuple[str, str]] = []
    classes = {LayerStandIn, HalfPrecision, DynamicInt8Recurrent}
    for cls in classes:
        original = cls.materialize

        def counting(self, key, _original=original):
            calls.append((type(self).__name__, key))
            return _original(self, key)

        monkeypatch.setattr(cls, "materialize", counting)
    return calls


def _tt_linear(old: nn.Linear) -> TTLinear:
    rm, cm, max_ranks = tt_layout(old.out_features, old.in_features, 3)
    ranks = [min(3, m) for m in max_ranks]
    new = TTLinear(old.in_features, old.out_features, rm, cm, (1, *ranks, 1))
    with torch.no_grad():
        for p, c in zip(new.cores, tt_cores(old.weight, rm, cm, ranks)):
            p.copy_(c)
        new.bias.copy_(old.bias)
    new._keep_layer(old)
    return new


def _tt_embedding(old: nn.Embedding) -> TTEmbedding:
    rm, cm, max_ranks = tt_layout(old.num_embeddings, old.embedding_dim, 3)
    ranks = [min(3, m) for m in max_ranks]
    new = TTEmbedding(old.num_embeddings, old.embedding_dim, rm, cm, (1, *ranks, 1))
    with torch.no_grad():
        for p, c in zip(new.cores, tt_cores(old.weight, rm, cm, ranks)):
            p.copy_(c)
    new._keep_layer(old)
    return new


def _static(old: nn.Module) -> StaticInt8Layer:
    w = old.weight.detach().float()
    scale = (w.abs().flatten(1).amax(dim=1) / 127).clamp_min(1e-12)
    return StaticInt8Layer(old, w, old.bias, scale, (0.05, 64), (0.05, 64), relu=False)


def _svd(old: nn.Linear) -> LowRankLinear:
    u, s, vh = linear_svd(old.weight)
    return low_rank_linear(old, u, s, vh, 4)


def _cp(old: nn.Conv2d) -> CPConv2d:
    lam, factors = cp_factors(old.weight, 5, seed=0, n_iter=20)
    return cp_conv(old, lam, factors, 5)


# name: (build the original layer, build its replacement from it, the dense weight the replacement stands for)
CASES = {
    "svd": (lambda: nn.Linear(24, 16), _svd, lambda new: new[1].weight @ new[0].weight),
    "int8-dynamic": (lambda: nn.Linear(24, 16), DynamicInt8Linear.from_linear, lambda new: new.dequantized_weight()),
    "int8-weight": (lambda: nn.Linear(24, 16), lambda old: WeightOnlyLinear(old, 8, 8),
                    lambda new: new.dequantized_weight()),
    "int4-weight": (lambda: nn.Linear(24, 16), lambda old: WeightOnlyLinear(old, 4, 8),
                    lambda new: new.dequantized_weight()),
    "bf16-linear": (lambda: nn.Linear(24, 16), lambda old: HalfPrecision(copy.deepcopy(old).bfloat16(),
                                                                         torch.bfloat16),
                    lambda new: new.layer.weight.float()),
    "fp16-conv": (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1),
                  lambda old: HalfPrecision(copy.deepcopy(old).half(), torch.float16),
                  lambda new: new.layer.weight.float()),
    "tt-linear": (lambda: nn.Linear(24, 16), _tt_linear,
                  lambda new: tt_matrix(list(new.cores))[:16, :24]),
    "tt-embedding": (lambda: nn.Embedding(30, 12, padding_idx=0), _tt_embedding,
                     lambda new: tt_matrix(list(new.cores))[:30, :12]),
    "tucker": (lambda: nn.Conv2d(6, 10, 3, padding=1), lambda old: tucker2_conv(old, tucker2_factors(old.weight),
                                                                                (4, 3)),
               lambda new: tucker_reconstruct(new).float()),
    "cp": (lambda: nn.Conv2d(6, 10, 3, padding=1), _cp, lambda new: cp_reconstruct(new).float()),
    "static-linear": (lambda: nn.Linear(24, 16), _static, lambda new: new.dequantized_weight()),
    "static-conv": (lambda: nn.Conv2d(3, 8, 3, padding=1), _static, lambda new: new.dequantized_weight()),
    "qat": (lambda: nn.Linear(24, 16), lambda old: FakeQuantLayer(copy.deepcopy(old), relu=False),
            lambda new: new.layer.weight),
}
ATTRS = ("in_features", "out_features", "in_channels", "out_channels", "kernel_size", "stride", "padding",
         "dilation", "groups", "padding_mode", "num_embeddings", "embedding_dim", "padding_idx")


@pytest.mark.parametrize("case", list(CASES))
def test_weight_reads_as_the_replaced_layers(case, materialize_calls):
    make_old, make_new, dense = CASES[case]
    old = make_old()
    new = make_new(old)
    w = new.weight
    # metadata as the original, at no cost
    assert isinstance(w, torch.Tensor)
    assert isinstance(w, nn.Parameter) == isinstance(new, FakeQuantLayer)  # QAT's is the float layer's own
    assert (w.dtype, w.shape, w.device) == (old.weight.dtype, old.weight.shape, old.weight.device)
    assert (w.size(), w.dim(), w.ndim, w.numel(), w.is_floating_point(), len(w)) == (
        old.weight.size(), old.weight.dim(), old.weight.ndim, old.weight.numel(), True, len(old.weight))
    assert materialize_calls == []
    for attr in ATTRS:
        if hasattr(old, attr):
            assert getattr(new, attr) == getattr(old, attr), attr
    old_bias, new_bias = getattr(old, "bias", None), getattr(new, "bias", None)
    assert (old_bias is None) == (new_bias is None)
    if old_bias is not None:
        assert new_bias.shape == old_bias.shape and new_bias.dtype == old_bias.dtype
    # values: computed on use, equal to the module's own reconstruction
    with torch.no_grad():
        values = w * 1
        assert type(values) is torch.Tensor and values.dtype == old.weight.dtype
        assert relative_error(dense(new).float(), values) <= VALUE_TOL
    if not isinstance(new, FakeQuantLayer):  # FakeQuantLayer hands out the float layer's own parameter
        assert len(materialize_calls) == 1
    # not state: no key, no parameter, no byte (quantized weights held as buffers count as parameters, once)
    assert not any(isinstance(t, WeightStandIn) for t in new.state_dict().values())
    held = new.held_parameters() if hasattr(new, "held_parameters") else 0
    assert count_params(new) == sum(p.numel() for p in new.parameters()) + held
    assert model_bytes(new) == sum(t.numel() * t.element_size() for t in [*new.parameters(), *new.buffers()])


@pytest.mark.parametrize("case", list(CASES))
def test_replacements_deep_copy_pickle_and_follow_to(case):
    make_old, make_new, _ = CASES[case]
    old = make_old()
    new = make_new(old)
    twin = copy.deepcopy(new)
    assert twin.weight.shape == old.weight.shape and twin.weight.dtype == old.weight.dtype
    buffer = io.BytesIO()
    torch.save(new, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.weight.shape == old.weight.shape
    assert torch.equal(loaded.state_dict()[next(iter(loaded.state_dict()))],
                       new.state_dict()[next(iter(new.state_dict()))])
    if case.startswith(("svd", "tt", "tucker", "cp", "bf16", "fp16")):
        assert twin.double().weight.dtype == torch.float64


def test_standin_is_read_only_and_dies_with_its_module():
    new = _svd(nn.Linear(12, 10))
    with pytest.raises(RuntimeError, match="in place"):
        new.weight.mul_(2)
    with pytest.raises(RuntimeError, match="in place"), torch.no_grad():
        new.weight[0] = 1.0
    w = new.weight
    assert hash(w) == hash(w) and "LowRankLinear" in repr(w)
    del new
    with pytest.raises(RuntimeError, match="no longer exists"):
        w + 1


def test_values_carry_gradients_to_the_factors():
    new = _svd(nn.Linear(12, 10))
    new.weight.sum().backward()
    assert new[0].weight.grad is not None and new[1].weight.grad is not None


def test_recurrent_int8_keeps_the_lstm_attributes_and_weights():
    old = nn.LSTM(6, 8, num_layers=2, batch_first=True)
    new = DynamicInt8Recurrent.from_float(old)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional"):
        assert getattr(new, attr) == getattr(old, attr)
    for name, p in old.named_parameters():
        if name.startswith("weight"):
            w = getattr(new, name)
            assert (w.dtype, w.shape) == (p.dtype, p.shape)
            assert relative_error(new.dequantized()[name], w * 1) <= VALUE_TOL
    assert not hasattr(new, "weight")
    assert copy.deepcopy(new).weight_ih_l0.shape == old.weight_ih_l0.shape


def test_parents_reading_weight_values_are_still_skipped():
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1)
    assert parent_reads_weight(model, "layers.0.linear1") is not None
    assert parent_reads_weight(model, "layers.0.self_attn.out_proj") is not None
    assert parent_reads_weight(model, "layers.0") is None


# ---------------------------------------------------------------------------------------------------------
# Hugging Face models whose forward reads a replaced layer's weight

MODEL_PLANS = {
    "svd": jc.SVDConfig(rank=0.5),
    "quantize.dynamic": jc.DynamicQuantConfig(backend="torch"),
    "quantize.weight": jc.WeightOnlyConfig(bits=4, group_size=16),
    "quantize.half": jc.HalfConfig(),
    "tt": jc.TTConfig(rank=0.5),
    "tucker": jc.TuckerConfig(rank=0.5),
    "quantize.static": jc.StaticQuantConfig(),
}
# layers whose weight the model's forward reads (metadata only): T5's feed-forward output, ViT's patch projection
READ_LAYERS = {"t5_encoder": "encoder.block.0.layer.1.DenseReluDense.wo",
               "vit": "vit.embeddings.patch_embeddings.projection"}


@pytest.mark.parametrize("model_name,method", [(n, m) for n in ("t5_encoder", "vit") for m in MODEL_PLANS
                                               if not (m == "tucker" and n == "t5_encoder")])  # T5: no Conv2d
def test_hf_models_whose_forward_reads_weight_run_after_compression(model_name, method, materialize_calls):
    model, inputs, _ = zoo.make(model_name)
    small, report = jc.compress(model, MODEL_PLANS[method], example_inputs=inputs, measure=False)
    assert report.compressed_rows
    read = small.get_submodule(READ_LAYERS[model_name])
    replaced = READ_LAYERS[model_name] in {r.name for r in report.compressed_rows}
    assert replaced == (type(read) is not type(model.get_submodule(READ_LAYERS[model_name])))
    materialize_calls.clear()
    with torch.no_grad():
        ref, out = call_model(model, inputs), call_model(small, inputs)
    assert materialize_calls == []  # the forward read the stand-ins' metadata only
    def first(o):
        return o[0] if isinstance(o, tuple) else next(iter(o.values()))

    assert first(out).shape == first(ref).shape and torch.isfinite(first(out)).all()
    if replaced:
        assert read.weight.dtype == torch.float32 and read.weight.shape == model.get_submodule(
            READ_LAYERS[model_name]).weight.shape


def test_svd_keeps_the_sequential_state_dict_keys():
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 8))
    small, _ = jc.compress(model, jc.SVDConfig(rank=4, keep_head=False))
    assert isinstance(small[0], LowRankLinear) and isinstance(small[0], nn.Sequential)
    assert sorted(small.state_dict()) == ["0.0.weight", "0.1.bias", "0.1.weight", "2.0.weight", "2.1.bias",
                                          "2.1.weight"]
    conv = nn.Sequential(nn.Conv2d(6, 10, 3, padding=1))
    small, _ = jc.compress(conv, jc.TuckerConfig(rank=(4, 3)))
    assert isinstance(small[0], TuckerConv2d)
    assert sorted(small.state_dict()) == ["0.0.weight", "0.1.weight", "0.2.bias", "0.2.weight"]
