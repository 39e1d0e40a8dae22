"""Serve the (compressed) model on the fastest runtime of this CPU, measured on the user's inputs (issue 21).

Pruned and low-rank models have fewer MACs, but PyTorch eager realises only part of that on a CPU (about
0.65 of the MAC ratio for structured 50% ResNet-18 at batch 1). Graph runtimes fuse convolutions with their
batch norms and activations and plan memory ahead, so more of the saving shows. This step moves each block
of the model (the outermost submodules called with tensors: a ResNet stage, a BERT model, a classifier head)
to OpenVINO (f32, or bf16 where the CPU has it), ONNX Runtime, or leaves it in PyTorch: every candidate is
built, checked for fidelity (the model's output cosine to the float model's, on the calibration data) and
timed on the example inputs; the fastest within ``min_cosine`` wins. The choice is recorded in the plan
(``backend``), so a replay builds the same route without measuring. Runs last in a plan: once a block is a
runtime graph, no other method can change its layers.

No library measures these routes against each other on a live module and keeps the module's call
interface, so this is ours; the exports and runtimes are the maintained ones (torch.onnx, OpenVINO).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..core.config import Interval, MethodConfig, Text, param
from ..core.registry import MagicOption, MethodResult, register_method
from ..core.report import LayerRow
from ..core.ties import tied_groups
from ..errors import CompressError
from ._common import LINEAR_TYPES, describe_module
from .quantize._common import calibration_batches, run_batches
from .quantize.ort import export_quantized, ort_available
from .quantize.ov import INSTALL, export_openvino, ov_available
from .quantize.padding import TRIM_MODES, padding_reaches_output, trim_note
from .quantize.regions import _flat_args, plan_regions
from .quantize.routes import Route, bf16_capable, measure_routes, timing_text

__all__ = ["RuntimeConfig", "serving_regions"]

BACKENDS = ("auto", "openvino", "openvino-bf16", "onnxruntime", "torch")
_SUPPORTED = (*LINEAR_TYPES, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimeConfig(MethodConfig):
    """Run each block of the model on the fastest runtime measured within the fidelity budget."""

    backend: str = param("auto", help="'auto': measure OpenVINO, ONNX Runtime and PyTorch on the example inputs "
                         "and keep the fastest within min_cosine (recorded in the plan); or force one",
                         choices=BACKENDS)
    min_cosine: float = param(0.999, help="fidelity budget of backend='auto': the model's output must keep this "
                              "mean cosine to float on the calibration data (bf16 routes are held to it)",
                              check=Interval(0.0, 1.0))
    unit: str = param("auto", help="'model': the whole model as one graph (compress() on a copy; no PyTorch "
                       "between blocks, the fastest); 'blocks': each block called with tensors (keeps your model "
                       "object: compress_ in place); 'auto': the model where it can, else blocks",
                       choices=("auto", "model", "blocks"))
    seq_bucket: int = param(0, help="OpenVINO blocks called with a 2-D attention_mask: pad the sequence to a "
                            "multiple of this, one compiled graph per padded length (faster at repeated shapes, "
                            "~0.3 s and ~60 MB per new length for MiniLM); 0: one dynamic-shape graph",
                            check=Interval(0, 512, integer=True))
    trim_padding: str = param("auto", help="OpenVINO blocks called with a right-padded 2-D attention_mask: run the "
                              "rows in groups of similar length, each cut to its longest row; padded positions "
                              "of the block's output come back as zeros. 'auto': where the model's output was "
                              "seen not to read them (recorded in the plan); 'on': always; 'off': never",
                              choices=TRIM_MODES)
    keep: str = param("", help="blocks that stay in PyTorch, comma-separated (auto records those where PyTorch "
                      "measured fastest, so a replay keeps them too)", check=Text(max_length=4000))


def serving_regions(model: nn.Module, names: list[str], calls: dict, ties) -> list[tuple[str, list[str]]]:
    """The outermost submodules (never the model itself) called with tensors and constants, holding the
    named layers and sharing no weight outside themselves; layers in none of them stay in PyTorch."""
    out: list[tuple[str, list[str]]] = []

    def tied_outside(path: str) -> bool:
        return any(any(inside) and not all(inside)
                   for inside in ([m.startswith(path + ".") or m == path for m, _ in g] for g in ties))

    def visit(path: str, group: list[str]) -> None:
        if path and path in calls and _flat_args(calls[path]) and not tied_outside(path):
            out.append((path, group))
            return
        children: dict[str, list[str]] = {}
        for name in group:
            if name == path:
                continue
            rel = name[len(path) + 1:] if path else name
            children.setdefault(f"{path}.{rel.split('.')[0]}" if path else rel.split(".")[0], []).append(name)
        for child, members in children.items():
            visit(child, members)

    visit("", names)
    return out


def _root_call(model: nn.Module, inputs: Any) -> tuple | None:
    """(args, kwargs, output) of the model called on ``inputs``, when it takes tensors and constants only."""
    from ..core.inputs import call_args
    from ..core.metrics import eval_mode
    from .quantize._common import fresh

    args, kwargs = call_args(model, fresh(inputs))
    if not _flat_args((args, kwargs, None)):
        return None
    with torch.inference_mode(), eval_mode(model):
        return args, kwargs, model(*args, **kwargs)


def _candidates(requested: str) -> list[str]:
    if requested != "auto":
        return [requested]
    out = []
    if ov_available():
        out += ["openvino"] + (["openvino-bf16"] if bf16_capable() else [])
    if ort_available():
        out.append("onnxruntime")
    return out + ["torch"]


def _build(backend: str, module: nn.Module, call, seq_bucket: int = 0, trim: bool = False) -> nn.Module:
    args, kwargs, output = call
    label = type(module).__name__
    if backend.startswith("openvino"):
        new = export_openvino(module, args, kwargs, output, label=label, seq_bucket=seq_bucket, trim=trim)
        new.precision = "bfloat16" if backend == "openvino-bf16" else "float32"
        return new
    new, _ = export_quantized(module, args, kwargs, output, {}, label=label, int8=False)
    return new


def _row(name: str, old: nn.Module, new: nn.Module | None, route: Route, backend: str) -> LayerRow:
    from ..core.metrics import count_nonzero, count_params, model_bytes

    after = new if new is not None else old
    return LayerRow(
        name=name, method="runtime", layer_type=f"{describe_module(old)} (block)",
        new_type=f"{type(after).__name__} ({backend})", params_before=count_params(old),
        params_after=count_params(after), nonzeros_before=count_nonzero(old), nonzeros_after=count_nonzero(after),
        bytes_before=model_bytes(old), bytes_after=model_bytes(after),
        error=None if route.cosine is None else 1.0 - route.cosine,
        error_kind="1 - cosine of the model's output (calibration data)",
        detail={"backend": backend, "ms": route.ms}, skipped=None if new is not None else
        f"stays in PyTorch: {route.error or 'the fastest route within the fidelity budget'}")


def _choose(model: nn.Module, built: dict[str, dict[str, Route]], config: RuntimeConfig, batches: list,
            backends: list[str]) -> tuple[str, set[str], list[str]]:
    """One runtime for the model and the blocks it serves: for each runtime, the blocks where it beats PyTorch
    within the budget move; the runtime with the least total time wins, if its blocks together still keep
    the budget (checked with all of them in place), else the next. Forced: every block not kept moves."""
    if config.backend != "auto":
        moved = {r for r, routes in built.items() if config.backend in routes and routes[config.backend].module}
        return config.backend, moved if config.backend != "torch" else set(), []
    torch_ms = sum(routes["torch"].ms or 0.0 for routes in built.values())
    plans = []
    for backend in (b for b in backends if b != "torch"):
        moved, total = set(), 0.0
        for region, routes in built.items():
            route, base = routes.get(backend), routes["torch"]
            good = route is not None and route.module is not None and route.ms is not None and \
                route.cosine is not None and route.cosine >= config.min_cosine
            if good and base.ms is not None and route.ms < base.ms:
                moved.add(region)
                total += route.ms
            else:
                total += base.ms or 0.0
        if moved:
            plans.append((total, backend, moved))
    table = "; ".join(f"{region or 'the whole model'}: " + ", ".join(f"{b} {timing_text(r)} (cos {r.cosine:.4f})" if r.ms is not None
                                                 else f"{b} {r.error or 'not measured'}" for b, r in routes.items())
                      for region, routes in built.items())
    both = "; where the example is a batch, also on its first row, the geometric mean of the two ranks them" \
        if any(r.ms_one is not None for routes in built.values() for r in routes.values()) else ""
    for total, backend, moved in sorted(plans, key=lambda p: p[0]):
        if total >= torch_ms:
            break
        cosine = _together(model, built, backend, moved, batches)
        if cosine >= config.min_cosine:
            return backend, moved, [
                f"Runtime measured per block on the example inputs (fastest of 5, your thread count{both}): "
                f"{table}. Chose {backend} for {len(moved)} of {len(built)} block(s): {torch_ms:.2f} -> {total:.2f} ms "
                f"({torch_ms / total:.2f}x), output cosine {cosine:.4f} with all of them in place; "
                f"recorded in the plan, so a replay builds it without measuring."]
    return "torch", set(), [f"Runtime measured per block on the example inputs: {table}. No runtime beat PyTorch "
                            f"within cosine {config.min_cosine:g}, so the model stays in PyTorch."]


def _together(model: nn.Module, built: dict[str, dict[str, Route]], backend: str, moved: set[str],
              batches: list) -> float:
    """The model's output cosine to float with every moved block on ``backend`` at once (restored after)."""
    import statistics

    from ..core.metrics import call_model, eval_mode
    from ..core.modules import swap_submodule
    from .quantize._common import fresh
    from .quantize.routes import _cosine

    if "" in moved:  # the whole model served: its route's cosine was measured on the whole model already
        return built[""][backend].cosine
    originals = {r: model.get_submodule(r) for r in moved}
    with torch.inference_mode(), eval_mode(model):
        references = [call_model(model, fresh(b)) for b in batches]
        try:
            for r in moved:
                swap_submodule(model, r, built[r][backend].module)
            return statistics.fmean(_cosine(ref, call_model(model, fresh(b))) for b, ref in zip(batches, references))
        finally:
            for r, m in originals.items():
                swap_submodule(model, r, m)


