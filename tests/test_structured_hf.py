"""Structured pruning of Hugging Face models built from configs (tests/zoo.py) with their natural inputs.

Whole attention heads and MLP neurons are removed; the hidden size (embeddings, layer norms, residual stream)
is kept, so tied weights stay tied and ``model(**inputs)`` / ``generate()`` work on the pruned model. Removing
a head / neuron must equal zeroing it in the dense model (float32 tolerance: sums run in another order).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.metrics import call_model, primary_output

pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")
sys.path.insert(0, str(Path(__file__).parent))
import zoo  # noqa: E402

MODELS = ("bert", "distilbert", "gpt2", "t5_encoder", "vit")


def _flops(model: nn.Module, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        call_model(model, inputs)
    return counter.get_total_flops()


def _output(model: nn.Module, inputs) -> torch.Tensor:
    with torch.no_grad():
        return primary_output(call_model(model, inputs))


@pytest.fixture(scope="module")
def pruned():
    out = {}
    for name in MODELS:
        model, inputs, _ = zoo.make(name)
        before = jc.state_dict_hash(model)
        small, report = jc.compress(model, jc.StructuredPruneConfig(amount=0.3), example_inputs=inputs,
                                    measure=False)
        out[name] = (model, inputs, small, report, before)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_prunes_with_natural_inputs(pruned, name):
    model, inputs, small, report, before = pruned[name]
    assert jc.state_dict_hash(model) == before  # the original is untouched
    assert jc.count_params(small) < jc.count_params(model)
    assert report.model_params_after < report.model_params_before
    assert _flops(small, inputs) < _flops(model, inputs)
    assert _output(small, inputs).shape == _output(model, inputs).shape
    if not isinstance(inputs, torch.Tensor):
        with torch.no_grad():
            small(**inputs)  # keyword inputs, as users call it
    assert report.compressed_rows


@pytest.mark.parametrize("name", MODELS)
def test_hidden_size_and_ties_kept(pruned, name):
    model, _, small, _, _ = pruned[name]
    widths = {n: tuple(p.shape) for n, p in model.named_parameters()
              if isinstance(model.get_submodule(n.rpartition(".")[0]), (nn.Embedding, nn.LayerNorm))
              or "Norm" in type(model.get_submodule(n.rpartition(".")[0])).__name__}
    assert widths and widths == {n: tuple(p.shape) for n, p in small.named_parameters() if n in widths}
    if name == "gpt2":
        assert small.lm_head.weight is small.transformer.wte.weight


def _attention_modules(model):
    for module in model.modules():
        heads = next((getattr(module, a) for a in ("num_attention_heads", "num_heads", "n_heads")
                      if isinstance(getattr(module, a, None), int)), None)
        size = next((getattr(module, a) for a in ("attention_head_size", "head_dim", "key_value_proj_dim")
                     if isinstance(getattr(module, a, None), int)), None)
        if heads is not None and size is not None and any(True for _ in module.children()):
            yield module, heads, size


@pytest.mark.parametrize("name", ["bert", "distilbert", "gpt2", "vit"])
def test_heads_removed_and_attributes_follow(pruned, name):
    _, _, small, report, _ = pruned[name]
    found = list(_attention_modules(small))
    assert found
    for module, heads, size in found:
        assert heads == 3  # 4 heads, 30% -> one removed per layer
        if name == "gpt2":
            assert module.c_attn.weight.shape[1] == module.c_attn.nf == 3 * heads * size == 3 * module.split_size
            assert module.c_proj.weight.shape[0] == heads * size
        else:
            projections = [c for c in module.children() if isinstance(c, nn.Linear)]
            assert len([p for p in projections if p.out_features == heads * size]) == 3  # q, k, v
            assert all(heads * size in (p.out_features, p.in_features) for p in projections)  # and the output
        for attr in ("all_head_size", "inner_dim"):
            if hasattr(module, attr):
                assert getattr(module, attr) == heads * size
    assert any(r.detail.get("removed_heads") == 1 for r in report.rows if r.detail)


def test_t5_heads_kept_mlp_pruned(pruned):
    model, _, small, report, _ = pruned["t5_encoder"]
    for block, old in zip(small.encoder.block, model.encoder.block):
        attn = block.layer[0].SelfAttention
        assert attn.n_heads == 4 and attn.q.out_features == attn.inner_dim == 32
        assert block.layer[1].DenseReluDense.wi.out_features < old.layer[1].DenseReluDense.wi.out_features
    reasons = [r.skipped for r in report.rows if r.name.endswith("SelfAttention.q")]
    assert reasons and all("heads kept" in r for r in reasons)


def test_gpt2_generate_after_head_pruning(pruned):
    model, inputs, small, _, _ = pruned["gpt2"]
    with torch.no_grad():
        out = small.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=3,
                             do_sample=False, pad_token_id=0)
    assert out.shape == (inputs["input_ids"].shape[0], inputs["input_ids"].shape[1] + 3)


def _kept(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Indices of the rows of ``original`` that ``pruned`` kept."""
    return [int(torch.nonzero((original == row).all(dim=1))[0]) for row in pruned]


