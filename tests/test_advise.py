"""advise: qualification follows the data given, evidence equals direct measurement, ranking, rationale."""

from __future__ import annotations

import pytest
import torch
from strategy_models import accuracy_eval, digits

from jupyter_compress import compress, list_methods
from jupyter_compress.errors import CompressError, InvalidConfigError
from jupyter_compress.strategy._measure import storage_bytes
from jupyter_compress.strategy.advise import advise


def _by_name(advice):
    return {s["name"]: s for s in advice.strategies}


def test_without_data_only_post_training_methods_qualify(tmp_path):
    model, X, y = digits()
    advice = advise(model, eval=accuracy_eval(X, y), target="mobile", mix=False)
    assert advice.data == "none"
    names = _by_name(advice)
    assert not names["prune.structured"]["qualifies"] and "example_inputs" in names["prune.structured"]["why_not"]
    for m in list_methods():
        if m["needs_data"] and m["name"] in names:
            assert not names[m["name"]]["qualifies"]
        if m["family"] == "distillation":
            assert "training" in names[m["name"]]["why_not"]
    assert any("latency was not measured" in n for n in advice.notes)


def test_evidence_is_measured_and_ranked(tmp_path):
    model, X, y = digits()
    advice = advise(model, data=(X, y), eval=accuracy_eval(X, y), target="edge", max_drop=0.03,
                    cache_dir=tmp_path)
    assert advice.data == "labelled"
    qualified = [s for s in advice.strategies if s["qualifies"]]
    assert [s["rank"] for s in qualified] == list(range(1, len(qualified) + 1))
    meets = [s["meets"] for s in qualified]
    assert meets == sorted(meets, reverse=True)  # strategies meeting the limits come first
    prune = _by_name(advice)["prune"]
    small, report = compress(model, prune["plan"], eval=accuracy_eval(X, y))
    assert prune["evidence"]["drop"] == pytest.approx(
        report.metrics_before["accuracy"] - report.metrics_after["accuracy"], abs=1e-12)
    assert prune["evidence"]["storage_bytes"] == storage_bytes(report)
    assert "not speed up" in prune["rationale"] and f"{prune['evidence']['storage_ratio']:.2f}x" in prune["rationale"]
    structured = _by_name(advice)["prune.structured"]
    assert structured["qualifies"] and structured["evidence"]["memory_ratio"] > 1
    assert "mixed per layer (auto)" in _by_name(advice)
    text = advice.to_text()
    assert "target edge" in text and "1. " in text


def test_limits_are_checked():
    model, X, y = digits()
    advice = advise(model, example_inputs=X[:16], target="cpu-server", memory_mb=0.001, max_drop=None, mix=False)
    assert advice.best is None
    assert all(any("memory" in m for m in s["misses"]) for s in advice.strategies if s["qualifies"])
    assert all("latency_ms" in s["evidence"] for s in advice.strategies if s["qualifies"])


def test_bad_target_and_nothing_to_measure():
    model, X, _ = digits()
    with pytest.raises(InvalidConfigError, match="target"):
        advise(model, target="phone")
    with pytest.raises(CompressError, match="eval=.*data=.*example_inputs"):
        advise(model)


class _Slow(torch.nn.Module):
    """A Linear that computes its output 200 times over (same result): measurably slower, by construction."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        for _ in range(199):
            self.layer(x)
        return self.layer(x)


def test_a_method_measured_slower_is_never_recommended_for_speed():
    # issue 23: on cpu-server the advisor once ranked quantization first at a measured 0.89x. A toy method that
    # is slower by construction (200x the work) and loses nothing: it meets every limit, so only its measured
    # speed can keep it off the top; every other strategy is held to the same rule by the loop below
    import copy
    import dataclasses

    from jupyter_compress.core.config import MethodConfig
    from jupyter_compress.core.registry import MethodResult, register_method, unregister_method
    from jupyter_compress.methods._common import layer_row

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class SlowConfig(MethodConfig):
        """Wrap Linears in a slower module with the same output (a test toy)."""

    def apply(model, names, config, ctx):
        out = {n: _Slow(copy.deepcopy(model.get_submodule(n))) for n in names}
        return MethodResult(out, [layer_row(n, "toy.slow", model.get_submodule(n), m) for n, m in out.items()])

    register_method("toy.slow", SlowConfig, supported=(torch.nn.Linear,), family="toys", help="slower, same output",
                    stage="precision")(apply)
    try:
        model, X, y = digits()
        advice = advise(model, example_inputs=X[:64], eval=accuracy_eval(X, y), target="cpu-server", max_drop=0.05,
                        mix=False)
    finally:
        unregister_method("toy.slow")
    slow = _by_name(advice)["toy.slow"]
    assert slow["qualifies"] and slow["meets"] and slow["evidence"]["speedup"] < 0.5  # 200x the Linear work
    assert slow["rank"] is None and advice.best is not slow
    assert slow["rationale"].startswith(f"Measured slower than the original on this machine "
                                        f"({slow['evidence']['speedup']:.2f}x)")
    for s in advice.strategies:
        if s["qualifies"] and s["evidence"].get("speedup", 1.0) < 1.0:
            assert s["rank"] is None, s["name"]  # measured slower: not ranked for speed
    ranked = sorted((s for s in advice.strategies if s["rank"]), key=lambda s: s["rank"])
    assert [s["rank"] for s in ranked] == list(range(1, len(ranked) + 1))
    assert all(s["evidence"]["speedup"] >= 1.0 for s in ranked)
    assert advice.best is None or advice.best["rank"] == min(s["rank"] for s in ranked if s["meets"])
    assert "toy.slow is not recommended for speed" in advice.to_text()
