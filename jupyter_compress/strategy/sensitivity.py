"""Sensitivity analysis: how much the metric drops when one layer (or one coupled group) alone is
compressed by one method at one ratio, for every unit, method and ratio asked for.

    >>> sens = sensitivity(model, eval=evaluate, example_inputs=x, ratios=(0.25, 0.5, 0.75))
    >>> print(sens.summary(max_drop=0.01))        # safe vs fragile layers, in plain words
    >>> sens.heatmap("svd")                       # plain columns: layer x ratio -> drop

Each point is an ordinary one-step plan (``Step(config, Selector(layers=[...]))``) applied to a copy,
so it equals what ``compress`` gives for the same plan. Points are cached on disk as JSON keyed by the
model's weights, the data and the eval function, written as they arrive: re-runs, restarted kernels
and interrupted sweeps reuse them. A sweep can run on another executor (``executor=``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from torch import nn

from .. import __version__
from ..core.inputs import prepare_all
from ..core.metrics import state_dict_hash
from ..core.plan import Plan, Step
from ..core.registry import get_method
from ..core.selection import Selector
from ..errors import InvalidConfigError
from ._cache import JsonCache, callable_fingerprint, fingerprint
from ._measure import Scorer, compress_quietly, storage_bytes
from ._sens_result import Sensitivity
from ._settings import DEFAULT_RATIOS, SweepSettings
from ._units import default_methods, levels_for, unit_name, units_for
from .executor import SweepOutcome, run_sweep

__all__ = ["sensitivity", "sweep", "Sensitivity", "SweepSettings", "measure_plan", "point_plan", "DEFAULT_RATIOS"]


def point_plan(method: str, setting: dict[str, Any], layers: list[str], seed: int = 0) -> Plan:
    """The one-step plan a sensitivity point measures."""
    config = get_method(method).config_cls(**setting)
    return Plan((Step(config, Selector(layers=tuple(layers))),), seed=seed)


def measure_plan(shared: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Compress a copy of ``shared['model']`` by ``plan`` and measure score, drop and savings."""
    start = time.perf_counter()
    new, report = compress_quietly(shared["model"], plan, example_inputs=shared.get("example_inputs"),
                                   data=shared.get("data"))
    scorer: Scorer = shared["scorer"]
    value = scorer.score(new)
    skipped = sorted({r.skipped for r in report.skipped_rows})
    return {
        "metric": value,
        "drop": scorer.drop(shared["baseline"], value),
        "bytes_before": report.model_bytes_before,
        "bytes_after": report.model_bytes_after,
        "storage_after": storage_bytes(report),
        "params_before": report.model_params_before,
        "params_after": report.model_params_after,
        "compressed": len(report.compressed_rows),
        "skipped": None if report.compressed_rows else (skipped[0] if skipped else _nothing(report)),
        "seconds": time.perf_counter() - start,
        "_model": new if shared.get("keep_model") else None,
    }


def _nothing(report) -> str:
    notes = [n for n in report.notes if "Kept untouched" in n or "Nothing" in n]
    return notes[0] if notes else "the method left every selected layer unchanged"


