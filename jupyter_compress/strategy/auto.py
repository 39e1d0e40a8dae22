"""``auto``: the smallest (or fastest) plan whose metric stays within a budget.

1. Sensitivity curves (cached; see :mod:`.sensitivity`) give, per unit, options with a measured drop
   and saving. 2. A greedy choice under an *estimated* budget ``lam * max_drop`` (drops assumed to add
   up) gives a mixed plan, verified by one real evaluation; ``lam`` is widened while the real drop stays
   in budget and bisected when it does not. 3. The best verified plan is refined one move at a time,
   each checked by a real evaluation. The trial budget (``max_trials`` real evaluations of whole plans)
   and the time budget (``time_budget_s``, sensitivity included) are respected; whatever happens, the
   best plan found and the frontier of every measured trade-off are returned, saying if the budget
   was missed. The plan is an ordinary, reproducible plan.

``objective='size'`` counts bytes in memory (pruned layers at their sparse encoding), ``'latency'`` the median
time of a call, and ``'disk'`` (alias ``'artifact'``) the bytes of the compact artifact ``save(model, plan, path,
compact=True)`` writes (codec zstd), measured for every plan tried; under 'disk' a unit may hold a sparsity and
a precision option together (prune, then share its weights: Deep Compression). See :mod:`._disk`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from torch import nn

from ..core.inputs import prepare_all
from ..core.metrics import measure_latency
from ..core.plan import Plan
from ..core.report import Report
from ..errors import InvalidConfigError
from ._disk import OBJECTIVES, compact_artifact_bytes, disk_options, objective_of
from ._search import greedy, options_from, plan_of
from ._settings import DEFAULT_RATIOS, SweepSettings
from .sensitivity import Sensitivity, measure_plan, sweep

__all__ = ["auto", "search", "AutoResult"]


@dataclasses.dataclass
class AutoResult:
    """``plan``/``model``/``report``: the best plan found; ``frontier``: the non-dominated trials."""

    plan: Plan | None
    model: nn.Module | None
    report: Report | None
    frontier: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    met: bool
    max_drop: float
    objective: str
    sensitivity: Sensitivity
    evaluations: int
    notes: list[str]

    def __repr__(self) -> str:
        head = "budget met" if self.met else "BUDGET NOT MET"
        best = self.plan.describe() if self.plan else "(none)"
        return (f"AutoResult({head}; objective={self.objective}, max_drop={self.max_drop:g}; "
                f"{len(self.trials)} trials, {len(self.frontier)} on the frontier)\n  best: {best}\n"
                + "\n".join(f"  note: {n}" for n in self.notes))


def _frontier(trials: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Trials not beaten on both ``key`` (lower is better) and drop."""
    out = [t for t in trials if not any(o[key] <= t[key] and o["drop"] <= t["drop"]
                                        and (o[key] < t[key] or o["drop"] < t["drop"]) for o in trials)]
    return sorted(out, key=lambda t: t[key])


def auto(
    model: nn.Module,
    *,
    eval: Callable[[nn.Module], Any] | None = None,
    data: Any = None,
    example_inputs: Any = None,
    max_drop: float = 0.01,
    objective: str = "size",
    methods: list[str] | None = None,
    ratios: Any = DEFAULT_RATIOS,
    layers: Any = None,
    metric: str | None = None,
    higher_is_better: bool = True,
    max_trials: int = 20,
    time_budget_s: float | None = None,
    executor: Any = None,
    cache_dir: Any = None,
    subsample: int | None = None,
    progress: bool = True,
    seed: int = 0,
    tokenizer: Any = None,
) -> AutoResult:
    """Search a plan whose drop in the metric is at most ``max_drop``; see the module docstring."""
    example_inputs, data = prepare_all(model, example_inputs, data, tokenizer)
    settings = SweepSettings(eval=eval, data=data, example_inputs=example_inputs, methods=methods, ratios=ratios,
                             layers=layers, metric=metric, higher_is_better=higher_is_better, subsample=subsample,
                             executor=executor, cache_dir=cache_dir, progress=progress, seed=seed)
    return search(model, settings, max_drop=max_drop, objective=objective, max_trials=max_trials,
                  time_budget_s=time_budget_s)


