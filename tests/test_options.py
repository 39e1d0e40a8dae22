"""The %compress options come from the methods' declarations: a method registered from outside the package
(here, toy methods registered by the test) is an option of the parser at once, with no edit to the magics."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

import jupyter_compress  # noqa: F401  (registers the built-in methods)
from jupyter_compress import options
from jupyter_compress.core.config import IntAtLeast, Interval, MethodConfig, param
from jupyter_compress.core.registry import MagicOption, MethodResult, register_method, unregister_method
from jupyter_compress.core.textvalues import parse_amount


def _nothing(model, names, config, ctx) -> MethodResult:
    return MethodResult({}, [])


@pytest.fixture()
def toys():
    """Two toy methods: ``--toy AMOUNT`` (a sparsity step with a scope) and a ``--quantize toy3`` choice."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ToyConfig(MethodConfig):
        amount: float = param(0.5, help="fraction of toy weights", check=Interval(0.0, 1.0, "[)"))
        scope: str = param("layer", help="toy scope", choices=("layer", "global"))

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ToyQuantConfig(MethodConfig):
        bits: int = param(8, help="toy bits", check=IntAtLeast(1))

    register_method("toy", ToyConfig, supported=(nn.Linear,), family="toys", help="a toy method", dial="amount",
                    stage="sparsity", options=(MagicOption("--toy", "AMOUNT", parse_amount, help="toy"),))(_nothing)
    try:
        register_method("toy.quant", ToyQuantConfig, supported=(nn.Linear,), family="quantization",
                        help="a toy quantizer", stage="precision", order=9,
                        options=(MagicOption("--quantize", "MODE", choice="toy3", fields={"bits": 3},
                                             help="toy3 (a toy)"),))(_nothing)
        try:
            yield ToyConfig, ToyQuantConfig
        finally:
            unregister_method("toy.quant")
    finally:
        unregister_method("toy")


def test_a_registered_method_is_an_option_at_once(toys):
    toy_config, _ = toys
    args = options.parse_args(["model", "--toy", "0.3"])
    plan = options.plan_from_options(args)
    assert [(s.method, s.config) for s in plan.steps] == [("toy", toy_config(amount=0.3))]
    assert plan.steps[0].config.amount == 0.3
    assert options.parse_args(["model", "--toy", "30%"]).toy == 0.3  # one percent parser for every option
    text = options.usage_text()
    assert "--toy AMOUNT" in text and "fraction of toy weights" in " ".join(text.split())
    assert "--toy" in options.method_flags()  # so an emitted cell moves it into the plan body
    with pytest.raises(options.OptionsError, match="--toy amount 'lots' is not a number"):
        options.parse_args(["model", "--toy", "lots"])


def test_a_choice_added_to_a_shared_flag_picks_its_method(toys):
    _, quant_config = toys
    plan = options.plan_from_options(options.parse_args(["model", "--quantize", "toy3"]))
    assert [(s.method, s.config) for s in plan.steps] == [("toy.quant", quant_config(bits=3))]
    quantize = options.build_parser()._option_string_actions["--quantize"]
    assert quantize.help.endswith(" or toy3 (a toy)") and quantize.help.startswith("quantization: ")
    assert ", fp16, bf16, " in quantize.help  # the built-in choices, in registration order
    with pytest.raises(options.OptionsError, match=r"use one of .*bf16, .*toy3\."):
        options.parse_args(["model", "--quantize", "toy4"])


def test_steps_run_in_the_canonical_order_and_scope_reaches_every_step_with_one(toys):
    args = options.parse_args(["model", "--quantize", "toy3", "--toy", "0.2", "--svd", "0.5", "--prune", "0.1",
                               "--scope", "global"])
    plan = options.plan_from_options(args)
    assert [s.method for s in plan.steps] == ["svd", "prune", "toy", "toy.quant"]
    assert plan.steps[1].config.scope == plan.steps[2].config.scope == "global"
    scope = options.build_parser()._option_string_actions["--scope"]
    assert scope.help.startswith("with --prune / --structured / --toy: ")
    lone = options.parse_args(["model", "--svd", "0.5", "--scope", "global"])
    with pytest.raises(options.OptionsError, match="--scope applies to --prune, --structured and --toy, and none"):
        options.refuse_conflicts(lone, has_body=False, inplace=False)


def test_an_unregistered_method_is_no_longer_an_option():
    assert "--toy" not in options.build_parser()._option_string_actions
    with pytest.raises(options.OptionsError, match="unrecognized arguments: --toy"):
        options.parse_args(["model", "--toy", "0.3"])


def test_requirements_are_checked_in_the_words_of_the_declarations():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class TracedConfig(MethodConfig):
        amount: float = param(0.5, help="fraction", check=Interval(0.0, 1.0, "[)"))

        def requirements(self) -> frozenset[str]:
            return frozenset({"data"}) if self.amount > 0.6 else frozenset()

    register_method("toy.traced", TracedConfig, supported=(nn.Linear,), family="toys", help="a traced toy",
                    requires=("example_inputs",), dial="amount",
                    options=(MagicOption("--traced-toy", "AMOUNT", parse_amount, help="traced toy"),))(_nothing)
    try:
        plan = options.plan_from_options(options.parse_args(["model", "--traced-toy", "0.7"]))
        with pytest.raises(options.OptionsError, match="--traced-toy traces the model and needs example inputs"):
            options.check_needs(plan, example=None, data=None)
        with pytest.raises(options.OptionsError, match=r"toy.traced with amount=0.7 needs data: add --data NAME"):
            options.check_needs(plan, example="x", data=None)
        options.check_needs(plan, example="x", data="xy")
    finally:
        unregister_method("toy.traced")


def test_objective_help_says_what_each_objective_measures():
    text = " ".join(options.build_parser().format_help().split())
    for words in ("size (bytes in memory", "latency (time of a call", "disk or artifact (bytes of the compact"):
        assert words in text, words
