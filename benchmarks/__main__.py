"""``python -m benchmarks [--quick]``: print every benchmark row as one aligned table, with machine info."""

from __future__ import annotations

import argparse
import platform
import time

import torch

from . import (
    bench_codecs,
    bench_decompose,
    bench_digits,
    bench_distill,
    bench_lowrank,
    bench_pruning,
    bench_pruning_models,
    bench_quantize,
    bench_strategy,
    bench_structured,
    bench_tune,
)
from .timing import COLUMNS

REGISTRY = [bench_lowrank, bench_pruning, bench_structured, bench_pruning_models, bench_digits, bench_decompose,
            bench_quantize, bench_codecs, bench_tune, bench_distill, bench_strategy]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(rows: list[dict]) -> str:
    cells = [list(COLUMNS)] + [[str(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds (< 1 min)")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"python {platform.python_version()}; {'quick' if args.quick else 'full'} run")
    start = time.perf_counter()
    rows = [row for module in REGISTRY for row in module.rows(args.quick)]
    print(format_table(rows))
    print(f"({time.perf_counter() - start:.0f} s; latency: median of per-round ratios, baseline and "
          f"candidate interleaved)")


if __name__ == "__main__":
    main()
