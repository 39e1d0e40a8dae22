"""``compress_`` is transactional at every point: a KeyboardInterrupt injected at each line event of the
in-place verb (core/apply.py, core/steps.py, core/modules.py and the core modules it calls while it runs: statistics, notes, the report)
leaves the model either bit-identical with the same modules, with nothing to revert, or (only once the
method has completed) compressed with a working undo record, and the error says which.

Injection uses sys.settrace: the trace function raises KeyboardInterrupt in the traced frame at the Nth
line event, for every N of a clean run.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core import apply as apply_mod

CORE = os.path.dirname(apply_mod.__file__)
# the in-place verb's own modules: where it swaps, measures, builds notes and the report, and commits
TRACED = {os.path.join(CORE, f) for f in ("apply.py", "steps.py", "modules.py", "coverage.py", "report.py", "ties.py",
                                          "metrics.py")}


def _model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    return model, torch.randn(4, 16)


def _structure(model: nn.Module) -> list[tuple[str, type]]:
    return [(name, type(m)) for name, m in model.named_modules()]


class _Injector:
    """Counts line events in the traced files; raises KeyboardInterrupt at event ``at`` (None: never)."""

    def __init__(self, at: int | None):
        self.at, self.count, self.fired = at, 0, False

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename not in TRACED:
            return None
        return self._local

    def _local(self, frame, event, arg):
        if event == "line":
            if self.count == self.at:
                self.fired = True
                self.count += 1
                raise KeyboardInterrupt(f"injected at line event {self.at}")
            self.count += 1
        return self._local


def _run(plan, model, x, at):
    injector = _Injector(at)
    sys.settrace(injector)
    try:
        jc.compress_(model, plan, example_inputs=x, eval=lambda m: float(m(x).detach().sum()))
        error = None
    except KeyboardInterrupt as exc:
        error = exc
    finally:
        sys.settrace(None)
    return injector, error


PLANS = {
    "prune": jc.PruneConfig(amount=0.5),
    "svd": jc.SVDConfig(rank=0.5),
    "int8": jc.Plan.from_yaml("steps: [{method: quantize.dynamic}]"),
    "structured": jc.StructuredPruneConfig(amount=0.25),
}


@pytest.mark.parametrize("method", list(PLANS))
def test_an_interrupt_at_every_line_leaves_the_model_whole_or_compressed_with_undo(method):
    plan = PLANS[method]
    model, x = _model()
    clean, error = _run(plan, model, x, None)
    assert error is None and clean.count > 50, clean.count  # the trace saw the verb run
    jc.revert_(model)
    original = jc.state_dict_hash(model)
    structure = _structure(model)
    outcomes = {"unchanged": 0, "compressed with undo": 0}
    for at in range(clean.count):
        injector, error = _run(plan, model, x, at)
        if not injector.fired:  # a run can take fewer line events than the counting run (cache hits)
            assert error is None
            jc.revert_(model)
            continue
        assert error is not None, f"event {at}: the injected interrupt was swallowed"
        notes = " ".join(getattr(error, "__notes__", []))
        if jc.state_dict_hash(model) == original and _structure(model) == structure:
            with pytest.raises(jc.NothingToRevertError):
                jc.revert_(model)
            assert "revert_" not in notes, f"event {at}: the error says compressed, the model is not"
            outcomes["unchanged"] += 1
        else:
            assert "revert_(model) undoes it" in notes, f"event {at}: compressed, and the error does not say so"
            jc.revert_(model)  # a working undo record: bit-identical afterwards
            assert jc.state_dict_hash(model) == original and _structure(model) == structure, f"event {at}"
            outcomes["compressed with undo"] += 1
    # both outcomes are reached: interrupts before the commit roll back, the last lines come after it; most
    # injection points fire (runs after the first take fewer events where a method caches its analysis)
    assert outcomes["unchanged"] > 0 and outcomes["compressed with undo"] > 0, outcomes
    assert outcomes["unchanged"] + outcomes["compressed with undo"] >= clean.count // 2, outcomes


def test_an_exception_after_the_swap_rolls_back_and_says_so(monkeypatch):
    model, x = _model()
    original = jc.state_dict_hash(model)

    def broken(*args, **kwargs):
        raise RuntimeError("report failed")

    monkeypatch.setattr(apply_mod, "larger_note", broken)
    with pytest.raises(RuntimeError, match="report failed") as info:
        jc.compress_(model, jc.PruneConfig(amount=0.5), example_inputs=x)
    assert jc.state_dict_hash(model) == original
    assert any("exactly as it was" in n for n in getattr(info.value, "__notes__", []))
    with pytest.raises(jc.NothingToRevertError):
        jc.revert_(model)