def search(model: nn.Module, settings: SweepSettings, *, max_drop: float = 0.01, objective: str = "size",
           max_trials: int = 20, time_budget_s: float | None = None) -> AutoResult:
    """:func:`auto` with the sensitivity sweep's settings as one value (their own ``time_budget_s`` is
    replaced by a share of this one)."""
    if objective_of(objective) is None:
        raise InvalidConfigError(f"objective must be one of {', '.join(map(repr, OBJECTIVES))} ('artifact' is "
                                 f"'disk'); got {str(objective)[:60]!r}.")
    objective = objective_of(objective)
    if not isinstance(max_drop, (int, float)) or max_drop < 0:
        raise InvalidConfigError(f"max_drop must be a number >= 0 (e.g. 0.01); got {max_drop!r}.")
    if not isinstance(max_trials, int) or max_trials < 1:
        raise InvalidConfigError(f"max_trials must be an int >= 1; got {max_trials!r}.")
    start = time.monotonic()
    deadline = None if time_budget_s is None else start + time_budget_s
    # harsher settings of a unit are not measured once a milder one alone drops past the budget: a plan within
    # max_drop cannot hold them (drops are taken to add up and not to be negative)
    sens = sweep(model, settings.replace(time_budget_s=None if time_budget_s is None else 0.6 * time_budget_s,
                                         stop_above=max_drop, compact_sizes=objective == "disk"))
    seed = settings.seed
    probes = settings.probes()
    inputs = settings.inputs(probes)
    if objective == "latency" and inputs is None:
        raise InvalidConfigError("objective='latency' needs example_inputs=... (or data=...) to time the model.")
    scorer = settings.scorer(probes)
    shared = {"model": model, "scorer": scorer, "baseline": scorer.prepare(model), "example_inputs": inputs,
              "data": settings.data, "keep_model": True}
    base_latency = measure_latency(model, inputs, max_time_s=1.0).median_ms if objective == "latency" else None
    key = {"size": "storage_bytes", "latency": "latency_ms", "disk": "compact_bytes"}[objective]
    options = disk_options(sens.points) if objective == "disk" else options_from(sens.points, objective)
    trials: list[dict[str, Any]] = []
    failed: list[str] = []  # plans that raised: counted against max_trials, named in the notes
    seen: dict[str, dict[str, Any]] = {}
    best: dict[str, Any] = {}
    notes: list[str] = []

    def out_of_budget() -> bool:
        return len(trials) + len(failed) >= max_trials or (deadline is not None and time.monotonic() > deadline)

    def trial(chosen) -> dict[str, Any] | None:
        if not chosen:
            return None
        plan = plan_of(chosen, seed)
        text = plan.to_json()
        if text in seen or out_of_budget():
            return seen.get(text)
        try:
            record = measure_plan(shared, plan)
            new = record.pop("_model")
            t = {"plan": plan, "chosen": chosen, "metric": record["metric"], "drop": record["drop"],
                 "storage_bytes": record["storage_after"], "bytes": record["bytes_after"],
                 "params": record["params_after"], "feasible": record["drop"] <= max_drop}
            if objective == "latency":
                t["latency_ms"] = measure_latency(new, inputs, max_time_s=1.0).median_ms
            if objective == "disk":  # measured: the compact artifact written and counted
                t["compact_bytes"] = compact_artifact_bytes(new, plan)
        except Exception as exc:  # one plan that fails (a combination a method cannot take, the eval on it)
            # ends neither the search nor the plans already measured; it is not retried and the notes name it
            # (KeyboardInterrupt is not an Exception: an interrupt still stops the search)
            why = str(exc).splitlines()[0][:160] if str(exc) else ""
            failed.append(f"[{_describe(chosen)}] {type(exc).__name__}: {why}")
            seen[text] = {"feasible": False, "failed": True}
            return seen[text]
        seen[text] = t
        trials.append(t)
        better = (t["feasible"], -t[key] if t["feasible"] else -t["drop"])
        if not best or better > best["rank"]:
            best.update(trial=t, model=new, rank=better)
        return t

    # 2. widen / bisect the estimated budget
    lo, hi, lam = 0.0, None, 1.0
    for _ in range(8):
        t = trial(greedy(options, lam * max_drop))
        if t is None or out_of_budget():
            break
        if t["feasible"]:
            lo = lam
            lam = lam * 2 if hi is None else (lam + hi) / 2
        else:
            hi = lam
            lam = (lo + lam) / 2
    # 3. refine the best verified plan one move at a time
    improved = True
    while improved and best and not out_of_budget():
        improved = False
        base = best["trial"]
        current = base["chosen"] if base["feasible"] else ()
        step_budget = sum(o.drop for o in current)
        for opt in sorted(options, key=lambda o: -o.saving):
            if out_of_budget():
                break
            nxt = greedy([opt], step_budget + opt.drop, start=current)
            if not nxt or plan_of(nxt, seed).to_json() in seen:
                continue
            t = trial(nxt)
            if t is not None and t["feasible"] and best["trial"] is t:
                improved = True
                break
    if not trials:  # even the mildest estimate found nothing: measure the safest options themselves
        for opt in sorted(options, key=lambda o: o.drop)[:3]:
            trial((opt,))
    if failed:
        notes.append(f"{len(failed)} plan(s) failed and were skipped: " + "; ".join(failed[:3])
                     + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "") + ".")
    return _result(model, best, trials, sens, shared, max_drop, objective, key, base_latency, notes, start)


