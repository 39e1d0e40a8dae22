"""auto(objective='disk'): the compact artifact's bytes, measured; pruning and weight sharing stacked on a layer
(Deep Compression's plan found by the search), smaller than either method alone within the same budget."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from jupyter_compress import Plan, compress, options, state_dict_hash
from jupyter_compress.errors import InvalidConfigError
from jupyter_compress.io.artifact import artifact_sizes
from jupyter_compress.methods.quantize.cluster import ClusteredLayer
from jupyter_compress.strategy._disk import Stack, disk_options, unit_compact_bytes
from jupyter_compress.strategy.auto import auto

PRUNE, CLUSTER = "prune", "quantize.cluster"
KW = dict(max_drop=0.01, cache_dir=False, progress=False)


class SmallMLP(nn.Module):
    """LeNet-300-100's shape, scaled to 8 x 8 digits and a quick test: 64 -> 128 -> 64 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


@functools.lru_cache(maxsize=1)
def trained():
    from jupyter_compress.examples.digits import digits_data, evaluate, fine_tune

    torch.manual_seed(0)
    X_train, X_test, y_train, y_test = digits_data(0)
    model = fine_tune(SmallMLP(), X_train, y_train, epochs=20, lr=2e-3, seed=0)
    return model, evaluate(X_test, y_test), X_test


def _layers(plan: Plan, method: str) -> set[str]:
    return {name for s in plan.steps if s.method == method for name in s.selector.layers}


def test_disk_objective_stacks_pruning_and_sharing_and_beats_each_alone():
    model, ev, X = trained()
    before = state_dict_hash(model)
    res = auto(model, eval=ev, objective="disk", methods=[PRUNE, CLUSTER], **KW)
    assert state_dict_hash(model) == before  # the user's model is untouched
    assert res.met and res.objective == "disk" and res.plan is not None
    common = _layers(res.plan, PRUNE) & _layers(res.plan, CLUSTER)
    assert common, res.plan.describe()
    steps = [s.method for s in res.plan.steps]
    assert steps.index(PRUNE) < steps.index(CLUSTER)  # pruned, then shared
    best = next(t for t in res.trials if t["plan"] == res.plan)
    assert best["drop"] <= 0.01
    # the trial's bytes are the real compact artifact of the model found, saved with the plan
    assert best["compact_bytes"] == artifact_sizes(res.model, res.plan)["disk_compact_bytes"]
    assert best["compact_bytes"] == min(t["compact_bytes"] for t in res.trials if t["feasible"])
    # the plan alone rebuilds the model and its drop
    small, report = compress(model, Plan.from_yaml(res.plan.to_yaml()), eval=ev)
    assert state_dict_hash(small) == state_dict_hash(res.model)
    assert report.metrics_before["accuracy"] - report.metrics_after["accuracy"] <= 0.01 + 1e-12
    # sharing kept the pruned zeros: each common layer is at least as sparse as its pruning step made it
    for name in common:
        layer = res.model.get_submodule(name)
        assert isinstance(layer, ClusteredLayer) and float(layer.codebook[0]) == 0.0
        amount = next(s.config.amount for s in res.plan.steps if s.method == PRUNE and name in s.selector.layers)
        zeros = float((layer.decoded_weight() == 0).float().mean())
        assert zeros >= amount - 1e-3, (name, zeros, amount)
    # the report carries the measured artifact sizes, the note says what was counted
    after, before_m = res.report.metrics_after, res.report.metrics_before
    assert after["disk_compact_bytes"] < before_m["disk_compact_bytes"] < before_m["disk_artifact_bytes"]
    assert any("compact artifact" in n and "zstd" in n for n in res.notes)
    # either method alone, searched the same way, ends with a bigger compact artifact
    for method in (PRUNE, CLUSTER):
        alone = auto(model, eval=ev, objective="disk", methods=[method], **KW)
        assert alone.met
        assert after["disk_compact_bytes"] < alone.report.metrics_after["disk_compact_bytes"], method
        one = next(t for t in alone.trials if t["plan"] == alone.plan)
        assert best["compact_bytes"] < one["compact_bytes"], method
    assert state_dict_hash(model) == before


