"""A method may resolve a setting from measurements on this run (issue 21: which route is fastest here) and pin
it (``MethodResult.pinned``): the report's plan records the resolved value, so replaying that plan repeats the
choice without measuring again and gives the same weights, however the measurements would come out next time."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.config import MethodConfig, param
from jupyter_compress.core.registry import MethodResult, register_method, unregister_method
from jupyter_compress.methods._common import layer_row

NAME = "toy.route"
MEASURED: list[str] = []  # what the toy's "measurement" answered, in order; the test sets the answers
ANSWERS: list[str] = []


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouteConfig(MethodConfig):
    route: str = param("auto", help="'auto' measures; 'halve' or 'third' forces one", choices=("auto", "halve", "third"))


def _apply(model: nn.Module, names: list[str], config: RouteConfig, ctx) -> MethodResult:
    route = config.route
    if route == "auto":  # a stand-in for timing candidates: its answer may differ from run to run
        route = ANSWERS.pop(0)
        MEASURED.append(route)
    scale = 0.5 if route == "halve" else 1 / 3
    replacements, rows = {}, []
    for name in names:
        old = model.get_submodule(name)
        new = copy.deepcopy(old)
        new.weight.mul_(scale)
        replacements[name] = new
        rows.append(layer_row(name, NAME, old, new))
    return MethodResult(replacements, rows, pinned={"route": route})


@pytest.fixture
def toy():
    register_method(NAME, RouteConfig, supported=(nn.Linear,), family="toys", help="a toy with a measured choice",
                    sweep=False)(_apply)
    try:
        yield
    finally:
        unregister_method(NAME)
        MEASURED.clear()
        ANSWERS.clear()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_the_report_records_the_measured_choice_and_a_replay_repeats_it(toy):
    ANSWERS.extend(["third", "halve"])  # the next measurement would choose differently
    model = _model()
    small, report = jc.compress(model, RouteConfig())
    assert MEASURED == ["third"]
    assert report.plan["steps"][0]["route"] == "third"  # recorded, not 'auto'
    again, _ = jc.compress(_model(), jc.Plan.from_yaml(jc.Plan.from_dict(report.plan).to_yaml()))
    assert MEASURED == ["third"]  # the replay did not measure
    assert jc.state_dict_hash(again) == jc.state_dict_hash(small)
    fresh, _ = jc.compress(_model(), RouteConfig())  # measuring again gives the other answer: the pin mattered
    assert MEASURED == ["third", "halve"] and jc.state_dict_hash(fresh) != jc.state_dict_hash(small)


def test_a_pinned_value_the_config_refuses_fails_cleanly_and_restores_the_model(toy, monkeypatch):
    ANSWERS.append("quarter")  # not one of the config's choices
    model = _model()
    original = jc.state_dict_hash(model)
    with pytest.raises(jc.CompressError, match="route"):
        jc.compress_(model, RouteConfig())
    assert jc.state_dict_hash(model) == original
    with pytest.raises(jc.NothingToRevertError):
        jc.revert_(model)
