"""Basic measures in the core, against hand computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.metrics import bytes_by_dtype, relative_error


def test_params_and_bytes_by_dtype():
    model = nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), nn.Linear(20, 5).half())
    # Linear(10,20): 220 float32; BatchNorm1d: 40 float32 params + 40 float32 buffers + 1 int64 counter
    # Linear(20,5) in half: 105 float16
    assert jc.count_params(model) == 220 + 40 + 105
    assert bytes_by_dtype(model) == {"float32": (220 + 40 + 40) * 4, "int64": 8, "float16": 105 * 2}
    assert jc.model_bytes(model, buffers=False) == (220 + 40) * 4 + 105 * 2


def test_tied_parameters_are_counted_once():
    emb = nn.Embedding(100, 16)
    head = nn.Linear(16, 100, bias=False)
    head.weight = emb.weight
    assert jc.count_params(nn.ModuleList([emb, head])) == 1600


def test_count_nonzero():
    lin = nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 0] = 3.0
    assert jc.count_nonzero(lin) == 1 + int(torch.count_nonzero(lin.bias))


def test_accuracy_by_hand():
    class Fixed(nn.Module):
        def forward(self, x):
            return x  # logits are the inputs

    logits = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    targets = torch.tensor([0, 1, 1, 1])
    assert jc.accuracy(Fixed(), logits, targets, batch_size=3) == 0.75
    with pytest.raises(ValueError, match="differ in length"):
        jc.accuracy(Fixed(), logits, targets[:2])


def test_latency_is_ordered_and_restores_training_flags():
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
    model.train()
    lat = jc.measure_latency(model, torch.randn(4, 8), repeats=9, warmup=2)
    assert 0 < lat.min_ms <= lat.median_ms <= lat.p95_ms
    assert lat.repeats == 9 and lat.batch_size == 4
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        jc.measure_latency(model, torch.randn(4, 8), repeats=0)


def test_state_dict_hash_sees_a_single_bit():
    model = nn.Linear(4, 4)
    h = jc.state_dict_hash(model)
    assert jc.state_dict_hash(model) == h
    with torch.no_grad():
        flat = model.weight.view(-1).view(torch.int32)
        flat[3] ^= 1  # flip the lowest mantissa bit of one weight
    assert jc.state_dict_hash(model) != h


def test_relative_error():
    a = torch.tensor([3.0, 4.0])
    assert relative_error(a, torch.zeros(2)) == 1.0
    assert relative_error(a, a) == 0.0
    assert relative_error(a, torch.tensor([3.0, 3.0])) == pytest.approx(0.2)