def test_stack_estimate_is_multiplicative_and_drops_add_up():
    point = dict(family="f", unit="fc1", layers=["fc1"], ratio=0.5)
    points = [{**point, "method": PRUNE, "setting": {"amount": 0.5}, "drop": 0.002,
               "compact_before": 1000, "compact_after": 600},
              {**point, "method": CLUSTER, "setting": {"bits": 4}, "drop": 0.003,
               "compact_before": 1000, "compact_after": 200},
              {**point, "method": CLUSTER, "setting": {"bits": 8}, "drop": 0.001,
               "compact_before": 1000, "compact_after": 1100}]  # saves nothing: no option
    opts = disk_options(points)
    stacks = [o for o in opts if isinstance(o, Stack)]
    assert len(opts) == 3 and len(stacks) == 1
    stack = stacks[0]
    assert [p.method for p in stack.parts] == [PRUNE, CLUSTER]
    assert stack.saving == pytest.approx(1000 - 1000 * 0.6 * 0.2)
    assert stack.drop == pytest.approx(0.005)


def test_unit_estimate_counts_only_changed_tensors():
    model, _, _ = trained()
    small, _ = compress(model, Plan.of(options_config(PRUNE, amount=0.9)), measure=False)
    est = unit_compact_bytes(model, small)
    assert 0 < est["compact_after"] < est["compact_before"]
    same = unit_compact_bytes(model, model)
    assert same == {"compact_before": 0, "compact_after": 0}


def options_config(method: str, **fields):
    from jupyter_compress.core.registry import get_method

    return get_method(method).config_cls(**fields)


def test_objective_alias_and_bad_value():
    model, ev, _ = trained()
    res = auto(model, eval=ev, objective="artifact", methods=[CLUSTER], max_trials=1, **KW)
    assert res.objective == "disk" and "compact_bytes" in res.trials[0]
    with pytest.raises(InvalidConfigError) as err:
        auto(model, eval=ev, objective="compact", methods=[CLUSTER], **KW)
    text = str(err.value)
    assert "\n" not in text and "'compact'" in text and "'disk'" in text and "'size'" in text


def test_magic_option_accepts_disk():
    args = options.parse_args(["model", "--auto", "--objective", "disk"])
    assert args.auto and args.objective == "disk"
    with pytest.raises(options.OptionsError, match="invalid choice: 'disks'"):
        options.parse_args(["model", "--auto", "--objective", "disks"])


def test_only_a_sparsity_option_goes_before_another_in_a_stack():
    # a factorization or an int8 step replaces the layer with another type that the next step cannot take
    # (found by a user's `%compress cnn --auto --objective disk`: Tucker, then pruning 'conv2', a TuckerConv2d)
    point = dict(family="f", unit="conv2", layers=["conv2"], ratio=0.5, drop=0.001, compact_before=1000,
                 compact_after=500)
    points = [{**point, "method": "tucker", "setting": {"rank": 0.5}},
              {**point, "method": PRUNE, "setting": {"amount": 0.5}},
              {**point, "method": "quantize.weight", "setting": {"bits": 8}},
              {**point, "method": CLUSTER, "setting": {"bits": 4}}]
    stacks = [o for o in disk_options(points) if isinstance(o, Stack)]
    assert sorted(tuple(p.method for p in s.parts) for s in stacks) == sorted(
        [(PRUNE, "quantize.weight"), (PRUNE, CLUSTER)])


def test_disk_search_on_a_cnn_with_every_default_method_runs_its_plans():
    from jupyter_compress.examples.digits import evaluate, train_digits_cnn

    cnn, X, y = train_digits_cnn(epochs=2)
    before = state_dict_hash(cnn)
    result = auto(cnn, eval=evaluate(X, y), objective="disk", max_drop=0.01, max_trials=6, progress=False)
    assert result.trials and result.plan is not None
    assert state_dict_hash(cnn) == before
    small, _ = compress(cnn, result.plan, measure=False)  # the plan found replays as an ordinary plan
    assert artifact_sizes(small, result.plan)["disk_compact_bytes"] < artifact_sizes(cnn)["disk_compact_bytes"]
