"""``advise``: the practitioner's decision guide, executed on this model.

Which methods qualify depends on the data given (none: post-training methods only; calibration
inputs: static quantization, structured pruning; labelled pairs: distillation and fine-tuning become
options). Each qualifying method is probed on a copy of the model (size in memory, stored size, latency
when inputs are given, metric drop), the results are checked against the limits (``memory_mb``,
``latency_ms``, ``max_drop``) and ranked for the target; each strategy carries its measured evidence
and a short rationale. Nothing is quoted from guides: every number is measured here.
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
from ..core.registry import Method, methods_in_order
from ..errors import InvalidConfigError
from ._measure import storage_bytes
from ._profile import data_kind, hardware, model_profile
from ._rationale import rationale, why_not
from ._settings import SweepSettings
from .sensitivity import measure_plan

__all__ = ["advise", "Advice", "TARGETS"]

TARGETS = ("edge", "mobile", "cpu-server", "gpu")
SPEED_TARGETS = ("cpu-server", "gpu")  # ranked by measured speed first (edge / mobile: by size first)


@dataclasses.dataclass
class Advice:
    """Ranked strategies (dicts: rank, name, family, plan, qualifies, meets, evidence, rationale)."""

    strategies: list[dict[str, Any]]
    target: str
    data: str
    profile: dict[str, Any]
    hardware: dict[str, Any]
    notes: list[str]

    @property
    def best(self) -> dict[str, Any] | None:
        """The first ranked strategy that meets the limits (a strategy measured slower than the original on a
        speed target has no rank: it is never the recommendation)."""
        return next((s for s in self.strategies if s["qualifies"] and s["meets"] and s.get("rank")), None)

    def to_text(self) -> str:
        lines = [f"Advice for a {self.profile['kind']} model ({self.profile['mib']:.2f} MiB), target {self.target}, "
                 f"data: {self.data}."]
        for s in self.strategies:
            if s["qualifies"] and s.get("slower"):
                lines.append(f"-  {s['name']} is not recommended for speed: {s['slower']}. {s['rationale']}")
            elif s["qualifies"]:
                tag = "meets the limits" if s["meets"] else f"misses: {', '.join(s['misses'])}"
                lines.append(f"{s['rank']}. {s['name']} ({tag}): {s['rationale']}")
            else:
                lines.append(f"-  {s['name']} does not qualify: {s['why_not']}.")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def __repr__(self) -> str:
        return self.to_text()


@dataclasses.dataclass
class _Context:
    """What every probe of one ``advise`` call shares."""

    model: nn.Module
    settings: SweepSettings  # eval, data, example inputs, metric, subsample, cache: also what the mix sweeps with
    target: str
    limits: tuple[float | None, float | None, float | None]  # memory_mb, latency_ms, max_drop
    profile: dict[str, Any]
    hw: dict[str, Any]
    inputs: Any  # the example inputs, else the first probe batch (None: latency is not measured)
    base_ms: float | None  # the original's latency

    def evidence(self, model: nn.Module, ev: dict[str, Any]) -> dict[str, Any]:
        """``ev`` with the latency of ``model`` and its speedup, when inputs were given."""
        if self.base_ms is not None:
            ev["latency_ms"] = measure_latency(model, self.inputs, max_time_s=1.0).median_ms
            ev["speedup"] = self.base_ms / max(ev["latency_ms"], 1e-9)
        return ev

    def misses(self, ev: dict[str, Any]) -> list[str]:
        memory_mb, latency_ms, max_drop = self.limits
        out = []
        if memory_mb is not None and ev["bytes"] / 2**20 > memory_mb:
            out.append(f"memory {ev['bytes'] / 2**20:.2f} MiB > {memory_mb:g}")
        if latency_ms is not None and ev.get("latency_ms") is not None and ev["latency_ms"] > latency_ms:
            out.append(f"latency {ev['latency_ms']:.3g} ms > {latency_ms:g}")
        if max_drop is not None and ev["drop"] > max_drop:
            out.append(f"drop {ev['drop']:.3g} > {max_drop:g}")
        return out


def _candidates(kind: str, has_inputs: bool) -> list[tuple[Method, dict[str, Any]]]:
    """Every method the advisor considers, in step order: those its probes cover (``sweep`` declared) and
    the whole-model ones (listed with why they are not probed); a probe runs the method's ``probe`` settings."""
    out = []
    for method in methods_in_order():
        if not (method.sweep or method.whole_model):
            continue
        entry = {"name": method.name, "family": method.family, "why_not": why_not(method, kind, has_inputs)}
        if entry["why_not"] is None:
            entry["plan"] = Plan.of(method.config_cls(**method.probe))
        out.append((method, entry))
    return out


