"""A method registered from outside the package (a toy, from this test) joins the strategy layer by its
declarations alone: ``compare`` measures it as a row (its ``compare`` declaration), ``sensitivity`` and
``auto`` sweep it (its ``dial``, ``sweep`` default), and ``advise`` probes it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# the toy of toy_method.py (config and apply function), registered here with declarations of its own
from toy_method import NAME
from toy_method import ShrinkConfig as ToyConfig
from toy_method import apply_shrink as _apply

from jupyter_compress.core.registry import register_method, unregister_method


@pytest.fixture
def toy():
    register_method(NAME, ToyConfig, supported=(nn.Linear,), family="toyfamily", help="Shrink Linear weights (a toy).",
                    stage="sparsity", dial="amount", probe={"amount": 0.25},
                    compare=("toy", lambda model, budget, **_: [ToyConfig(amount=1 - budget)]))(_apply)
    try:
        yield NAME
    finally:
        unregister_method(NAME)


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    X = torch.randn(32, 8)
    return model, X, model(X).argmax(1).detach()


def test_compare_has_a_row_for_the_toy(toy):
    from jupyter_compress.strategy.budget import default_candidates
    from jupyter_compress.strategy.compare import compare

    model, X, y = _model_and_data()
    labels = [c.label for c in default_candidates(model, 0.5, example_inputs=X[:4])]
    assert "toy" in labels  # its own label (one method, not a family name): shown as declared
    assert labels.index("toy") < labels.index("quantization (quantize.dynamic)")  # sparsity before precision
    table = compare(model, (X, y), budget=0.75, methods=["toy", "prune"])
    rows = {r["label"]: r for r in table.rows}
    assert set(rows) == {"toy", "pruning, unstructured"}
    row = rows["toy"]
    assert not row.get("error") and row["family"] == "toyfamily" and row["methods"] == [NAME]
    assert row["needs_data_text"] == "no" and "amount=0.25" in row["plan"]
    small = table.models["toy"]
    assert torch.allclose(small[0].weight, model[0].weight * 0.75)


def test_auto_sweeps_the_toy(toy, tmp_path):
    from jupyter_compress.strategy._units import default_methods
    from jupyter_compress.strategy.auto import auto

    assert NAME in default_methods(False, False) and NAME in default_methods(True, True)
    model, X, _ = _model_and_data()
    found = auto(model, example_inputs=X, max_drop=0.05, max_trials=4, ratios=(0.25, 0.5), cache_dir=tmp_path,
                 progress=False)
    toy_points = [p for p in found.sensitivity.points if p["method"] == NAME]
    # one point per Linear and ratio, each an ordinary one-step plan of the toy
    assert {(tuple(p["layers"]), p["ratio"]) for p in toy_points} == {
        (("0",), 0.25), (("0",), 0.5), (("2",), 0.25), (("2",), 0.5)}
    assert all(p["family"] == "toyfamily" and p["setting"] == {"amount": p["ratio"]} for p in toy_points)


def test_advise_probes_the_toy_with_its_declared_setting(toy):
    from jupyter_compress.strategy.advise import advise

    model, X, _ = _model_and_data()
    advice = advise(model, example_inputs=X, mix=False, max_drop=None, time_budget_s=None)
    entry = next(s for s in advice.strategies if s["name"] == NAME)
    assert entry["qualifies"] and entry["plan"].steps[0].config == ToyConfig(amount=0.25)
    assert "Zeroes weights" in entry["rationale"]  # the text of its declared stage (sparsity)