@register_method(
    "runtime",
    RuntimeConfig,
    supported=_SUPPORTED,
    family="runtime",
    help="Serve each block of the model on the fastest CPU runtime (OpenVINO, ONNX Runtime or PyTorch), "
         "measured on your inputs within a fidelity budget; recorded in the plan for replay.",
    aliases=("serve",),
    requires=("calibration",),
    stage="serving",
    options=(MagicOption("--runtime", "BACKEND", const="auto", help_field="backend",
                         build=lambda value: {"backend": value},
                         help="serve on the fastest runtime measured (auto) or on openvino / onnxruntime / "
                              "torch"),),
    whole_model=True,
    sweep=False,
    # not a tuning-panel tab: it measures routes for seconds on each apply, and it is the last step of a plan
    # (the magic's --runtime, or a plan step), not a dial to slide
    in_panel=False,
    replaces_model=lambda config: config.unit == "model",
    # compare's "what would serving alone buy" row: the same weights on the fastest runtime measured (the size
    # budget does not apply: nothing is removed)
    compare=("runtime (serving only)", lambda model, budget, **_: [RuntimeConfig()]),
)
def apply_runtime(model: nn.Module, names: list[str], config: RuntimeConfig, ctx: Any) -> MethodResult:
    if config.backend.startswith("openvino") and not ov_available():
        from .quantize._common import BackendUnavailableError

        raise BackendUnavailableError(f"runtime backend {config.backend!r} needs openvino: {INSTALL}, or "
                                      f"use backend='auto'.")
    if config.backend == "onnxruntime" and not ort_available():
        from .quantize.ort import require_ort

        require_ort("runtime")
    batches = calibration_batches(ctx, required=True, method="runtime")
    example = getattr(ctx, "example_inputs", None)
    first = example if example is not None else batches[0]
    notes: list[str] = []
    root_call = _root_call(model, first) if config.unit != "blocks" else None
    if root_call is not None and not ctx.whole_model_swap:
        if config.unit == "model":
            raise CompressError("runtime unit='model' replaces the whole model, which compress_ (in place) cannot "
                                "do: use compress(model, ...), or unit='blocks'.")
        notes.append("In place, your model object is kept, so each block is served on its own; compress() (a "
                     "copy) serves the whole model as one graph, with no PyTorch between blocks (faster).")
        root_call = None
    if config.unit == "model" and root_call is None:
        raise CompressError("runtime unit='model' needs a model called with tensors (and constants) only; "
                            "use unit='blocks' or 'auto'.")
    if root_call is not None:
        planner = None
        regions, calls = [("", list(names))], {"": root_call}
    else:
        with plan_regions(model, names, True, leaves=True) as planner:
            run_batches(model, [first], names, example)
        regions, calls = serving_regions(model, names, planner.calls, tied_groups(model)), planner.calls
    if config.backend == "auto" and not ov_available():
        notes.append(f"OpenVINO is not installed, so its route was not measured ({INSTALL}).")
    backends = _candidates(config.backend)
    keep = {k.strip() for k in config.keep.split(",") if k.strip()}
    built: dict[str, dict[str, Route]] = {}
    trim_notes: dict[str, str] = {}
    for region, _group in regions:
        module, call = model.get_submodule(region), calls[region]
        built[region] = {"torch": Route("torch", module)}
        for backend in ([] if region in keep else [b for b in backends if b != "torch"]):
            try:
                built[region][backend] = Route(backend, _build(backend, module, call, config.seq_bucket,
                                                               config.trim_padding != "off"))
            except Exception as exc:  # a block the exporter cannot handle stays in PyTorch, and says so
                if config.backend != "auto":
                    raise
                built[region][backend] = Route(backend, error=f"export failed ({type(exc).__name__}: "
                                                              f"{str(exc)[:100]})")
        trimmable = [r.module for r in built[region].values() if getattr(r.module, "trim", False)]
        if trimmable and config.trim_padding == "auto":  # one look for every route: the model decides
            reaches = padding_reaches_output(model, region, trimmable[0], [first, *batches][:4])
            for served in trimmable:
                served.trim = reaches is False
            trim_notes[region] = trim_note(region or "(model)", "auto", reaches)
        if config.backend == "auto" and len(built[region]) > 1:
            measure_routes(model, region, list(built[region].values()), [first, *batches][:4], call[:2])
    backend, moved, summary = _choose(model, built, config, [first, *batches][:4], backends)
    notes += summary
    replacements: dict[str, nn.Module] = {}
    rows: list[LayerRow] = []
    trims: set[str] = set()
    for region, _group in regions:
        route = built[region].get(backend) if region in moved else built[region]["torch"]
        new = route.module if region in moved else None
        rows.append(_row(region or "(model)", model.get_submodule(region), new, route,
                         backend if new is not None else "torch"))
        if new is not None:
            replacements[region] = new
            if getattr(new, "can_trim", False):
                trims.add("on" if new.trim else "off")
                if region in trim_notes or new.trim:
                    notes.append(trim_notes.get(region) or trim_note(region or "(model)", config.trim_padding, False))
    outside = [n for n in names if not any(r == "" or n == r or n.startswith(r + ".") for r, _ in regions)]
    if outside:
        notes.append(f"{len(outside)} layer(s) outside any block called with tensors stay in PyTorch: "
                     f"{', '.join(outside[:3])}{', ...' if len(outside) > 3 else ''}.")
    if not regions:
        notes.append("No block of the model is called with tensors only: nothing could move to a runtime.")
    # one runtime for the blocks that moved, the others recorded as kept: a replay builds exactly this
    pinned = {"backend": backend, "keep": ",".join(r for r, _ in regions if r not in moved),
              "unit": "model" if root_call is not None else "blocks"} if config.backend == "auto" else {}
    if config.backend != "auto" and config.unit == "auto":
        pinned = {"unit": "model" if root_call is not None else "blocks"}
    if config.trim_padding == "auto" and len(trims) == 1:  # seen on this data: a replay does not look again
        pinned["trim_padding"] = trims.pop()
    return MethodResult(replacements, rows, notes, pinned=pinned)

