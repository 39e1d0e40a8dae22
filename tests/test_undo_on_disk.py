"""In-place undo records kept on disk (core/undo.py), used for big models: revert_ and rollbacks are still
bit-exact with the very same tensor objects, the swapped-out layers hold no memory meanwhile, the files go
away with the record, and a recovery step that needs the model as it was gets the real values back.

The size threshold is lowered to 0 here so that a small model takes the on-disk path."""

from __future__ import annotations

import gc
import sys

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core import undo


@pytest.fixture
def on_disk(monkeypatch, tmp_path):
    monkeypatch.setattr(undo, "SPILL_MIN_BYTES", 0)
    monkeypatch.setenv("JUPYTER_COMPRESS_UNDO_DIR", str(tmp_path))
    monkeypatch.setattr(undo, "_DIR", None)
    return tmp_path


def _model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval(), \
        torch.randn(16, 32)


def _files(folder):
    return sorted(folder.rglob("*.safetensors"))


@pytest.mark.parametrize("plan", [jc.PruneConfig(amount=0.5), jc.SVDConfig(rank=0.5),
                                  jc.Plan.from_yaml("steps: [{method: quantize.half}]")], ids=["prune", "svd", "fp16"])
def test_revert_puts_back_the_same_tensors_bit_for_bit(on_disk, plan):
    model, x = _model()
    before = jc.state_dict_hash(model)
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    report = jc.compress_(model, plan, example_inputs=x)
    assert any("kept on disk" in n for n in report.notes)
    assert _files(on_disk), "no undo file was written"
    # the swapped-out layers hold stand-ins of one element each, with their shapes and dtypes
    swapped = [w for w, m in zip(weights, [m for m in model if not isinstance(m, nn.ReLU)]) if m.weight is not w]
    assert swapped and all(w.untyped_storage().nbytes() <= 8 for w in swapped)
    assert all(tuple(w.shape) in {(64, 32), (64, 64), (10, 64)} for w in weights)
    jc.revert_(model)
    assert jc.state_dict_hash(model) == before
    assert [m.weight for m in model if isinstance(m, nn.Linear)] == weights  # the same Parameter objects
    assert all(a is b for a, b in zip([m.weight for m in model if isinstance(m, nn.Linear)], weights))
    assert not _files(on_disk), "revert_ left undo files behind"


def test_forget_undo_deletes_the_files(on_disk):
    model, x = _model()
    jc.compress_(model, jc.PruneConfig(amount=0.5), example_inputs=x)
    assert _files(on_disk)
    jc.forget_undo(model)
    gc.collect()
    assert not _files(on_disk)


def test_a_failure_after_the_swap_restores_from_disk(on_disk, monkeypatch):
    from jupyter_compress.core import apply as apply_mod

    model, x = _model()
    before = jc.state_dict_hash(model)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(apply_mod, "larger_note", broken)
    with pytest.raises(RuntimeError):
        jc.compress_(model, jc.PruneConfig(amount=0.5), example_inputs=x)
    assert jc.state_dict_hash(model) == before
    gc.collect()
    assert not _files(on_disk)


def test_an_interrupt_at_every_line_with_the_record_on_disk(on_disk):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_transaction import _run, _structure

    plan = jc.PruneConfig(amount=0.5)
    model, x = _model()
    clean, _ = _run(plan, model, x, None)
    jc.revert_(model)
    original, structure = jc.state_dict_hash(model), _structure(model)
    fired = 0
    for at in range(0, clean.count, 3):  # every third line event: the on-disk path doubles the run's lines
        injector, error = _run(plan, model, x, at)
        fired += injector.fired
        if injector.fired and jc.state_dict_hash(model) == original and _structure(model) == structure:
            with pytest.raises(jc.NothingToRevertError):
                jc.revert_(model)
        else:
            jc.revert_(model)
        assert jc.state_dict_hash(model) == original and _structure(model) == structure, at
    assert fired > clean.count // 6


def test_a_recovery_step_distils_from_the_real_original(on_disk, monkeypatch):
    """Distillation after pruning, in place: its teacher is the model before the plan, rebuilt from the
    on-disk record; the result equals the in-memory run's exactly (same seed, same data)."""
    model, x = _model()
    data = torch.randn(64, 32)
    plan = jc.Plan.from_yaml("steps: [{method: prune, amount: 0.5}, {method: distill, epochs: 2, patience: 0}]")
    on = jc.compress_(model, plan, data=data, example_inputs=x)
    assert any("kept on disk" in n for n in on.notes)
    result_on = jc.state_dict_hash(model)
    jc.revert_(model)
    monkeypatch.setattr(undo, "SPILL_MIN_BYTES", 1 << 60)
    off = jc.compress_(model, plan, data=data, example_inputs=x)
    assert not any("kept on disk" in n for n in off.notes)
    assert jc.state_dict_hash(model) == result_on