def _describe(chosen) -> str:
    """A plan's options in a few words (for a note), e.g. 'prune amount=0.5 on fc1; svd rank=0.25 on fc2'."""
    parts = [f"{o.method} {' '.join(f'{k}={v}' for k, v in o.setting)} on {', '.join(o.layers)}"
             for option in chosen for o in option.parts]
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")


def _result(model, best, trials, sens, shared, max_drop, objective, key, base_latency, notes, start):
    met = bool(best) and best["trial"]["feasible"]
    report = None
    if best:
        t = best["trial"]
        from ._measure import compress_quietly  # the report of the kept model, re-made without evaluation

        _, report = compress_quietly(model, t["plan"], example_inputs=shared["example_inputs"], data=shared["data"])
        report.metrics_before = {shared["scorer"].name: shared["baseline"]}
        report.metrics_after = {shared["scorer"].name: t["metric"]}
        if base_latency is not None:
            report.metrics_before["latency_ms"], report.metrics_after["latency_ms"] = base_latency, t["latency_ms"]
        if objective == "disk":
            from ..io.artifact import record_artifact_sizes

            record_artifact_sizes(report, model, best["model"])
    if objective == "disk":
        notes.append("objective='disk' counts the bytes of the compact artifact (save(model, plan, path, "
                     "compact=True), codec zstd), measured for every plan tried; a layer's options are estimated "
                     "from its changed tensors in the compact encoding, pruning and weight sharing stacked. The "
                     "report's disk_*_bytes are of artifacts with the report in their manifest (a few KB more).")
    if not trials:
        notes.append("No plan could be tried: no method compressed any layer; see the sensitivity summary.")
    elif not met:
        t = best["trial"]
        notes.append(f"No plan met the budget (drop <= {max_drop:g}); the closest found drops "
                     f"{t['drop']:.4g}. It is returned with the frontier of every trade-off measured; "
                     f"raise max_drop, max_trials or time_budget_s.")
    if not sens.complete:
        notes.append("The sensitivity sweep was cut short by the time budget; its curves are partial.")
    if sens.pruned:
        notes.append(f"{sens.pruned} sensitivity points not measured: a milder setting of the same method on "
                     f"the same unit already dropped the metric by more than {max_drop:g}.")
    notes.append(f"{sens.measured} sensitivity points measured ({sens.reused} reused from the cache), "
                 f"{len(trials)} plans verified, in {time.monotonic() - start:.1f} s.")
    public = [{k: v for k, v in t.items() if k != "chosen"} for t in trials]
    return AutoResult(plan=best["trial"]["plan"] if best else None, model=best.get("model"), report=report,
                      frontier=_frontier(public, key), trials=public, met=met, max_drop=max_drop,
                      objective=objective, sensitivity=sens, evaluations=sens.measured + len(trials), notes=notes)
