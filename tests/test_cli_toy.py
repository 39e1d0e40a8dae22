"""A method registered from outside the package (here: a toy, from this test) is usable from the CLI as it
is: ``methods`` lists it, ``validate`` accepts a plan naming it, ``run`` compresses by it and reports it, and
a config field it declares in ``function_fields`` is given by ``--train`` like QAT's ``train``.

Calls ``main([...])`` in-process: the toy is registered in this process only.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from jupyter_compress.__main__ import main
from jupyter_compress.core.config import Interval, MethodConfig, param
from jupyter_compress.core.registry import MethodResult, register_method, unregister_method
from jupyter_compress.methods._common import layer_row

NAME = "toy.scale"
CALLS: list[str] = []


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyScaleConfig(MethodConfig):
    """Scale each Linear's weight by (1 - amount)."""

    amount: float = param(0.5, help="fraction the weights shrink by", check=Interval(0.0, 1.0, "[)"))
    fit: str = param("", help="NAME of a function called as fit(layer) on each new layer ('' = none)")


def _apply(model: nn.Module, names: list[str], config: ToyScaleConfig, ctx) -> MethodResult:
    fit = ctx.functions.get(config.fit) if config.fit and not ctx.replay else None
    replacements, rows = {}, []
    for name in names:
        old = model.get_submodule(name)
        new = copy.deepcopy(old)
        new.weight.mul_(1 - config.amount)
        if fit is not None:
            fit(new)
        replacements[name] = new
        rows.append(layer_row(name, NAME, old, new, detail={"scale": 1 - config.amount}))
    return MethodResult(replacements, rows)


def toy_fit(layer: nn.Module) -> None:
    """A function a toy plan names by NAME (``--train NAME=test_cli_toy:toy_fit``)."""
    CALLS.append(type(layer).__name__)


@pytest.fixture
def toy():
    register_method(NAME, ToyScaleConfig, supported=(nn.Linear,), family="toy", help="Scale Linear weights (a toy).",
                    function_fields=("fit",))(_apply)
    try:
        yield NAME
    finally:
        unregister_method(NAME)
        CALLS.clear()


def _plan(tmp_path: Path, step: str) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(f"jupyter_compress_plan: 1\nsteps:\n- {{method: {NAME}, {step}}}\n")
    return str(path)


def test_methods_lists_a_toy_registered_from_a_test(toy, capsys):
    assert main(["methods", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed[NAME]["family"] == "toy" and listed[NAME]["config"] == "ToyScaleConfig"
    assert {"amount", "fit"} <= {p["name"] for p in listed[NAME]["parameters"]}
    assert main(["methods"]) == 0 and NAME in capsys.readouterr().out


def test_validate_accepts_a_plan_naming_the_toy_and_checks_its_values(toy, tmp_path, capsys):
    assert main(["validate", _plan(tmp_path, "amount: 0.25")]) == 0
    assert "valid plan, 1 step(s)" in capsys.readouterr().out
    assert main(["validate", _plan(tmp_path, "amount: 1.5")]) == 2
    assert "'amount' parameter of ToyScaleConfig" in capsys.readouterr().err


def test_validate_asks_for_the_function_a_declared_function_field_names(toy, tmp_path, capsys):
    plan = _plan(tmp_path, "amount: 0.25, fit: myfit")
    assert main(["validate", plan]) == 2
    err = capsys.readouterr().err
    assert "names the function for 'fit' 'myfit', which no --train gives" in err
    assert main(["validate", plan, "--train", "myfit=test_cli_toy:toy_fit"]) == 0


def test_run_compresses_by_the_toy_and_reports_it(toy, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", _plan(tmp_path, "amount: 0.25, fit: myfit"), "--model", "cli_models:tiny",
                 "--example", "cli_models:tiny_example", "--train", "myfit=test_cli_toy:toy_fit",
                 "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"]
    rows = [r for r in result["report"]["rows"] if r["method"] == NAME]
    assert [r["name"] for r in rows] == ["0", "2"] and all(r["detail"]["scale"] == 0.75 for r in rows)
    assert CALLS == ["Linear", "Linear"]  # the function the plan names, given by --train
    report = json.loads((out / "report.json").read_text())
    assert report["plan"]["steps"][0]["method"] == NAME
    assert (out / "model.safetensors").exists() and (out / "plan.yaml").exists()
    from cli_models import tiny

    with torch.no_grad():
        expected = tiny()[0].weight * 0.75
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(out / "model.safetensors"))["0.weight"], expected)
