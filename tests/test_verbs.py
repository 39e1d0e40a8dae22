"""compress / compress_ / revert_: the user's model is sacred."""

from __future__ import annotations

import pytest
import torch
from models import make

import jupyter_compress as jc
from jupyter_compress.methods import decompose


def test_compress_never_changes_the_model_and_shares_nothing():
    model, x = make("mlp")
    before = jc.state_dict_hash(model)
    small, _ = jc.compress(model, jc.Plan.of(jc.SVDConfig(rank=0.5), jc.PruneConfig(amount=0.5)))
    assert jc.state_dict_hash(model) == before
    ours = {p.data_ptr() for p in model.parameters()}
    assert not ours & {p.data_ptr() for p in small.parameters()}
    with torch.no_grad():  # training the copy cannot touch the original
        for p in small.parameters():
            p.add_(1.0)
    assert jc.state_dict_hash(model) == before


def _interrupt_on_call(monkeypatch, n: int, exc: BaseException):
    real = decompose.linear_svd
    calls = {"n": 0}

    def flaky(weight):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(weight)

    monkeypatch.setattr(decompose, "linear_svd", flaky)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("boom")])
def test_inplace_is_transactional(monkeypatch, exc):
    model, x = make("mlp")
    before = jc.state_dict_hash(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        ref = model(x)
    # step 1 (prune) swaps three layers in; step 2 (svd) is interrupted on its second layer
    _interrupt_on_call(monkeypatch, 2, exc)
    with pytest.raises(type(exc)):
        jc.compress_(model, jc.Plan.of(jc.PruneConfig(amount=0.5), jc.SVDConfig(rank=0.5, keep_head=False)))
    assert jc.state_dict_hash(model) == before
    assert dict(model.named_modules()) == modules
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    with pytest.raises(jc.NothingToRevertError):
        jc.revert_(model)


def test_failing_eval_after_inplace_compression_rolls_back():
    model, _ = make("mlp")
    before = jc.state_dict_hash(model)
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("eval broke")
        return 1.0

    with pytest.raises(ValueError, match="eval broke"):
        jc.compress_(model, jc.PruneConfig(amount=0.5), eval=evaluate)
    assert jc.state_dict_hash(model) == before


def test_bad_input_leaves_the_model_unchanged():
    model, _ = make("mlp")
    before = jc.state_dict_hash(model)
    with pytest.raises(jc.InvalidConfigError, match="larger than layer 'fc1' \\(Linear 32 -> 64\\) allows: at most 32"):
        jc.compress_(model, jc.SVDConfig(rank=40))
    with pytest.raises(jc.SelectorError):
        jc.compress_(model, jc.Step(jc.PruneConfig(amount=0.5), jc.Selector(layers=("re:conv.*",))))
    with pytest.raises(jc.CompressError, match="Expected a torch.nn.Module to compress; got a str"):
        jc.compress("model", jc.PruneConfig(amount=0.5))
    with pytest.raises(jc.PlanError, match="no steps"):
        jc.compress_(model, jc.Plan())
    assert jc.state_dict_hash(model) == before


def test_compress_with_eval_and_example_inputs_reports_metrics():
    model, x = make("mlp")
    small, report = jc.compress(model, jc.PruneConfig(amount=0.3), eval=lambda m: {"score": 1.0},
                                example_inputs=x)
    assert report.metrics_before["score"] == 1.0 and report.metrics_after["score"] == 1.0
    assert report.metrics_before["latency_ms"] > 0 and report.metrics_after["latency_ms"] > 0
    with torch.no_grad():
        expected = jc.core.metrics.relative_error(model(x), small(x))
    assert report.metrics_after["output_rel_error"] == pytest.approx(expected, rel=1e-6)


def test_compress_keeps_training_flags_and_the_users_rng():
    model, _ = make("mlp")
    model.train()
    state = torch.random.get_rng_state()
    small, _ = jc.compress(model, jc.SVDConfig(rank=0.5))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(m.training for m in small.modules())


def test_sequential_in_place_compressions_revert_together():
    model, _ = make("cnn")
    before = jc.state_dict_hash(model)
    jc.compress_(model, jc.SVDConfig(rank=0.5))
    jc.compress_(model, jc.PruneConfig(amount=0.5))
    assert len(jc.applied_plans(model)) == 2
    jc.revert_(model)
    assert jc.state_dict_hash(model) == before
    assert jc.applied_plans(model) == []


def test_report_renders_text_html_and_json():
    model, _ = make("cnn")
    _, report = jc.compress(model, jc.Plan.of(jc.SVDConfig(rank=0.5), jc.PruneConfig(amount=0.5)))
    bundle = report._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", "application/vnd.jupyter-compress.report+json"}
    assert "block.conv1" in bundle["text/plain"] and "block.conv1" in bundle["text/html"]
    data = bundle["application/vnd.jupyter-compress.report+json"]
    import json

    again = jc.Report.from_dict(json.loads(json.dumps(data)))
    assert again.to_text() == report.to_text()
    assert data["totals"] == report.totals


def test_example_inputs_the_model_cannot_take_are_one_line_and_change_nothing():

    model, x = make("transformer")  # token ids; floats cannot index its Embedding
    before = jc.state_dict_hash(model)
    with pytest.raises(jc.CompressError, match="does not run on the example inputs") as info:
        jc.compress_(model, jc.PruneConfig(amount=0.5), example_inputs=torch.randn(2, 3))
    assert "\n" not in str(info.value) and jc.state_dict_hash(model) == before
