"""Every registered method on models users bring (tests/zoo.py: Hugging Face architectures built from their
config classes, and hand-written hard cases), each called with its natural inputs (a tokenizer's
``BatchEncoding``, ``pixel_values``, a dict).

For every (model, method) pair where the method has a layer to act on, the outcome is one of:
- works: the compressed model runs on the natural inputs with the same output shape, the original is
  bit-identical, the model is not larger (parameters and bytes), tied weights stay tied, and a save/load
  round trip gives the same state_dict hash and the same output;
- refused: a one-line CompressError, the original bit-identical.
Anything else (a raw traceback, silent growth) fails its pair. At least 90% of the pairs must work.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings

import pytest
import torch
import zoo

import jupyter_compress as jc
from jupyter_compress.core.inputs import call_model
from jupyter_compress.core.metrics import primary_output
from jupyter_compress.core.registry import get_method, method_names
from jupyter_compress.core.ties import tied_groups

pytestmark = pytest.mark.slow


def _plan(method: str) -> jc.Plan:
    config = get_method(method).config_cls()
    if get_method(method).family == "distillation":  # recovery after a compression step, as users run it
        return jc.Plan.of(jc.PruneConfig(amount=0.5), config, seed=1)
    if method == "quantize.smoothquant":  # a float step before int8, not a compression alone: as users run it
        return jc.Plan.of(config, jc.DynamicQuantConfig(backend="torch"), seed=1)
    return jc.Plan.of(config, seed=1)


def _applies(model: torch.nn.Module, method: str) -> bool:
    supported = get_method(method).supported
    return any(isinstance(m, supported) for m in model.modules() if m is not model)


def _tie_sets(model: torch.nn.Module) -> set[frozenset[str]]:
    return {frozenset(f"{m}.{p}" for m, p in group) for group in tied_groups(model)}


@dataclasses.dataclass
class Outcome:
    kind: str  # works / refused / larger / broken
    detail: str = ""


def _run_pair(name: str, method: str) -> Outcome:
    model, x, _ = zoo.make(name)
    before = jc.state_dict_hash(model)
    ties = _tie_sets(model)
    with torch.no_grad():
        ref = primary_output(call_model(model, x))
    data = x if get_method(method).family == "distillation" else None
    try:
        small, report = jc.compress(model, _plan(method), example_inputs=x, data=data, measure=False)
    except jc.CompressError as exc:
        if jc.state_dict_hash(model) != before:
            return Outcome("broken", "refused but the original changed")
        if "\n" in str(exc).strip():
            return Outcome("broken", f"refusal is not one line: {exc}")
        return Outcome("refused", str(exc))
    except Exception as exc:  # a raw traceback is what this suite exists to rule out
        return Outcome("broken", f"raw {type(exc).__name__}: {str(exc)[:300]}")
    if jc.state_dict_hash(model) != before:
        return Outcome("broken", "the original changed")
    with torch.no_grad():
        out = primary_output(call_model(small, x))
    if out is None or out.shape != ref.shape or not torch.isfinite(out).all():
        return Outcome("broken", f"output {None if out is None else tuple(out.shape)} vs {tuple(ref.shape)}")
    larger = (report.model_bytes_after > report.model_bytes_before
              or report.model_params_after > report.model_params_before)
    if larger and not (report.headline or "").startswith("WARNING: LARGER"):
        return Outcome("broken", "the model grew and the report does not say so first")
    left_tied = any("tied" in n for n in report.notes)
    if not ties <= _tie_sets(small) and not left_tied:
        return Outcome("broken", f"ties lost: {ties - _tie_sets(small)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = jc.save(small, report, os.path.join(tmp, "a.safetensors"), example_inputs=x)
        back = jc.load(lambda: zoo.make(name)[0], path)
    if jc.state_dict_hash(back) != jc.state_dict_hash(small):
        return Outcome("broken", "save/load changed the state_dict")
    with torch.no_grad():
        again = primary_output(call_model(back, x))
    if not torch.equal(again, out):
        return Outcome("broken", f"save/load changed the output by {float((again - out).abs().max()):.3g}")
    if larger:
        return Outcome("larger", report.headline)
    return Outcome("works")


def _pairs() -> list[tuple[str, str]]:
    pairs = []
    for name in zoo.ZOO:
        model = zoo.make(name)[0]
        pairs += [(name, m) for m in method_names()
                  if _applies(model, m) or get_method(m).family == "distillation"]
    return pairs


PAIRS = _pairs()
_OUTCOMES: dict[tuple[str, str], Outcome] = {}


def outcome(name: str, method: str) -> Outcome:
    if (name, method) not in _OUTCOMES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _OUTCOMES[name, method] = _run_pair(name, method)
    return _OUTCOMES[name, method]


@pytest.mark.parametrize("name,method", PAIRS, ids=[f"{n}-{m}" for n, m in PAIRS])
def test_pair_works_or_is_refused_in_one_line(name, method):
    result = outcome(name, method)
    assert result.kind != "broken", f"{name} / {method}: {result.detail}"


def test_at_least_90_percent_of_pairs_work():
    results = {pair: outcome(*pair) for pair in PAIRS}
    works = [p for p, r in results.items() if r.kind == "works"]
    others = {f"{n}/{m}": f"{r.kind}: {r.detail[:160]}" for (n, m), r in results.items() if r.kind != "works"}
    assert len(works) / len(PAIRS) >= 0.9, f"{len(works)}/{len(PAIRS)} work; the others: {others}"


def test_the_zoo_covers_the_named_architectures():
    assert {"bert", "distilbert", "gpt2", "t5_encoder", "vit", "wav2vec2", "hf_resnet", "convnext",
            "mobilevit", "tied_lm", "dict_model", "lstm_lm", "raw_param"} <= set(zoo.ZOO)
    assert len(PAIRS) >= 9 * 8
