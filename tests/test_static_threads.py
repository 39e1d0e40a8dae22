"""Static int8 (which traces the model with torch.fx to find Conv-BatchNorm-ReLU fusions) from several threads
at once, and on a model left in training mode."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import jupyter_compress as jc

PLAN = jc.Plan.from_yaml("steps: [{method: quantize.static}]")


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()


def test_static_int8_from_four_threads_at_once_matches_one_thread():
    x = torch.randn(4, 3, 8, 8)
    expected = jc.state_dict_hash(jc.compress(_cnn(), PLAN, data=[x], example_inputs=x)[0])
    results, errors = [], []
    # built here: torch's global seed is shared by threads, so models built inside them would differ
    models = [[_cnn() for _ in range(3)] for _ in range(4)]

    def work(mine):
        try:
            for model in mine:
                small, report = jc.compress(model, PLAN, data=[x], example_inputs=x)
                results.append((jc.state_dict_hash(small), any(r.detail.get("fused") == "conv+bn+relu"
                                                              for r in report.rows)))
        except Exception as exc:  # the failure this guards against: torch.fx's trace seen by other threads
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # every thread's run fused Conv-BN-ReLU (the trace worked) and gave the single-threaded weights
    assert results == [(expected, True)] * 12


def test_a_training_mode_cnn_gets_a_one_line_error_and_is_unchanged():
    model = _cnn().train()
    x = torch.randn(4, 3, 8, 8)
    before = jc.state_dict_hash(model)
    with pytest.raises(jc.CompressError, match=r"call model\.eval\(\) first") as info:
        jc.compress_(model, PLAN, data=[x], example_inputs=x)
    assert "\n" not in str(info.value)
    assert jc.state_dict_hash(model) == before and model.training
    with pytest.raises(jc.NothingToRevertError):
        jc.revert_(model)