def test_gpt2_removed_heads_and_neurons_equal_zeroed():
    model, inputs, _ = zoo.make("gpt2")
    small, report = jc.compress(model, jc.StructuredPruneConfig(amount=0.5), example_inputs=inputs, measure=False)
    zeroed = copy.deepcopy(model)
    for old, new, target in zip(model.transformer.h, small.transformer.h, zeroed.transformer.h):
        assert new.attn.num_heads == 2 and new.attn.split_size == 16
        kept = _kept(old.attn.c_proj.weight, new.attn.c_proj.weight)  # c_proj rows: (heads x head_dim)
        assert sorted({k // 8 for k in kept}) == sorted(kept[i] // 8 for i in range(0, 16, 8))
        dropped = sorted(set(range(32)) - set(kept))
        neurons = _kept(old.mlp.c_fc.weight.t(), new.mlp.c_fc.weight.t())
        cut = sorted(set(range(128)) - set(neurons))
        with torch.no_grad():
            target.attn.c_proj.weight[dropped] = 0
            target.mlp.c_fc.weight[:, cut] = 0
            target.mlp.c_fc.bias[cut] = 0
    torch.testing.assert_close(_output(small, inputs), _output(zeroed, inputs), rtol=1e-4, atol=1e-5)
    assert small.lm_head.weight is small.transformer.wte.weight
    assert jc.count_params(small) < jc.count_params(model)


def test_gpt2_global_scope_and_replay_deterministic():
    model, inputs, _ = zoo.make("gpt2")
    config = jc.StructuredPruneConfig(amount=0.4, scope="global", importance="l2")
    a, _ = jc.compress(model, config, example_inputs=inputs, measure=False)
    b, _ = jc.compress(model, config, example_inputs=inputs, measure=False)
    assert jc.state_dict_hash(a) == jc.state_dict_hash(b)
    assert jc.count_params(a) < jc.count_params(model)
    _output(a, inputs)


def test_tied_lm_stays_tied_and_never_grows():
    model, inputs, _ = zoo.make("tied_lm")
    small, report = jc.compress(model, jc.StructuredPruneConfig(amount=0.5), example_inputs=inputs, measure=False)
    assert small.head.weight is small.embed.weight
    assert jc.count_params(small) < jc.count_params(model)
    assert small.mlp[0].out_features == 32
    assert any("tied" in (r.skipped or "") for r in report.rows)


def test_heads_false_prunes_mlp_only():
    model, inputs, _ = zoo.make("gpt2")
    small, _ = jc.compress(model, jc.StructuredPruneConfig(amount=0.3, heads=False), example_inputs=inputs,
                           measure=False)
    assert all(b.attn.num_heads == 4 and b.attn.c_attn.nf == 96 for b in small.transformer.h)
    assert all(b.mlp.c_fc.nf < 128 for b in small.transformer.h)


class _InferenceOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        if torch.is_grad_enabled():
            raise RuntimeError("this layer runs without autograd only")
        return self.proj(x)


def test_untraceable_refused_in_one_line_naming_the_module():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), _InferenceOnly(), nn.Linear(16, 4)).eval()
    with pytest.raises(jc.CompressError) as info:
        jc.compress(model, jc.StructuredPruneConfig(amount=0.5), example_inputs=torch.randn(2, 8), measure=False)
    message = str(info.value)
    assert "\n" not in message
    assert "RuntimeError: this layer runs without autograd only" in message and "'2' (_InferenceOnly)" in message


def test_coupled_groups_with_keyword_inputs():
    from jupyter_compress.methods._structured_plan import coupled_groups

    model, inputs, _ = zoo.make("gpt2")
    names = [n for n, m in model.named_modules() if n.endswith(("c_fc", "c_attn"))]
    groups = coupled_groups(model, inputs, names)
    assert ["transformer.h.0.mlp.c_fc"] in groups


def test_taylor_importance_with_keyword_batches():
    model, inputs, _ = zoo.make("distilbert")
    data = [(inputs, torch.tensor([0, 1, 2, 0]))]
    small, _ = jc.compress(model, jc.StructuredPruneConfig(amount=0.3, importance="taylor"), example_inputs=inputs,
                           data=data, measure=False)
    assert jc.count_params(small) < jc.count_params(model)
    assert all(layer.attention.n_heads == 3 for layer in small.distilbert.transformer.layer)
