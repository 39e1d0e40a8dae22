"""Issue 20, done when: adding a method is one new file plus its registration and a contract-test case, with no
edit anywhere else. ``toy_method.py`` (in tests/, outside the package) is that file; registered here, the toy is
found in the magic's options, the tuning panel, ``compare``, ``auto`` and the CLI, and passes the contract checks.
The per-surface details are tested in test_options.py, test_tune_state.py, test_strategy_toy.py and
test_cli_toy.py; this test proves the whole path with one method.
"""

from __future__ import annotations

import json

import pytest
import torch
import toy_method
from torch import nn

import jupyter_compress as jc


@pytest.fixture
def toy():
    toy_method.register()
    try:
        yield toy_method.NAME
    finally:
        toy_method.unregister()


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    X = torch.randn(32, 8)
    return model, X


def test_the_toy_is_in_every_surface(toy, shell, tmp_path, capsys):
    model, X = _model()
    with torch.no_grad():
        y = model(X).argmax(1)

    # 1. the magic's options: %compress MODEL --shrink 0.25 runs it (a real IPython shell)
    shell.user_ns.update(toy_model=model, toy_x=X)
    shell.run_cell(f"%compress toy_model {toy_method.FLAG} 0.25 --example toy_x --as toy_small --no-report"
                   ).raise_error()
    small = shell.user_ns["toy_small"]
    assert torch.equal(small[0].weight, model[0].weight * 0.75)
    assert shell.user_ns["_compress_report"].plan["steps"][0]["method"] == toy
    shell.run_cell("%compress_methods").raise_error()
    assert toy_method.FLAG in capsys.readouterr().out

    # 2. the panel: its family is a tab, the toy is in that tab's method picker
    from jupyter_compress.widgets.tune import TunePanel

    panel = TunePanel(model, example_inputs=X[:4])
    assert toy in panel.method_pickers["toys"].options

    # 3. compare: a row of its own, measured
    table = jc.compare(model, (X, y), budget=0.75, methods=[toy])
    row = next(r for r in table.rows if r["label"] == "shrink (toy)")
    assert not row.get("error") and row["methods"] == [toy]

    # 4. auto: its sensitivity sweep measures the toy on every Linear
    found = jc.auto(model, example_inputs=X, max_drop=0.05, max_trials=4, ratios=(0.25,), cache_dir=tmp_path,
                    progress=False)
    assert {tuple(p["layers"]) for p in found.sensitivity.points if p["method"] == toy} == {("0",), ("2",)}

    # 5. the CLI: listed, and a plan naming it validates (in-process: the toy is registered in this process)
    from jupyter_compress.__main__ import main

    capsys.readouterr()
    assert main(["methods", "--json"]) == 0
    assert toy in {m["name"] for m in json.loads(capsys.readouterr().out)}
    plan = tmp_path / "plan.yaml"
    plan.write_text(jc.Plan.of(toy_method.ShrinkConfig(amount=0.25)).to_yaml())
    assert main(["validate", str(plan)]) == 0


def test_the_toy_passes_the_contract_checks(toy):
    """The contract-test case: the registry-driven checks every built-in method passes, run on the toy."""
    import test_contract

    test_contract.test_config_round_trips_through_json(toy)
    for family in ("mlp", "transformer"):
        test_contract.test_contract(toy, family)
        test_contract.test_inplace_then_revert_is_bit_exact(toy, family)
