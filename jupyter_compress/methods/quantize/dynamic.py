"""Dynamic int8 quantization of Linear layers (weights int8 ahead of time, activations at each call).

Routes, chosen per device by ``backend='auto'``:

- ``onnxruntime``: each submodule holding several selected Linears and called as a unit (a BERT encoder,
  an attention block) is exported to ONNX and run by ONNX Runtime with int8 MatMuls (per-channel weights);
  its integer kernels are fast on x86 and ARM CPUs, including AVX2 without VNNI. Needs example inputs.
- ``torch``: each Linear (or transformers ``Conv1D``, GPT-2's) becomes :class:`DynamicInt8Linear` on torch's int8 kernel (engine x86 / fbgemm /
  qnnpack, whichever torch uses on this CPU).

Every selected Linear gets a row: weight SQNR (dB) and relative output error on the calibration data
(``data=`` or ``example_inputs=``). With ``max_error`` set, a layer above it stays in float and is named.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ...core.config import Boolean, ChoiceMap, Interval, MethodConfig, param
from ...core.metrics import model_bytes
from ...core.registry import MagicOption, MethodResult, register_method
from .._common import LINEAR_TYPES, layer_row, linear_view, parent_reads_weight
from ._common import (
    calibration_batches,
    capture_inputs,
    fresh,
    output_error,
    run_batches,
    sqnr_db,
    unsupported_note,
)
from .ort import ort_available, require_ort
from .ov import INSTALL, nncf_available, require_ov
from .padding import TRIM_MODES, padding_reaches_output, trim_note
from .qlinear import DynamicInt8Linear
from .recurrent import DynamicInt8Recurrent
from .regions import build_region_rows, compare_routes, plan_regions, record_calls
from .routes import Route, candidate_backends, measure_routes, pick, routes_note, time_float, torch_region

__all__ = ["DynamicQuantConfig", "simulate_dynamic_int8"]


ROUTES = ("openvino", "openvino-bf16", "onnxruntime", "torch")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicQuantConfig(MethodConfig):
    """Dynamic int8: int8 weights, activations quantized per call; the fastest accurate route by default."""

    backend: str = param("auto", help="'auto': measure the routes installed (OpenVINO + NNCF, ONNX Runtime, "
                         "torch) on the example inputs and take the fastest within min_cosine (recorded in the "
                         "plan); or force one", choices=("auto", *ROUTES))
    min_cosine: float = param(0.995, help="fidelity budget of backend='auto': a route's output must keep this "
                              "mean cosine to float on the calibration data", check=Interval(0.0, 1.0))
    per_channel: bool = param(True, help="one weight scale per output channel (else one per tensor)", check=Boolean())
    max_error: float = param(0.0, help="keep in float any Linear whose relative output error on the calibration "
                             "data exceeds this (0 = quantize every selected Linear)", check=Interval(0.0, 10.0))
    compare_routes: bool = param(True, help="time float, torch int8 and ONNX Runtime int8 on the first "
                                 "calibration batch and put the trade-off in the report notes", check=Boolean())
    seq_bucket: int = param(0, help="OpenVINO routes of a model called with a 2-D attention_mask: pad the "
                            "sequence to a multiple of this and run each length on its own compiled graph (MiniLM "
                            "int8: 13-25 percent faster at a repeated shape, but ~0.3 s and ~60 MB per new length; "
                            "for serving at fixed or few lengths); 0: one dynamic-shape graph",
                            check=Interval(0, 512, integer=True))
    trim_padding: str = param("auto", help="OpenVINO routes of a model called with a right-padded 2-D "
                              "attention_mask: run the rows in groups of similar length, each cut to its longest "
                              "row (MiniLM int8, 32 sentences: 1.4x); padded positions of the block's output come "
                              "back as zeros. 'auto': where the model's output was seen not to read them "
                              "(recorded in the plan); 'on': always; 'off': never", choices=TRIM_MODES)
    routes: dict | None = param(None, help="with backend='auto': the route of each region, by module name "
                                "(recorded in the plan when the regions took different routes; a replay builds "
                                "these without measuring)", check=ChoiceMap(*ROUTES))


def simulate_dynamic_int8(linear: nn.Module, per_channel: bool, weight_bits: int = 8):
    """A float function computing what ONNX Runtime's dynamic int8 MatMul computes: x as asymmetric uint8
    per tensor, W symmetric (``weight_bits``, 7 when reduce_range). Gives per-layer errors inside its regions.
    ``linear``: an ``nn.Linear`` or a transformers ``Conv1D``."""
    from .qlinear import quantize_rows

    view = linear_view(linear)
    q, scale = quantize_rows(view.weight, per_channel, weight_bits)
    weight = q.float() * scale[:, None]
    levels = 255

    def fn(x: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
        s = torch.clamp((hi - lo) / levels, min=1e-12)
        zp = torch.round(-lo / s)
        xq = (torch.clamp(torch.round(x / s) + zp, 0, levels) - zp) * s
        return nn.functional.linear(xq, weight, view.bias)

    return fn


def _torch_row(name: str, old: nn.Module, inputs: list, config: DynamicQuantConfig):
    new = DynamicInt8Linear.from_linear(old, config.per_channel)
    err = output_error(old, new, inputs)
    detail = {"backend": "torch", "engine": torch.backends.quantized.engine,
              "sqnr_db": round(sqnr_db(linear_view(old).weight, new.dequantized_weight()), 2)}
    if config.max_error and err is not None and err > config.max_error:
        return None, layer_row(name, "quantize.dynamic", old, None, error=err, error_kind="rel_output_error",
                               detail=detail, skipped=f"kept in float: relative output error {err:.4f} > "
                               f"max_error {config.max_error:g}")
    row = layer_row(name, "quantize.dynamic", old, new, error=err, error_kind="rel_output_error", detail=detail)
    return new, row


def _recurrent_row(name: str, old: nn.Module, inputs: list, config: DynamicQuantConfig):
    new = DynamicInt8Recurrent.from_float(old)
    weights = dict(old.named_parameters())
    sqnr = min(sqnr_db(weights[n], w) for n, w in new.dequantized().items())
    err = output_error(lambda x: old(x)[0], lambda x: new(x)[0], inputs)
    detail = {"backend": "torch", "engine": torch.backends.quantized.engine, "sqnr_db": round(sqnr, 2),
              "weights": "int8 per tensor"}
    if config.max_error and err is not None and err > config.max_error:
        return None, layer_row(name, "quantize.dynamic", old, None, error=err, error_kind="rel_output_error",
                               detail=detail, skipped=f"kept in float: relative output error {err:.4f} > "
                               f"max_error {config.max_error:g}")
    return new, layer_row(name, "quantize.dynamic", old, new, error=err, error_kind="rel_output_error", detail=detail)


@register_method(
    "quantize.dynamic",
    DynamicQuantConfig,
    supported=(*LINEAR_TYPES, nn.LSTM, nn.GRU),
    family="quantization",
    help="Dynamic int8 of Linear (and transformers Conv1D) layers on the fastest accurate route of this CPU "
         "(ONNX Runtime or torch), with per-layer SQNR and output error.",
    aliases=("int8", "quantize.int8"),
    stage="precision",
    options=(MagicOption("--quantize", "MODE", choice="int8", help="int8 (dynamic, the fast preset: give --example)"),),
    compare=("quantization", lambda model, budget, **_: [DynamicQuantConfig()]),
)
def apply_dynamic(model: nn.Module, names: list[str], config: DynamicQuantConfig, ctx: Any) -> MethodResult:
    recurrent = [n for n in names if isinstance(model.get_submodule(n), (nn.LSTM, nn.GRU))]
    names = [n for n in names if n not in recurrent]
    if config.backend == "onnxruntime":
        require_ort("quantize.dynamic")
    elif config.backend.startswith("openvino"):
        require_ov("quantize.dynamic")
    runtime = config.backend not in ("auto", "torch")
    batches = calibration_batches(ctx, required=runtime or config.max_error > 0, method="quantize.dynamic")
    use_ort = runtime or (config.backend == "auto" and (ort_available() or nncf_available()) and bool(batches))
    notes: list[str] = []
    with capture_inputs(model, names, max_rows=1024, flatten=True) as inputs, plan_regions(model, names, use_ort) as planner, \
            capture_inputs(model, recurrent, max_rows=64) as recurrent_inputs:
        if batches:
            run_batches(model, batches, names + recurrent, getattr(ctx, "example_inputs", None))
    regions = planner.regions(climb=True) if use_ort else [(None, list(names))]
    replacements: dict[str, nn.Module] = {}
    rows = []
    chosen: dict[str, str] = {}
    trimmed: set[str] = set()
    for region, group in regions:
        if region is not None:
            route = _region_route(model, region, group, planner.calls[region], inputs, config, batches, ctx, notes)
            chosen[region] = route.backend
            if getattr(route.module, "can_trim", False):
                trimmed.add("on" if route.module.trim else "off")
            if route.module is not None:
                replacements[region] = route.module
                rows += route.rows
                notes += route.notes
                if config.compare_routes and route.backend == "onnxruntime" and config.backend != "auto":
                    notes.append(compare_routes(model, region, group, planner.calls[region], route.module,
                                                config.per_channel))
                continue
        for name in group:
            reason = parent_reads_weight(model, name)
            if reason:
                rows.append(layer_row(name, "quantize.dynamic", model.get_submodule(name), None, skipped=reason))
                continue
            new, row = _torch_row(name, model.get_submodule(name), inputs.get(name, []), config)
            rows.append(row)
            if new is not None:
                replacements[name] = new
    for name in recurrent:  # LSTM / GRU: torch's dynamic int8 recurrent kernels (ONNX Runtime route: Linears only)
        new, row = _recurrent_row(name, model.get_submodule(name), recurrent_inputs.get(name, []), config)
        rows.append(row)
        if new is not None:
            replacements[name] = new
    if recurrent:
        notes.append(f"{len(recurrent)} recurrent layer(s) ({', '.join(recurrent[:3])}) run on torch's int8 LSTM/GRU "
                     f"kernels with per-tensor int8 weights.")
    if not batches:
        notes.append("No calibration data: per-layer output errors are not measured and the torch route was "
                     "used; pass data= or example_inputs= for the errors and for the ONNX Runtime route "
                     "(on MiniLM: more accurate and faster, see benchmarks).")
    kept = [r.name for r in rows if r.skipped and r.skipped.startswith("kept in float")]
    if kept:
        notes.append(f"{len(kept)} Linear(s) kept in float by max_error={config.max_error:g}: {', '.join(kept)}.")
    notes += unsupported_note(model, (*LINEAR_TYPES, nn.LSTM, nn.GRU), "quantize.dynamic")
    # the measured routes are recorded in the plan: a replay builds them without measuring. One route for the
    # step: pinned as its backend; several: each region's (timings differ run to run, the replay must not)
    pinned: dict = {}
    if config.backend == "auto" and len(set(chosen.values())) == 1:
        pinned = {"backend": next(iter(chosen.values())), "routes": None}
    elif config.backend == "auto" and chosen:
        pinned = {"routes": chosen}
    if config.trim_padding == "auto" and len(trimmed) == 1:  # seen on this data: the replay does not look again
        pinned["trim_padding"] = trimmed.pop()
    return MethodResult(replacements, rows, notes, pinned=pinned)


def _region_route(model: nn.Module, region: str, group: list[str], call, inputs: dict, config: DynamicQuantConfig,
                  batches: list, ctx: Any, notes: list[str]) -> Route:
    """Build the region's route: the one forced by ``config.backend``, or (auto) every candidate, measured,
    and the fastest within ``config.min_cosine``. A Route with no module means 'its Linears on torch'."""
    module = model.get_submodule(region)
    rel = [n[len(region) + 1:] for n in group]
    whole = {r for r, m in module.named_modules() if isinstance(m, LINEAR_TYPES) and r} <= set(rel) \
        and not config.max_error
    requested = (config.routes or {}).get(region, config.backend) if config.backend == "auto" else config.backend
    backends = candidate_backends(requested, whole)
    if requested == "auto" and whole and not any(b.startswith("openvino") for b in backends):
        notes.append(f"{region}: OpenVINO + NNCF are not installed, so their route was not measured "
                     f"({INSTALL}); measured: {', '.join(backends)}.")
    example = getattr(ctx, "example_inputs", None)
    calls: list = []
    if any(b.startswith("openvino") for b in backends) or len(backends) > 1:
        def run():
            run_batches(model, [fresh(b) for b in ([example] if example is not None else []) + batches], [], example)

        calls = record_calls(model, region, run)
    routes = []
    for backend in backends:
        if backend == "torch":
            routes.append(Route("torch", torch_region(module, rel, config.per_channel) if len(backends) > 1 else None))
            continue
        try:
            new, rows, region_notes = build_region_rows(model, region, group, call, inputs, config,
                                                        simulate_dynamic_int8, backend=backend, calibration=calls)
        except Exception as exc:  # an export the converter cannot handle: the next route, and say so
            if requested != "auto":
                raise
            routes.append(Route(backend, error=f"export failed ({type(exc).__name__}: {str(exc)[:100]})"))
            continue
        grown = model_bytes(new) - model_bytes(module)
        if grown > 0 and requested == "auto":
            # a small region: the graph's structure outweighs what int8 saves (a size rule, not a timing)
            routes.append(Route(backend, error=f"its graph would be {grown:,} bytes larger than the float weights"))
            continue
        routes.append(Route(backend, new, rows, region_notes))
    trimmable = [r.module for r in routes if getattr(r.module, "trim", False)]
    reaches = False
    if trimmable and config.trim_padding == "auto":  # one look for every route: the model decides, not the runtime
        reaches = padding_reaches_output(model, region, trimmable[0], ([example] if example is not None else []) + batches[:4])
        for served in trimmable:
            served.trim = reaches is False
    if len(routes) == 1:
        if trimmable:
            notes.append(trim_note(region, config.trim_padding, reaches))
        return routes[0] if routes[0].module is not None or routes[0].backend == "torch" else Route("torch")
    if sum(r.module is not None for r in routes if r.backend != "torch") == 0:  # no runtime could take it
        notes.append(f"{region}: " + "; ".join(f"{r.backend}: {r.error}" for r in routes if r.error)
                     + "; its Linears use torch's int8 kernels.")
        return Route("torch")
    measure_routes(model, region, routes, ([example] if example is not None else []) + batches,
                   (calls or [call[:2]])[0])
    best, within = pick(routes, config.min_cosine)
    notes.append(routes_note(region, routes, best, within, config.min_cosine,
                             time_float(module, (calls or [call[:2]])[0])))
    if best.backend == "torch":
        return Route("torch")
    if best.module in trimmable:
        notes.append(trim_note(region, config.trim_padding, reaches))
    # the region's raw output includes positions the model masks out (padding); what the user sees is the
    # model's output, measured above, so the region's row and note quote that
    best.rows[-1] = dataclasses.replace(best.rows[-1], error=1.0 - best.cosine,
                                        error_kind="1 - cosine of the model's output (calibration data)")
    best.notes[0] = best.notes[0].split("; its output differs")[0] + \
        f"; the model's output keeps cosine {best.cosine:.4f} to float on the calibration data."
    return best
