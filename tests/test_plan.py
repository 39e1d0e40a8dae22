"""Plans and selectors: serialization, validation messages, schema versions."""

from __future__ import annotations

import warnings

import pytest
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress import Plan, PruneConfig, Selector, Step, SVDConfig


def _plan() -> Plan:
    return Plan(
        (
            Step(SVDConfig(rank="energy:0.9"), Selector(layers=("re:fc.*",), exclude=("fc2",))),
            Step(PruneConfig(amount=0.25, scope="global"), Selector(types=("Linear",))),
            Step(SVDConfig(rank=4), Selector(layers=("head",))),
        ),
        seed=11,
    )


def test_plan_round_trips_losslessly_through_json_and_yaml():
    plan = _plan()
    for text, reader in ((plan.to_json(), Plan.from_json), (plan.to_yaml(), Plan.from_yaml)):
        again = reader(text)
        assert again == plan
        assert again.to_dict() == plan.to_dict()
        assert again.versions == plan.versions


def test_plan_records_versions():
    versions = _plan().to_dict()["versions"]
    assert versions["jupyter_compress"] == jc.__version__
    assert {"torch", "tensorly", "python"} <= set(versions)


def test_plan_from_newer_schema_fails_clearly():
    with pytest.raises(jc.SchemaVersionError, match="schema 99, newer than this jupyter_compress understands"):
        Plan.from_yaml("jupyter_compress_plan: 99\nsteps: []\n")


def test_unknown_keys_warn_but_typos_of_known_keys_fail():
    with pytest.warns(UserWarning, match="unknown plan key 'comment'"):
        plan = Plan.from_yaml("comment: made by hand\nsteps:\n- {method: prune, amount: 0.3}\n")
    assert plan.steps[0].config == PruneConfig(amount=0.3)
    with pytest.warns(UserWarning, match="ignoring unknown key 'owner'"):
        Plan.from_yaml("steps:\n- {method: prune, owner: me}\n")
    with pytest.raises(jc.PlanError, match="unknown key 'amout'; did you mean 'amount'"):
        Plan.from_yaml("steps:\n- {method: prune, amout: 0.3}\n")


def test_plan_file_with_a_typo_in_the_method_name(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("steps:\n- method: prnue\n  amount: 0.5\n")
    with pytest.raises(jc.UnknownMethodError, match="Unknown method 'prnue'. Did you mean 'prune'?"):
        Plan.load(str(path))


def test_plan_file_round_trip_on_disk(tmp_path):
    for name in ("plan.yaml", "plan.json"):
        _plan().save(str(tmp_path / name))
        assert Plan.load(str(tmp_path / name)) == _plan()


@pytest.mark.parametrize(
    "text,message",
    [
        ("steps: [1, 2]", "step 1 must be a mapping"),
        ("steps:\n- {amount: 0.5}", "has no 'method' key"),
        ("steps: {method: prune}", "'steps' must be a list"),
        ("seed: -1\nsteps: []", "'seed' must be an int in \\[0"),
        ("steps: [", "not valid YAML at line"),
        ("", "The plan is empty"),
        ("- 1\n- 2", "must be a mapping with a 'steps' list"),
    ],
)
def test_malformed_plans_give_one_line_errors(text, message):
    with pytest.raises(jc.PlanError, match=message) as info:
        Plan.from_yaml(text)
    assert "\n" not in str(info.value)


def test_yaml_loading_is_safe():
    with pytest.raises(jc.PlanError):
        Plan.from_yaml("!!python/object/apply:os.system ['echo unsafe']")


# -- configs ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: PruneConfig(amount=1.5),
         "The 'amount' parameter of PruneConfig must be a float in [0, 1). Got 1.5 instead."),
        (lambda: PruneConfig(amount=-0.1),
         "The 'amount' parameter of PruneConfig must be a float in [0, 1). Got -0.1 instead."),
        (lambda: PruneConfig(scope="everywhere"),
         "The 'scope' parameter of PruneConfig must be one of 'layer', 'global'. Got 'everywhere' instead."),
        (lambda: SVDConfig(rank=0), "The 'rank' parameter of SVDConfig must be an int >= 1, a float in (0, 1]"),
        (lambda: SVDConfig(rank=1.5), "Got 1.5 instead."),
        (lambda: SVDConfig(rank="energy:1.2"), "Got 'energy:1.2' instead."),
        (lambda: SVDConfig(rank=True), "Got True instead."),
    ],
)
def test_config_validation_messages(build, message):
    with pytest.raises(jc.InvalidConfigError) as info:
        build()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # two parents: except ValueError keeps working


def test_configs_are_frozen_and_keyword_only():
    config = PruneConfig(amount=0.2)
    with pytest.raises(AttributeError):
        config.amount = 0.9
    with pytest.raises(TypeError):
        PruneConfig(0.2)


# -- selectors -----------------------------------------------------------------------
def test_selector_by_name_regex_type_and_exclusion():
    model, _ = make("cnn")
    supported = (nn.Linear, nn.Conv2d)
    assert Selector(layers=("fc",)).select(model, supported) == ["fc"]
    assert Selector(layers=("re:block\\.conv\\d",)).select(model, supported) == ["block.conv1", "block.conv2"]
    assert Selector(types=("Linear",)).select(model, supported) == ["fc", "head"]
    assert Selector(types=(nn.Conv2d,), exclude=("stem",)).select(model, supported) == ["block.conv1", "block.conv2"]
    assert Selector(exclude=("re:.*conv.*", "head")).select(model, supported) == ["stem.0", "fc"]


def test_selector_errors():
    model, _ = make("cnn")
    with pytest.raises(jc.SelectorError, match="matches no layer"):
        Selector(layers=("re:nothing.*",)).select(model, (nn.Linear,), "svd")
    with pytest.raises(jc.SelectorError, match="no layer named 'blok.conv1'. Did you mean 'block.conv1'?"):
        Selector(layers=("blok.conv1",)).select(model, (nn.Conv2d,))
    with pytest.raises(jc.LayerNotSupportedError, match="Layer 'block.bn1' is a BatchNorm2d; svd handles Linear"):
        Selector(layers=("block.bn1",)).select(model, (nn.Linear,), "svd")
    with pytest.raises(jc.SelectorError, match="Unknown module type 'Linaer'"):
        Selector(types=("Linaer",))
    with pytest.raises(jc.SelectorError, match="Invalid regex"):
        Selector(layers=("re:(",))


def test_plan_of_and_coerce():
    plan = Plan.of(SVDConfig(rank=0.5), PruneConfig(amount=0.5), seed=3)
    assert [s.method for s in plan.steps] == ["svd", "prune"]
    assert Plan.coerce(plan.to_yaml()) == plan
    assert Plan.coerce(plan.to_dict()) == plan
    assert Plan.coerce([SVDConfig(rank=0.5)]).steps[0].config == SVDConfig(rank=0.5)
    with pytest.raises(jc.PlanError, match="Cannot make a plan from a int"):
        Plan.coerce(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Plan.from_yaml(plan.to_yaml())  # a plan we wrote reads back without warnings
