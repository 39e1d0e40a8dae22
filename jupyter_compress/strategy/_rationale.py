"""Short plain-language reasons for each strategy, built from what was measured on this model."""

from __future__ import annotations

from typing import Any

__all__ = ["rationale", "why_not"]


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def why_not(method: dict[str, Any], kind: str, has_inputs: bool) -> str | None:
    """Why a method does not qualify with the data available (None when it does)."""
    name, family = method["name"], method["family"]
    if family == "distillation":
        if kind != "labelled":
            return ("distillation trains a smaller student against this model: it needs training data "
                    "(labelled pairs, or plenty of inputs), a training budget and both models running together")
        return "distillation is a training run, not a quick probe: measured only by an explicit distill(...) run"
    if name == "prune.structured" and not has_inputs:
        return "structured pruning traces the model: pass example_inputs=... or data=..."
    if method["needs_data"] and kind == "none" and name != "prune.structured":
        return f"{name} calibrates on data: pass data=... (a few hundred inputs suffice)"
    return None


def rationale(name: str, family: str, ev: dict[str, Any], profile: dict[str, Any], hw: dict[str, Any],
              target: str) -> str:
    """One or two sentences: what the method does here, with its measured numbers and the reason."""
    size, stored, speed = _x(ev.get("memory_ratio")), _x(ev.get("storage_ratio")), _x(ev.get("speedup"))
    drop = f"a drop of {ev['drop']:.3g} in {ev['metric_name']}" if ev.get("drop") is not None else ""
    if name == "prune" or (family == "pruning" and ev.get("memory_ratio", 1) <= 1.001):
        return (f"Zeroes weights inside dense tensors: {stored} smaller only when stored sparse, the same "
                f"{size} in memory, and dense kernels do the same work (measured speed {speed}), so it will "
                f"not speed up on the {target} target; {drop}. Pair it with quantization or a sparse storage format.")
    if family == "pruning":
        return (f"Removes whole channels, so the model itself is smaller ({size} fewer bytes) and does fewer "
                f"multiply-adds (measured speed {speed}) on any hardware; {drop}. Fine-tuning recovers most "
                f"of a larger drop.")
    if family == "decomposition":
        share = profile["share"]["linear" if name in ("svd", "tt") else "conv"]
        return (f"Factorizes layers into smaller ones ({size}); they hold {share:.0%} of this "
                f"{profile['kind']} model's weights; {drop}. Too low a rank loses information: check the "
                f"sensitivity curves before going further.")
    if family == "quantization":
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
    if family == "mixed":
        return (f"Mixes methods layer by layer, guided by each layer's measured sensitivity and verified on the "
                f"whole model: {size} in memory, {stored} stored, measured speed {speed}; {drop}.")
    return f"{name}: {size} in memory, {stored} stored, speed {speed}; {drop}."
