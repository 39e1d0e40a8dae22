"""advise: qualification follows the data given, evidence equals direct measurement, ranking, rationale."""

from __future__ import annotations

import pytest
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