def _probe(ctx: _Context, method: Method, s: dict[str, Any], shared: dict[str, Any]) -> None:
    """Measure one qualifying strategy and fill in its evidence, limits and rationale."""
    try:
        rec = measure_plan(shared, s["plan"])
    except Exception as exc:  # a method that cannot handle this model is reported, not fatal
        s.update(qualifies=False, why_not=f"it failed on this model ({type(exc).__name__}: {exc})")
        return
    new = rec.pop("_model")
    if rec["compressed"] == 0:
        s.update(qualifies=False, why_not=f"it changed no layer of this model ({rec['skipped']})")
        return
    ev = ctx.evidence(new, {"metric_name": shared["scorer"].name, "metric": rec["metric"], "drop": rec["drop"],
                            "bytes": rec["bytes_after"], "memory_ratio": rec["bytes_before"] / max(rec["bytes_after"], 1),
                            "storage_ratio": rec["bytes_before"] / max(rec["storage_after"], 1),
                            "storage_bytes": rec["storage_after"]})
    s.update(evidence=ev, misses=ctx.misses(ev), rationale=rationale(method, ev, ctx.profile, ctx.hw, ctx.target))
    s["meets"] = not s["misses"]


def advise(model: nn.Module, data: Any = None, eval: Callable[[nn.Module], Any] | None = None, *,
           example_inputs: Any = None, target: str = "cpu-server", memory_mb: float | None = None,
           latency_ms: float | None = None, max_drop: float | None = 0.01, time_budget_s: float | None = 120,
           metric: str | None = None, higher_is_better: bool = True, subsample: int | None = 256,
           mix: bool = True, cache_dir: Any = None, tokenizer: Any = None) -> Advice:
    """Ranked strategies for ``model`` under the given limits; see the module docstring.

    With ``mix`` (and time left), a per-layer mix found by :func:`auto` within ``max_drop`` is probed too.
    """
    example_inputs, data = prepare_all(model, example_inputs, data, tokenizer)  # sentences tokenized
    if target not in TARGETS:
        raise InvalidConfigError(f"target must be one of {', '.join(TARGETS)}; got {target!r}.")
    start = time.monotonic()
    kind = data_kind(data)
    settings = SweepSettings(eval=eval, data=data, example_inputs=example_inputs, metric=metric,
                             higher_is_better=higher_is_better, subsample=subsample, cache_dir=cache_dir,
                             progress=False)
    probes = settings.probes()
    inputs = settings.inputs(probes)
    scorer = settings.scorer(probes)
    shared = {"model": model, "scorer": scorer, "baseline": scorer.prepare(model), "example_inputs": inputs,
              "data": data, "keep_model": True}
    base_ms = measure_latency(model, inputs, max_time_s=1.0).median_ms if inputs is not None else None
    ctx = _Context(model, settings, target, (memory_mb, latency_ms, max_drop), model_profile(model), hardware(),
                   inputs, base_ms)
    notes = [] if inputs is not None else ["No inputs were given, so latency was not measured."]
    strategies = []
    for method, s in _candidates(kind, inputs is not None):
        strategies.append(s)
        s.update(qualifies=s["why_not"] is None, meets=False, misses=[], evidence={}, rationale="")
        if not s["qualifies"]:
            continue
        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
            s.update(qualifies=False, why_not="not probed: the time budget ran out first")
            continue
        _probe(ctx, method, s, shared)

    left = None if time_budget_s is None else time_budget_s - (time.monotonic() - start)
    if mix and max_drop is not None and (left is None or left > 5):
        strategies.append(_mixed(ctx, left))

    for s in strategies:
        _mark_slower(s, target)

    def order(s):
        ev = s["evidence"]
        size = ev.get("storage_bytes" if target in ("edge", "mobile") else "bytes", 0)
        speed = -ev.get("speedup", 1.0)
        key = (size, speed) if target in ("edge", "mobile") else (speed, size)
        return (not s["qualifies"], bool(s.get("slower")), not s["meets"], 0.0 if s["meets"] else ev.get("drop", 0.0),
                *key)

    strategies.sort(key=order)
    for i, s in enumerate(x for x in strategies if x["qualifies"] and not x.get("slower")):
        s["rank"] = i + 1
    slower = [s for s in strategies if s.get("slower")]
    if slower and not any(s.get("rank") for s in strategies):
        notes.append(f"Every method probed measured slower than the original on this machine (best "
                     f"{max(s['evidence']['speedup'] for s in slower):.2f}x): for speed on the {target} target, keep "
                     f"the original, or serve it on a faster runtime (compare(...) measures the runtime step).")
    if not any(s["meets"] for s in strategies):
        notes.append("No single method meets every limit: try auto(...) to mix methods per layer, or relax them.")
    if target == "gpu" and not ctx.hw["gpu"]:
        notes.append("No GPU here: latencies were measured on this CPU and only rank the options.")
    return Advice(strategies, target, kind, ctx.profile, ctx.hw, notes)


