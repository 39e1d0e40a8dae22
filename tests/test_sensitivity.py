"""Sensitivity: numbers equal direct evaluation; disk cache (JSON) reused and resumable; verdicts; groups."""

from __future__ import annotations

import json

import pytest
import torch
from models import SmallCNN
from strategy_models import accuracy_eval, digits

from jupyter_compress import compress, state_dict_hash
from jupyter_compress.errors import InvalidConfigError
from jupyter_compress.strategy.sensitivity import point_plan, sensitivity

RATIOS = (0.5, 0.9)
_CALLS = {"n": 0}


def _sens(tmp_path, **kw):
    model, X, y = digits()
    kw.setdefault("eval", accuracy_eval(X, y))
    return sensitivity(model, example_inputs=X[:8], ratios=RATIOS, cache_dir=tmp_path, progress=False, **kw)


def test_points_equal_direct_evaluation(tmp_path):
    model, X, y = digits()
    sens = _sens(tmp_path, methods=["prune", "svd", "tucker", "prune.structured"])
    assert sens.complete and not sens.errors
    assert {p["method"] for p in sens.points} == {"prune", "svd", "tucker", "prune.structured"}
    for p in sens.points:
        plan = point_plan(p["method"], p["setting"], p["layers"], p["seed"])
        inputs = X[:8] if p["method"] == "prune.structured" else None
        small, report = compress(model, plan, eval=accuracy_eval(X, y), example_inputs=inputs)
        # compression and evaluation are deterministic on one thread: equality is exact
        assert p["metric"] == report.metrics_after["accuracy"], p
        assert p["drop"] == pytest.approx(report.metrics_before["accuracy"] - report.metrics_after["accuracy"],
                                          abs=1e-12)
        assert p["params_after"] == report.model_params_after
    assert sens.baseline == accuracy_eval(X, y)(model)["accuracy"]


def test_fidelity_without_eval_and_subsample(tmp_path):
    model, X, _ = digits()
    sens = sensitivity(model, data=X, subsample=50, methods=["svd"], ratios=(0.5,), cache_dir=tmp_path,
                       progress=False)
    (point,) = sens.points
    small, _ = compress(model, point_plan("svd", point["setting"], point["layers"]))
    with torch.inference_mode():
        ref, out = model.eval()(X[:50]).double(), small.eval()(X[:50]).double()
    direct = float(torch.nn.functional.cosine_similarity(ref, out, dim=-1).mean())
    # same probes (the first 50 inputs), same formula; float32 outputs compared in float64
    assert point["metric"] == pytest.approx(direct, abs=1e-9)
    assert sens.baseline == pytest.approx(1.0, abs=1e-9)
    full = sensitivity(model, data=X, methods=["svd"], ratios=(0.5,), cache_dir=tmp_path, progress=False)
    assert full.measured == 1  # another subsample is another cache key
    assert full.points[0]["metric"] != point["metric"]


def test_cache_reused_across_calls_and_invalidated_by_weights(tmp_path):
    first = _sens(tmp_path, methods=["prune"])
    assert first.measured == len(first.points) > 0 and first.reused == 0
    again = _sens(tmp_path, methods=["prune"])
    assert again.measured == 0 and again.reused == len(first.points)
    assert [p["metric"] for p in again.points] == [p["metric"] for p in first.points]
    with open(again.cache_path, encoding="utf-8") as fh:  # plain JSON on disk
        assert len(json.load(fh)["points"]) == len(first.points)
    model, X, y = digits()
    changed = type(model)()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.head.bias[0] += 1.0
    assert state_dict_hash(changed) != state_dict_hash(model)
    other = sensitivity(changed, eval=accuracy_eval(X, y), example_inputs=X[:8], ratios=RATIOS, methods=["prune"],
                        cache_dir=tmp_path, progress=False)
    assert other.measured == len(other.points) and other.reused == 0


def test_interrupted_sweep_keeps_results_and_resumes(tmp_path):
    model, X, y = digits()
    before = state_dict_hash(model)
    base = accuracy_eval(X, y)
    _CALLS["n"] = 0

    def flaky_eval(m):  # the counter is a global: the eval's fingerprint (code + closure) stays the same
        _CALLS["n"] += 1
        if _CALLS["n"] == 5:  # the baseline, three points, then Ctrl-C
            raise KeyboardInterrupt
        return base(m)

    part = sensitivity(model, eval=flaky_eval, example_inputs=X[:8], ratios=RATIOS, methods=["prune"],
                       cache_dir=tmp_path, progress=False)
    assert not part.complete and len(part.points) == 3
    assert "Incomplete" in part.summary()
    assert state_dict_hash(model) == before
    _CALLS["n"] = -100  # no more interruptions
    done = sensitivity(model, eval=flaky_eval, example_inputs=X[:8], ratios=RATIOS, methods=["prune"],
                       cache_dir=tmp_path, progress=False)
    assert done.complete and done.reused == 3 and done.measured == len(done.points) - 3


def test_should_stop_and_time_budget(tmp_path):
    stops = iter([False, True])
    sens = _sens(tmp_path, methods=["prune"], should_stop=lambda: next(stops, True))
    assert len(sens.points) == 2 and not sens.complete
    quick = _sens(tmp_path / "t", methods=["prune", "svd"], time_budget_s=0.0)
    assert len(quick.points) == 1 and not quick.complete  # the budget is checked after each point


def test_verdicts_summary_and_heatmap(tmp_path):
    sens = _sens(tmp_path, methods=["prune", "svd"])
    verdicts = sens.verdicts(max_drop=0.02)
    assert verdicts
    for v in verdicts:
        curve = sens.curve(v["method"], v["unit"])
        drops = [p["drop"] for p in curve]
        if v["verdict"] == "safe":
            assert max(drops) <= 0.02
        elif v["verdict"] == "fragile":
            assert drops[0] > 0.02
        else:
            assert drops[0] <= 0.02 < max(drops)
    text = sens.summary(max_drop=0.02)
    for v in verdicts:
        if v["verdict"] != "tolerates":
            assert v["unit"] in text
    cols = sens.heatmap("svd")
    assert set(cols["layer"]) == {"head"} and cols["setting"] == ["0.5", "0.9"]
    assert len({len(c) for c in cols.values()}) == 1


def test_figure_is_bokeh(tmp_path):
    pytest.importorskip("bokeh")
    from jupyter_compress.plotting import sensitivity_heatmap

    fig = sensitivity_heatmap(_sens(tmp_path, methods=["svd"]), "svd")
    assert type(fig).__name__ == "figure" and fig.title.text.startswith("svd")


def test_residual_coupled_layers_form_one_unit(tmp_path):
    model = SmallCNN().eval()
    x = torch.randn(4, 3, 8, 8)
    sens = sensitivity(model, example_inputs=x, methods=["prune.structured"], ratios=(0.5,), cache_dir=tmp_path,
                       progress=False)
    units = {tuple(p["layers"]) for p in sens.points}
    # stem.0 and block.conv2 feed the same residual sum: their channels are pruned together
    assert any({"stem.0", "block.conv2"} <= set(u) for u in units), units
    assert all(len(set(u) & {"stem.0", "block.conv2"}) in (0, 2) for u in units)


def test_bad_ratios():
    model, X, y = digits()
    with pytest.raises(InvalidConfigError, match="ratios"):
        sensitivity(model, example_inputs=X[:4], ratios=(0.5, 1.5), cache_dir=False, progress=False)
