"""The machine a run is on, how busy other processes kept it, and ``RESULTS.md`` (written atomically)."""

from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch

from . import OMP_NOTE
from .timing import COLUMNS

__all__ = ["CpuMeter", "machine_info", "cpu_model", "format_table", "render_markdown", "write_results",
           "LOADED_CORES"]

LOADED_CORES = 0.2  # other processes busy on more than this many cores on average: say the machine was shared


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> str:
    """The vector extensions that decide which int8 / fp32 kernels are fast here (from /proc/cpuinfo flags)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "neon", "asimd")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return ", ".join(w for w in wanted if w in have) or "none of " + "/".join(wanted)
    except OSError:
        pass
    return "unknown"


def _physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where the file does not say."""
    pairs, current = set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("physical id", "core id"):
                    current[key] = value.strip()
                elif not line.strip() and current:
                    pairs.add((current.get("physical id"), current.get("core id")))
                    current = {}
    except OSError:
        return None
    if current:
        pairs.add((current.get("physical id"), current.get("core id")))
    return len(pairs) or None


def machine_info() -> dict:
    logical = os.cpu_count() or 0
    return {"cpu": cpu_model(), "features": cpu_features(), "cores": _physical_cores() or logical, "threads": logical,
            "usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "omp": OMP_NOTE,
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _busy_s() -> float | None:
    """Seconds all CPUs of the machine spent busy since boot (/proc/stat), None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    """CPU seconds of this process and its finished children (the Dask workers, for one)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


@dataclass
class CpuMeter:
    """How busy *other* processes kept the machine over a run: all CPU busy time minus this run's own."""

    start: float = field(default_factory=time.perf_counter)
    busy0: float | None = field(default_factory=_busy_s)
    own0: float = field(default_factory=_own_s)
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])

    def summary(self) -> dict:
        wall = time.perf_counter() - self.start
        busy = _busy_s()
        others = None
        if busy is not None and self.busy0 is not None and wall > 0:
            others = max(0.0, (busy - self.busy0) - (_own_s() - self.own0)) / wall
        return {"wall_s": wall, "others_cores": others, "load_before": self.load_before,
                "load_after": os.getloadavg()[0]}


def format_table(rows: list[dict]) -> str:
    cells = [list(COLUMNS)] + [[str(r.get(c, "-")) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def load_sentence(machine: dict, usage: dict) -> str:
    others, n = usage.get("others_cores"), machine["threads"]
    loads = (f"1-minute load average {usage['load_before']:.2f} before the run and {usage['load_after']:.2f} "
             f"after it (the latter includes this run's own threads)")
    if others is None:
        return f"Other processes' CPU use was not measured (no /proc/stat); {loads}."
    peak, where = usage.get("peak_others", (others, "-"))
    shared = others > LOADED_CORES or peak > 2 * LOADED_CORES
    use = (f"other processes kept on average {others:.2f} of the {n} CPUs busy during the run (at most {peak:.2f} "
           f"during one module, {where}); {loads}")
    if shared:
        return (f"**The machine was shared and loaded during this run**: {use}. Latency figures are ratios of "
                f"interleaved timings, so the load hits baseline and candidate alike, but it widens their spread, "
                f"and absolute milliseconds and throughputs (the Dask row above all) suffer most.")
    return f"The machine was otherwise idle: {use}."


def render_markdown(rows: list[dict], machine: dict, usage: dict, mode: str) -> str:
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("pass", "short", "error", "-")}
    lines = [
        "# Benchmark results", "",
        f"Generated by `python -m benchmarks`{' --quick' if mode == 'quick' else ''} ({mode} mode) on "
        f"{machine['date']}, in {usage['wall_s'] / 60:.1f} minutes.", "",
        f"Machine: {machine['cpu']} ({machine.get('features', '?')}), {machine['cores']} cores / {machine['threads']} hardware threads "
        f"({machine['usable']} usable); {machine['os']}; torch {machine['torch']} on "
        f"{machine['torch_threads']} intra-op threads, {machine.get('omp', 'OpenMP settings not recorded')}; "
        f"Python {machine['python']}.", "",
        load_sentence(machine, usage), "",
        "Every figure is measured in this run: a speedup is the median over rounds of baseline time / candidate "
        "time, both timed interleaved in the same process. `target` is the figure's target from its issue; "
        "`status` is `pass` or `short` against it, computed from the measured numbers, and `-` for rows that "
        "only report.", "",
        f"Summary: {counts['pass']} pass, {counts['short']} short, {counts['-']} report only, "
        f"{counts['error']} errors.", "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r.get(c, "-")) for c in COLUMNS) + " |" for r in rows]
    short = [r for r in rows if r.get("status") in ("short", "error")]
    if short:
        lines += ["", "## Short of target or failed", ""]
        lines += [f"- {r['name']}: {r['figure']} {r['value']} against {r.get('target', '-')} ({r['status']})"
                  for r in short]
    return "\n".join(lines) + "\n"


def write_results(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then one rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".RESULTS-", suffix=".md", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
