"""Short plain-language reasons for each strategy, built from what was measured on this model.

The texts follow what a method declares, never its name: its stage (structure, factorization, sparsity,
precision, recovery), the layer types it supports (the share of the model they hold), what it requires and
whether it trains the whole model.
"""

from __future__ import annotations

from typing import Any

from ..core.registry import Method
from ._profile import layer_kind

__all__ = ["rationale", "why_not"]

# Why a method with an unmet requirement does not qualify, by requirement.
_MISSING = {
    "example_inputs": "{name} traces the model: pass example_inputs=... or data=...",
    "data": "{name} calibrates or trains on data: pass data=... (a few hundred inputs suffice)",
    "labels": "{name} learns from labels: pass data=(X, y)",
    "calibration": "{name} calibrates on data: pass data=... (a few hundred inputs suffice)",
    "train": "{name} runs your training function: measure it with an explicit run",
}


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def why_not(method: Method, kind: str, has_inputs: bool) -> str | None:
    """Why ``method`` does not qualify for a quick probe with the data available (None when it does);
    ``kind`` is ``'none'``, ``'calibration'`` or ``'labelled'``."""
    have = {"example_inputs"} if has_inputs else set()
    have |= {"data", "calibration"} if kind != "none" else set()
    have |= {"labels"} if kind == "labelled" else set()
    missing = [_MISSING[r].format(name=method.name) for r in sorted(method.requires - have)]
    if method.stage == "serving":
        return (f"{method.name} serves the model on a faster runtime and removes nothing: compare(...) measures "
                f"what it buys; add it as the last step of the chosen plan (--runtime)")
    if method.whole_model:
        return (f"{method.name} trains the whole model ({method.family}): a training run, not a quick probe; "
                + (f"it needs more first ({'; '.join(missing)})" if missing else
                   "measure it with compare(...) or an explicit run"))
    return missing[0] if missing else None


def _share(method: Method, profile: dict[str, Any]) -> float:
    """The share of the model's parameters in the kinds of layer ``method`` supports."""
    kinds = {layer_kind(t) for t in method.supported}
    return sum(profile["share"].get(k, 0.0) for k in kinds)


def rationale(method: Method | None, ev: dict[str, Any], profile: dict[str, Any], hw: dict[str, Any],
              target: str) -> str:
    """One or two sentences: what the method does here, with its measured numbers and the reason;
    ``method=None`` for a per-layer mix of methods."""
    size, stored, speed = _x(ev.get("memory_ratio")), _x(ev.get("storage_ratio")), _x(ev.get("speedup"))
    drop = f"a drop of {ev['drop']:.3g} in {ev['metric_name']}" if ev.get("drop") is not None else ""
    if method is None:
        return (f"Mixes methods layer by layer, guided by each layer's measured sensitivity and verified on the "
                f"whole model: {size} in memory, {stored} stored, measured speed {speed}; {drop}.")
    stage = method.stage
    if stage == "sparsity" or (stage == "structure" and ev.get("memory_ratio", 1) <= 1.001):
        return (f"Zeroes weights inside dense tensors: {stored} smaller only when stored sparse, the same "
                f"{size} in memory, and dense kernels do the same work (measured speed {speed}), so it will "
                f"not speed up on the {target} target; {drop}. Pair it with quantization or a sparse storage format.")
    if stage == "structure":
        return (f"Removes whole channels, so the model itself is smaller ({size} fewer bytes) and does fewer "
                f"multiply-adds (measured speed {speed}) on any hardware; {drop}. Fine-tuning recovers most "
                f"of a larger drop.")
    if stage == "factorization":
        return (f"Factorizes layers into smaller ones ({size}); they hold {_share(method, profile):.0%} of this "
                f"{profile['kind']} model's weights; {drop}. Too low a rank loses information: check the "
                f"sensitivity curves before going further.")
    if stage == "precision":
        if target == "gpu":
            why = "on a GPU, int8 needs dedicated kernels; half precision is the usual first step"
        elif hw["vnni"]:
            why = f"this CPU has int8 dot-product instructions ({', '.join(hw['int8_extensions'][:2])})"
        elif hw["engines"]:
            why = (f"torch offers int8 kernels here ({', '.join(hw['engines'])}) but this CPU lacks VNNI, "
                   f"so the gain is mostly memory")
        else:
            why = "torch offers no int8 engine here, so expect memory savings, not speed"
        return f"Stores weights in fewer bits: {size} smaller in memory, measured speed {speed}; {drop}; {why}."
    return f"{method.name}: {size} in memory, {stored} stored, speed {speed}; {drop}."
