"""auto: the budget is met and verifiable, the plan is ordinary and reproducible, trial/time budgets hold,
and an unmeetable budget still returns the best plan and the frontier, saying so."""

from __future__ import annotations

import pytest
from strategy_models import accuracy_eval, digits

from jupyter_compress import Plan, compress, state_dict_hash
from jupyter_compress.errors import InvalidConfigError
from jupyter_compress.strategy.auto import auto

KW = dict(methods=["prune", "svd", "tucker"], ratios=(0.25, 0.5, 0.75, 0.9), progress=False)


def test_budget_met_and_plan_reproducible(tmp_path):
    model, X, y = digits()
    before = state_dict_hash(model)
    res = auto(model, eval=accuracy_eval(X, y), example_inputs=X[:8], max_drop=0.02, cache_dir=tmp_path, **KW)
    assert res.met and res.plan is not None and state_dict_hash(model) == before
    small, report = compress(model, Plan.from_yaml(res.plan.to_yaml()), eval=accuracy_eval(X, y))
    drop = report.metrics_before["accuracy"] - report.metrics_after["accuracy"]
    assert drop <= 0.02 + 1e-12
    assert state_dict_hash(small) == state_dict_hash(res.model)  # the plan alone rebuilds the model
    assert res.report.model_bytes_after == report.model_bytes_after
    best = min(t["storage_bytes"] for t in res.trials if t["feasible"])
    assert min(f["storage_bytes"] for f in res.frontier if f["feasible"]) == best
    assert best < res.report.model_bytes_before
    for f in res.frontier:  # nothing on the frontier is beaten on both size and drop
        assert not any(t["storage_bytes"] < f["storage_bytes"] and t["drop"] < f["drop"] for t in res.trials)


def test_trial_budget(tmp_path):
    model, X, y = digits()
    res = auto(model, eval=accuracy_eval(X, y), max_drop=0.02, max_trials=2, cache_dir=tmp_path, **KW)
    assert 1 <= len(res.trials) <= 2 and res.plan is not None


def test_time_budget_returns_what_it_has(tmp_path):
    model, X, y = digits()
    res = auto(model, eval=accuracy_eval(X, y), max_drop=0.02, time_budget_s=0.0, cache_dir=tmp_path, **KW)
    assert not res.sensitivity.complete and len(res.sensitivity.points) == 1
    assert res.trials == [] and res.plan is None and not res.met
    assert any("No plan could be tried" in n for n in res.notes)


def test_unmeetable_budget_returns_best_and_frontier(tmp_path):
    model, X, _ = digits()
    # fidelity (output cosine) drops a little under any compression: a zero budget cannot be met
    res = auto(model, example_inputs=X[:64], max_drop=0.0, max_trials=6, cache_dir=tmp_path, **KW)
    assert not res.met and res.trials and res.frontier and res.plan is not None and res.model is not None
    assert min(t["drop"] for t in res.trials) == min(t["drop"] for t in res.trials if t["plan"] == res.plan)
    assert any("No plan met the budget" in n for n in res.notes)
    assert "BUDGET NOT MET" in repr(res)


def test_latency_objective(tmp_path):
    model, X, y = digits()
    res = auto(model, eval=accuracy_eval(X, y), example_inputs=X[:32], max_drop=0.05, objective="latency",
               max_trials=2, cache_dir=tmp_path, **KW)
    assert all(t["latency_ms"] > 0 for t in res.trials)
    assert "latency_ms" in res.report.metrics_after


def test_bad_arguments():
    model, X, y = digits()
    with pytest.raises(InvalidConfigError, match="objective"):
        auto(model, eval=accuracy_eval(X, y), objective="speed")
    with pytest.raises(InvalidConfigError, match="max_drop"):
        auto(model, eval=accuracy_eval(X, y), max_drop=-1)


def test_settings_harsher_than_one_already_past_the_budget_are_not_measured(tmp_path):
    from jupyter_compress.strategy.sensitivity import sensitivity

    model, X, y = digits()
    full = sensitivity(model, eval=accuracy_eval(X, y), cache_dir=False, **KW)
    res = auto(model, eval=accuracy_eval(X, y), max_drop=0.02, max_trials=3, cache_dir=tmp_path, **KW)
    sens = res.sensitivity
    assert sens.pruned > 0 and sens.complete and sens.measured + sens.pruned == len(full.points)
    got = {(p["method"], p["unit"], p["ratio"]): p["drop"] for p in sens.points}
    by_chain: dict = {}
    for p in full.points:
        by_chain.setdefault((p["method"], p["unit"]), []).append(p)
    for (method, unit), chain in by_chain.items():
        chain.sort(key=lambda p: p["ratio"])
        for i, p in enumerate(chain):
            # measured exactly when every milder setting of the unit stayed within the budget
            expected = all(q["drop"] <= 0.02 for q in chain[:i])
            assert ((method, unit, p["ratio"]) in got) == expected, (method, unit, p["ratio"])
    assert any("not measured" in n for n in res.notes)


def test_a_plan_that_fails_is_skipped_and_named_not_the_end_of_the_search(tmp_path, monkeypatch):
    # fault injection: every second plan auto verifies raises (as a combination a method cannot take would);
    # the plans measured before and after it still count, the failure is named, the model is untouched
    import jupyter_compress.strategy.auto as auto_module

    model, X, y = digits()
    before = state_dict_hash(model)
    real, calls = auto_module.measure_plan, []

    def flaky(shared, plan):
        calls.append(plan)
        if len(calls) % 2 == 0:
            raise RuntimeError("this combination cannot be built")
        return real(shared, plan)

    monkeypatch.setattr(auto_module, "measure_plan", flaky)
    res = auto(model, eval=accuracy_eval(X, y), max_drop=0.02, max_trials=6, cache_dir=tmp_path, **KW)
    failures = len(calls) // 2
    assert failures >= 1 and len(res.trials) == len(calls) - failures  # failed plans are not trials
    assert len(calls) <= 6  # failures count against max_trials
    note = next(n for n in res.notes if "failed and were skipped" in n)
    assert f"{failures} plan(s)" in note and "RuntimeError: this combination cannot be built" in note
    assert res.plan is not None and res.plan.to_json() in {t["plan"].to_json() for t in res.trials}
    assert state_dict_hash(model) == before