def _measure_point(shared: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    plan = point_plan(item["method"], item["setting"], item["layers"], item["seed"])
    if not shared.get("compact_sizes"):
        record = measure_plan(shared, plan)
        record.pop("_model")
        return record
    from ._disk import unit_compact_bytes

    record = measure_plan({**shared, "keep_model": True}, plan)
    record.update(unit_compact_bytes(shared["model"], record.pop("_model")))
    return record


def _check_ratios(ratios: Any) -> tuple[float, ...]:
    try:
        out = tuple(float(r) for r in ratios)
    except TypeError:
        raise InvalidConfigError(f"ratios must be a list of floats in (0, 1); got {ratios!r}.") from None
    if not out or any(not 0 < r < 1 for r in out):
        raise InvalidConfigError(f"ratios must be floats in (0, 1), e.g. (0.25, 0.5, 0.75); got {ratios!r}.")
    return tuple(sorted(set(out)))


def sensitivity(
    model: nn.Module,
    *,
    eval: Callable[[nn.Module], Any] | None = None,
    data: Any = None,
    example_inputs: Any = None,
    methods: list[str] | None = None,
    ratios: Any = DEFAULT_RATIOS,
    layers: Any = None,
    metric: str | None = None,
    higher_is_better: bool = True,
    subsample: int | None = None,
    executor: Any = None,
    cache_dir: Any = None,
    time_budget_s: float | None = None,
    progress: bool = True,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    tokenizer: Any = None,
) -> Sensitivity:
    """Measure every (method, unit, ratio) point; see the module docstring.

    ``eval(model)`` gives the metric (a number or a dict; ``metric`` picks the key), else fidelity
    (output cosine) on ``data`` / ``example_inputs``, cut to ``subsample`` examples. ``methods``
    defaults to the registered per-layer methods that the given data allows. ``cache_dir=False`` turns
    the disk cache off. Ctrl-C or ``time_budget_s`` stop early and keep what was measured. Lists of sentences
    are tokenized by ``tokenizer`` (or the model's own).
    """
    example_inputs, data = prepare_all(model, example_inputs, data, tokenizer)
    return sweep(model, SweepSettings(
        eval=eval, data=data, example_inputs=example_inputs, methods=methods, ratios=ratios, layers=layers,
        metric=metric, higher_is_better=higher_is_better, subsample=subsample, executor=executor,
        cache_dir=cache_dir, time_budget_s=time_budget_s, progress=progress, seed=seed, should_stop=should_stop))


def sweep(model: nn.Module, settings: SweepSettings) -> Sensitivity:
    """:func:`sensitivity` with its settings as one value."""
    s = settings
    ratios = _check_ratios(s.ratios)
    probes = s.probes()
    example_inputs = s.inputs(probes)  # methods that trace the model (coupled groups) use it
    methods = list(s.methods) if s.methods is not None else default_methods(s.data is not None, bool(probes))
    scorer = s.scorer(probes)
    baseline = scorer.prepare(model)

    items: dict[str, dict[str, Any]] = {}
    for name in methods:
        method = get_method(name)
        for unit in units_for(method, model, s.layers, example_inputs):
            for ratio, setting in levels_for(method, ratios):
                key = f"{method.name}|{','.join(unit)}|{json.dumps(setting, sort_keys=True)}"
                items[key] = {"method": method.name, "family": method.family, "unit": unit_name(unit),
                              "layers": unit, "ratio": ratio, "setting": setting, "seed": s.seed}
    key = fingerprint(state_dict_hash(model), probes, s.data, callable_fingerprint(s.eval), scorer.name,
                      s.higher_is_better, s.seed, s.subsample, __version__)
    cache = JsonCache(s.cache_dir, "sensitivity", key, {"metric": scorer.name, "baseline": baseline})
    # a point cached without the compact estimate a 'disk' search needs is measured again
    pending = {k: v for k, v in items.items()
               if k not in cache.points or (s.compact_sizes and "compact_after" not in cache.points[k])}
    reused = len(items) - len(pending)
    deadline = None if s.time_budget_s is None else time.monotonic() + s.time_budget_s

    def stop() -> bool:
        return (deadline is not None and time.monotonic() > deadline) or bool(s.should_stop and s.should_stop())

    shared = {"model": model, "scorer": scorer, "baseline": baseline, "example_inputs": example_inputs,
              "data": s.data, "compact_sizes": s.compact_sizes}
    measured, pruned, note = 0, 0, None
    if s.stop_above is None:
        outcome = run_sweep(_measure_point, pending, shared=shared, executor=s.executor, progress=s.progress,
                            desc="sensitivity", on_result=cache.put, should_stop=stop)
        measured = len(outcome.results)
        note = outcome.note
    else:
        # rounds, mildest setting first: a (method, unit) whose setting already dropped the metric past the
        # budget is not measured at harsher settings (drops grow with the ratio; our search cannot use them)
        chains: dict[tuple, list[str]] = {}
        for k, item in items.items():
            chains.setdefault((item["method"], tuple(item["layers"])), []).append(k)
        errors: dict = {}
        for depth in range(max(map(len, chains.values()), default=0)):
            wave = {}
            for unit, chain in list(chains.items()):
                if depth >= len(chain):
                    continue
                if depth and cache.points.get(chain[depth - 1], {}).get("drop", 0.0) > s.stop_above:
                    pruned += len(chain) - depth
                    del chains[unit]
                elif chain[depth] in pending:
                    wave[chain[depth]] = items[chain[depth]]
            if depth and stop():
                break
            outcome = run_sweep(_measure_point, wave, shared=shared, executor=s.executor, progress=s.progress,
                                desc=f"sensitivity (round {depth + 1})", on_result=cache.put, should_stop=stop)
            measured += len(outcome.results)
            errors.update(outcome.errors)
            note = outcome.note or note
            if outcome.interrupted:
                break
        outcome = SweepOutcome({}, errors)
    points = [{**item, **cache.points[k]} for k, item in items.items() if k in cache.points]
    return Sensitivity(points=points, baseline=baseline, metric=scorer.name, ratios=ratios,
                       complete=len(points) + pruned >= len(items), measured=measured, reused=reused, pruned=pruned,
                       executor_note=note,
                       errors=dict(outcome.errors), cache_path=str(cache.path) if cache.enabled else None)
