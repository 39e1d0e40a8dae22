"""``python -m benchmarks [--quick] [--only NAME ...]``: run the benchmark modules, print one aligned table
and (full mode, every module) write ``benchmarks/RESULTS.md`` with the machine, the targets and pass/short."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from . import (
    bench_codecs,
    bench_compact,
    bench_decompose,
    bench_deep_auto,
    bench_digits,
    bench_distill,
    bench_hf,
    bench_int4,
    bench_lowrank,
    bench_memory,
    bench_oneshot,
    bench_pruning,
    bench_pruning_models,
    bench_quantize,
    bench_routes,
    bench_strategy,
    bench_structured,
    bench_tune,
)
from .report import CpuMeter, format_table, load_sentence, machine_info, render_markdown, write_results
from .timing import REPORT

__all__ = ["REGISTRY", "RESULTS", "main", "module_name", "run_module", "format_table"]

REGISTRY = [bench_lowrank, bench_pruning, bench_structured, bench_pruning_models, bench_digits, bench_decompose,
            bench_quantize, bench_int4, bench_oneshot, bench_routes, bench_codecs, bench_tune, bench_distill, bench_strategy,
            bench_hf, bench_memory, bench_compact, bench_deep_auto]
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def module_name(module) -> str:
    return module.__name__.rsplit(".", 1)[-1].removeprefix("bench_")


def run_module(module, quick: bool) -> list[dict]:
    """The module's rows, each with every column; an exception becomes one row with status ``error``."""
    try:
        rows = module.rows(quick)
    except Exception as exc:  # one broken module must not cost the whole report
        traceback.print_exc(file=sys.stderr)
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return [{"name": f"{module_name(module)} (module failed)", "figure": "-", "baseline": "-",
                 "value": "error", "target": "-", "status": "error", "note": text}]
    return [{**REPORT, **row} for row in rows]


def _select(only: list[str]) -> list:
    wanted = {w.strip().removeprefix("bench_") for item in only for w in item.split(",") if w.strip()}
    known = {module_name(m) for m in REGISTRY}
    unknown = sorted(wanted - known)
    if unknown:
        raise SystemExit(f"python -m benchmarks: unknown module {', '.join(unknown)}; "
                         f"choose from {', '.join(sorted(known))}")
    return [m for m in REGISTRY if not wanted or module_name(m) in wanted]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, seeds and sentences (< 3 min), "
                                                             "slowest rows skipped: a CI smoke run")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only these modules (repeat or comma-separate), e.g. --only quantize,tune")
    parser.add_argument("--output", metavar="PATH", help="write the markdown report here (default: "
                        "benchmarks/RESULTS.md for a full run of every module, nothing otherwise)")
    parser.add_argument("--no-write", action="store_true", help="do not write a markdown report")
    args = parser.parse_args(argv)
    modules = _select(args.only)
    output = args.output or (RESULTS if not args.quick and not args.only else None)
    mode = "quick" if args.quick else "full"
    machine = machine_info()
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores / {machine['threads']} threads; torch "
          f"{machine['torch']}, {machine['torch_threads']} threads, {machine['omp']}; python {machine['python']}; "
          f"{mode} run")
    meter = CpuMeter()
    rows: list[dict] = []
    peak = (0.0, "-")
    for i, module in enumerate(modules, 1):
        print(f"[{i}/{len(modules)}] {module_name(module)} ...", file=sys.stderr, flush=True)
        module_meter = CpuMeter()
        new = run_module(module, args.quick)
        rows += new
        spent = module_meter.summary()
        others = spent["others_cores"]
        if others is not None and others > peak[0]:
            peak = (others, module_name(module))
        failed = " FAILED" if any(r["status"] == "error" for r in new) else ""
        busy = "" if others is None else f"; other processes busy on {others:.2f} CPUs"
        print(f"[{i}/{len(modules)}] {module_name(module)}: {len(new)} rows in {spent['wall_s']:.1f} s{busy}{failed}",
              file=sys.stderr, flush=True)
    usage = {**meter.summary(), "peak_others": peak}
    print(format_table(rows))
    print(f"({usage['wall_s']:.0f} s; latency: median of per-round ratios, baseline and candidate interleaved)")
    print(load_sentence(machine, usage).replace("**", ""))
    if output and not args.no_write:
        write_results(output, render_markdown(rows, machine, usage, mode))
        print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
