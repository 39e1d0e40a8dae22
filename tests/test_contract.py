"""Contract tests run for every registered method on three model families (MLP, CNN with
BatchNorm and a residual block, a transformer block), in the style of scikit-learn's
``parametrize_with_checks``: adding a method to the registry adds it here automatically."""

from __future__ import annotations

import json

import pytest
import torch
from models import FAMILIES, make

import jupyter_compress as jc
from jupyter_compress.core.registry import get_method, method_names


def _applies(method: str, family: str) -> bool:
    # a method for one layer type (e.g. Conv2d for tucker / cp) has nothing to do on a family without it:
    # such pairs are not cases at all ("changed no layer" would be the family's fault, not the method's)
    return any(isinstance(m, get_method(method).supported) for m in make(family)[0].modules())


CASES = [(m, f) for m in method_names() for f in FAMILIES if _applies(m, f)]


def test_every_method_has_a_contract_case():
    assert {m for m, _ in CASES} == set(method_names())


def default_config(method: str):
    config = get_method(method).config_cls()
    if get_method(method).family == "runtime":
        # measured, PyTorch itself is the fastest route for these tiny models (the step then changes nothing,
        # rightly); the contract is about a step that does change the model, so a runtime is forced
        import dataclasses

        config = dataclasses.replace(config, backend="onnxruntime")
    return config


def contract_plan(method: str, seed: int = 0) -> jc.Plan:
    # a recovery procedure (family 'distillation') trains the model towards the model as it was before the
    # plan: alone, on an uncompressed model, the student already equals its teacher (zero loss, nothing to
    # do), so its contract case runs it after a pruning step, as users do ("compress, then distil")
    if get_method(method).family == "distillation":
        return jc.Plan.of(jc.PruneConfig(amount=0.5), default_config(method), seed=seed)
    return jc.Plan.of(default_config(method), seed=seed)


def contract_data(method: str, x):
    return x if get_method(method).family == "distillation" else None  # unlabelled inputs are enough


@pytest.mark.parametrize("method", method_names())
def test_config_round_trips_through_json(method):
    config = default_config(method)
    data = json.loads(json.dumps(config.to_dict()))
    assert type(config).from_dict(data) == config
    plan = jc.Plan.of(config, seed=3)
    assert jc.Plan.from_json(plan.to_json()) == plan
    assert jc.Plan.from_yaml(plan.to_yaml()) == plan


@pytest.mark.parametrize("method,family", CASES)
def test_contract(method, family):
    model, x = make(family)
    original_hash = jc.state_dict_hash(model)
    with torch.no_grad():
        ref = model(x)
    plan = contract_plan(method, seed=7)
    # example inputs are given to every method: structured pruning traces with them, all report latency

    small, report = jc.compress(model, plan, example_inputs=x, data=contract_data(method, x))

    # the live model is untouched by compress
    assert jc.state_dict_hash(model) == original_hash
    # the method did something
    assert report.compressed_rows, f"{method} changed no layer of {family}"
    assert jc.state_dict_hash(small) != original_hash
    # output shape kept
    with torch.no_grad():
        out = small(x)
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    # parameters never grow, per layer and in total
    assert jc.count_params(small) <= jc.count_params(model)
    assert all(r.params_after <= r.params_before for r in report.rows)
    # report totals equal the sum of rows, and agree with the model-level counts
    totals = report.totals
    for key in totals:
        assert totals[key] == sum(getattr(r, key) for r in report.rows)
    assert report.model_params_before - report.model_params_after == totals["params_before"] - totals["params_after"]
    assert (report.model_nonzeros_before - report.model_nonzeros_after
            == totals["nonzeros_before"] - totals["nonzeros_after"])
    assert report.model_params_after == jc.count_params(small)
    # replaying the saved plan on a fresh copy with the same seed gives an identical state_dict
    replayed_plan = jc.Plan.from_yaml(jc.Plan.from_dict(report.plan).to_yaml())
    fresh, _ = make(family)
    again, _ = jc.compress(fresh, replayed_plan, example_inputs=x, data=contract_data(method, x))
    assert jc.state_dict_hash(again) == jc.state_dict_hash(small)


@pytest.mark.parametrize("method,family", CASES)
def test_inplace_then_revert_is_bit_exact(method, family):
    model, x = make(family)
    original_hash = jc.state_dict_hash(model)
    modules_before = dict(model.named_modules())
    with torch.no_grad():
        ref = model(x)
    report = jc.compress_(model, contract_plan(method), example_inputs=x, data=contract_data(method, x))
    assert report.inplace
    assert jc.state_dict_hash(model) != original_hash
    jc.revert_(model)
    assert jc.state_dict_hash(model) == original_hash
    assert dict(model.named_modules()).keys() == modules_before.keys()
    assert all(model.get_submodule(n) is m for n, m in modules_before.items() if n)
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    with pytest.raises(jc.NothingToRevertError):
        jc.revert_(model)