def _mark_slower(s: dict[str, Any], target: str) -> None:
    """On a speed target, a strategy measured slower than the original is not ranked (never recommended for
    speed) and its rationale says so first, with the figure; ``s['slower']`` holds the reason."""
    speedup = s.get("evidence", {}).get("speedup")
    s["rank"] = None
    if target not in SPEED_TARGETS or not s.get("qualifies") or speedup is None or speedup >= 1.0:
        s["slower"] = None
        return
    s["slower"] = f"measured {speedup:.2f}x the original's speed here, slower"
    s["rationale"] = (f"Measured slower than the original on this machine ({speedup:.2f}x): not a speed option "
                      f"for the {target} target. " + s.get("rationale", ""))


def _mixed(ctx: _Context, left: float | None) -> dict[str, Any]:
    """The per-layer mix :func:`~.auto.auto` finds within ``max_drop`` in the time left, as a strategy."""
    from .auto import search

    max_drop = ctx.limits[2]
    objective = "latency" if ctx.target in ("cpu-server", "gpu") and ctx.inputs is not None else "size"
    found = search(ctx.model, ctx.settings, max_drop=max_drop, objective=objective, max_trials=8, time_budget_s=left)
    entry = {"name": "mixed per layer (auto)", "family": "mixed", "plan": found.plan, "qualifies": found.met,
             "why_not": None if found.met else "no per-layer mix met max_drop in the time given",
             "meets": False, "misses": [], "evidence": {}, "rationale": ""}
    if found.met:
        r = found.report
        stored = storage_bytes(r)
        ev = ctx.evidence(found.model, {
            "metric_name": found.sensitivity.metric, "metric": next(iter(r.metrics_after.values())),
            "drop": found.trials and min(t["drop"] for t in found.trials if t["plan"] == found.plan),
            "bytes": r.model_bytes_after, "memory_ratio": r.model_bytes_before / max(r.model_bytes_after, 1),
            "storage_ratio": r.model_bytes_before / max(stored, 1), "storage_bytes": stored})
        entry.update(evidence=ev, misses=ctx.misses(ev), rationale=rationale(None, ev, ctx.profile, ctx.hw, ctx.target))
        entry["meets"] = not entry["misses"]
    return entry
