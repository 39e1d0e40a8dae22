"""The tuning panel's state model without widgets (issue 20): families and pickers read from the methods'
declarations, the plan in the canonical step order, coupled methods given an exclusion selector, per-layer
overrides of a method's dial as their own steps, the instant preview's settings from each method's hook; a
toy method registered from here shows up in the state and in the panel's picker."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.config import Interval, MethodConfig, param
from jupyter_compress.core.plan import Plan, Step
from jupyter_compress.core.registry import MethodResult, methods_in_order, register_method, unregister_method
from jupyter_compress.core.selection import Selector
from jupyter_compress.errors import CompressError
from jupyter_compress.widgets import tune_state as ts

WIDGETS = pathlib.Path(ts.__file__).parent


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig(MethodConfig):
    """A toy method: 'prunes' an amount (previewed as magnitude pruning)."""

    amount: float = param(0.25, help="fraction of weights", check=Interval(0.0, 1.0, "[)"))
    gentle: bool = param(False, help="a second field the panel does not show")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyFirstConfig(MethodConfig):
    """A toy method of a family of its own, in the first stage (so its tab comes first)."""

    amount: float = param(0.5, help="fraction", check=Interval(0.0, 1.0, "[)"))


def _unchanged(model: nn.Module, names: list[str], config, ctx) -> MethodResult:
    return MethodResult({}, [])


def _toy_preview(config: ToyConfig, model: nn.Module, layers: list[str]):
    return None if config.gentle else {layer: ("prune", config.amount) for layer in layers}


@pytest.fixture
def toys():
    register_method("toy.prune", ToyConfig, supported=(nn.Linear,), family="pruning", help="toy",
                    stage="sparsity", order=9, dial="amount", controls=("amount",), preview=_toy_preview)(_unchanged)
    register_method("toy.first", ToyFirstConfig, supported=(nn.Linear,), family="toys", help="toy",
                    stage="structure", order=-1, dial="amount")(_unchanged)
    register_method("toy.hidden", type("ToyHiddenConfig", (ToyFirstConfig,), {}), supported=(nn.Linear,),
                    family="toys-hidden", help="toy", in_panel=False)(_unchanged)
    yield
    for name in ("toy.prune", "toy.first", "toy.hidden"):
        unregister_method(name)


def _state(family="mlp"):
    model, x = make(family)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return model, ts.TuneState(model, layers)


def test_families_come_from_the_declarations_in_stage_order():
    _, state = _state()
    assert list(state.families) == ["pruning", "decomposition", "quantization"]  # today's tabs
    for family, methods in state.families.items():
        assert [m.name for m in methods] == sorted(m.name for m in methods)  # the picker's order
        assert all(m.family == family and m.in_panel for m in methods)
    first = [min(methods, key=lambda m: m.stage_index).stage_index for methods in state.families.values()]
    assert first == sorted(first)
    shown = {m.name for ms in state.families.values() for m in ms}
    assert shown == {m.name for m in methods_in_order() if m.in_panel}
    assert state.override_families == [f for f, ms in state.families.items() if any(m.dial for m in ms)]


def test_plan_runs_in_the_canonical_order_whatever_the_picking_order():
    _, state = _state("cnn")
    for family in reversed(list(state.families)):  # the last tab picked first
        state.pick(family, next(m.name for m in state.families[family] if m.units is None and not m.requires))
    plan = state.plan()
    order = [jc.core.registry.get_method(s.method).stage_index for s in plan.steps]
    assert order == sorted(order) and len(plan.steps) == 3
    state.pick("quantization", ts.OFF)
    assert len(state.plan().steps) == 2
    with pytest.raises(CompressError, match="not a method of the pruning family"):
        state.pick("pruning", "svd")


def test_coupled_methods_get_an_exclusion_selector():
    _, state = _state("cnn")
    coupled = next(m for ms in state.families.values() for m in ms if m.units is not None)
    state.pick(coupled.family, coupled.name)
    state.set_value(coupled.name, coupled.dial, 0.3)
    state.include("fc", False)
    state.set_override("head", coupled.family, "0.1")  # coupled layers shrink together: no per-layer step
    (step,) = state.plan().steps
    assert step.selector == Selector(exclude=("fc",)) and step.config.amount == 0.3
    state.include("fc", True)
    assert state.plan().steps[0].selector.is_default()


def test_per_layer_overrides_of_the_dial_become_their_own_steps():
    _, state = _state()
    state.pick("pruning", "prune")
    state.set_value("prune", "amount", 0.6)
    state.pick("decomposition", "svd")
    state.include("head", False)
    state.set_override("fc2", "pruning", "30%")
    state.set_override("fc1", "decomposition", "16")
    steps = state.planned()
    assert [(s.method, layers) for s, layers in steps] == [("svd", ["fc2"]), ("svd", ["fc1"]),
                                                           ("prune", ["fc1"]), ("prune", ["fc2"])]
    assert steps[1][0].config.rank == 16 and isinstance(steps[1][0].config.rank, int)
    assert steps[2][0].config.amount == 0.6 and steps[3][0].config.amount == pytest.approx(0.3)
    assert steps[3][0].selector == ts.layers_selector(["fc2"])
    assert steps[3][0].selector.select(make("mlp")[0], (nn.Linear,)) == ["fc2"]
    state.set_override("fc2", "pruning", "lots")
    with pytest.raises(CompressError, match="not a number"):
        state.plan()
    state.set_override("fc2", "pruning", "0.2")
    state.pick("pruning", "prune.nm")  # no dial: an override cannot say what it sets
    with pytest.raises(CompressError, match="no per-layer setting"):
        state.plan()


def test_preview_settings_come_from_each_methods_hook():
    model, state = _state()
    state.pick("pruning", "prune")
    state.set_value("prune", "amount", 0.7)
    state.pick("decomposition", "svd")
    state.set_value("svd", "rank", 0.3)
    settings, other = state.settings(state.plan())
    assert other == []
    assert {n: s.prune for n, s in settings.items()} == {"fc1": 0.7, "fc2": 0.7, "head": 0.7}
    assert {n: s.svd for n, s in settings.items()} == {"fc1": 0.3, "fc2": 0.3, "head": None}  # keep_head
    state.set_value("prune", "criterion", "random")  # the hook cannot answer it: measured on Apply
    settings, other = state.settings(state.plan())
    assert other == ["prune"] and all(s.prune is None for s in settings.values())
    # any plan, not just the one the state made last: layers from the steps' selectors
    plan = Plan((Step(jc.PruneConfig(amount=0.4), ts.layers_selector(["fc2"])),), seed=0)
    settings, other = state.settings(plan)
    assert {n: s.prune for n, s in settings.items()} == {"fc2": 0.4} and other == []


def test_a_registered_toy_method_shows_up_in_the_state_and_the_panel(toys):
    model, state = _state()
    assert "toy.prune" in [m.name for m in state.families["pruning"]]
    assert "toy.prune" in state.methods and "toy.hidden" not in state.methods
    assert list(state.families)[:2] == ["toys", "pruning"]  # its stage puts its family's tab first
    state.pick("pruning", "toy.prune")
    state.set_value("toy.prune", "amount", 0.4)
    state.set_override("fc2", "pruning", "10%")
    state.pick("toys", "toy.first")
    plan = state.plan()
    assert [s.method for s in plan.steps] == ["toy.first", "toy.prune", "toy.prune"]  # structure first
    assert plan.steps[2].config == ToyConfig(amount=0.1)
    settings, other = state.settings(plan)
    assert other == ["toy.first"]  # no preview hook
    assert {n: s.prune for n, s in settings.items()} == {"fc1": 0.4, "head": 0.4, "fc2": 0.1}

    pytest.importorskip("ipywidgets")
    from jupyter_compress.widgets import tune

    panel = tune(model)
    assert "toy.prune" in panel.method_pickers["pruning"].options
    assert panel.method_pickers["toys"].options == ("off", "toy.first")
    assert set(panel.controls["toy.prune"]) == {"amount"}  # its declared controls only
    assert set(panel.layer_rows["fc1"][1]) >= {"toys", "pruning"}
    panel.method_pickers["pruning"].value = "toy.prune"
    panel.controls["toy.prune"]["amount"].value = 0.5
    fresh = jc.methods.analysis.PreviewEngine(model).preview(
        {n: jc.methods.analysis.LayerSetting(prune=0.5) for n in ("fc1", "fc2", "head")})
    assert panel.last_preview.nonzeros_after == fresh.nonzeros_after
    panel.close()


def test_rendering_helpers_are_pure():
    plan = Plan.of(jc.PruneConfig(amount=0.4))
    code = ts.cell_code(plan, "net", False, "small", applied=True)
    assert code.startswith("%%compress net --as small\n") and "reproduces the applied result" in code
    assert Plan.from_yaml(code.split("\n", 1)[1]) == plan
    assert ts.cell_code(plan, "net", True, "small", applied=False).startswith("%%compress net --inplace\n")
    assert ts.summary_text("net", None, False, "x").startswith("jupyter_compress tuning panel on net: nothing")
    assert "as 'small'" in ts.summary_text("net", plan, False, "small")
    static = ts.static_html("net", None, False, "small", None, "<table/>")
    assert "(no method)" in static and static.endswith("<table/></div>")
    assert ts.name_message("small") is None and "IPython owns" in ts.name_message("In")
    assert "type another name in the 'as' box" in ts.name_message("class")
    assert ts.parse_override("fc1", " ") is None and ts.parse_override("fc1", "50%") == 0.5


def _strings_and_imports(path: pathlib.Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    imports = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imports |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return strings, imports


def test_the_panel_names_no_method_and_the_state_imports_no_widgets():
    names = {m.name for m in methods_in_order()} | {a for m in methods_in_order() for a in m.aliases}
    for module in ("tune.py", "tune_state.py"):
        path = WIDGETS / module
        strings, imports = _strings_and_imports(path)
        assert not strings & names, (module, strings & names)
        assert len(path.read_text().splitlines()) <= 400
    _, imports = _strings_and_imports(WIDGETS / "tune_state.py")
    assert not {i for i in imports if i.split(".")[0] in {"ipywidgets", "IPython", "traitlets", "bokeh", "tune",
                                                          "controls"}}


def test_a_plan_over_many_long_layer_names_stays_within_the_selector_bound():
    # MiniLM as sentence-transformers nests it: 36 Linears named like '0.auto_model.encoder.layer.5.attention.
    # self.query' took one 1,839-character regex, over the 1,000 a plan's patterns may have (seen in the panel)
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=37,
                                vocab_size=50, max_position_embeddings=16))
    model = nn.Sequential(nn.Sequential(bert))
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 37 and sum(len(n) + 2 for n in layers) > 1000
    state = ts.TuneState(model, layers)
    state.pick("pruning", "prune")
    state.set_override(layers[3], "pruning", "10%")
    plan = state.plan()
    steps = plan.steps
    assert all(len(p) <= 1000 for step in steps for p in step.selector.layers)
    assert len(steps[0].selector.layers) >= 2  # split into several patterns
    assert steps[0].selector.select(model, (nn.Linear,)) == [n for n in layers if n != layers[3]]
    assert steps[1].selector.select(model, (nn.Linear,)) == [layers[3]]
    assert Plan.from_dict(plan.to_dict()) == plan  # and it round-trips as a plan file would
