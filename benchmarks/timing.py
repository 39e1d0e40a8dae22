"""Interleaved latency comparison: baseline and candidate take turns, so machine noise hits both alike."""

from __future__ import annotations

import statistics

from torch import nn

from jupyter_compress import measure_latency

__all__ = ["COLUMNS", "REPORT", "at_least", "at_most", "all_of", "skipped", "paired_speedup", "speedup_note",
           "rounds_repeats"]

COLUMNS = ("name", "figure", "baseline", "value", "target", "status", "note")
REPORT = {"target": "-", "status": "-"}  # a row that only reports: its issue sets no target for it


def at_least(value: float, bound: float, text: str | None = None) -> dict:
    """The ``target`` and ``status`` keys of a row whose measured ``value`` must be ``>= bound``."""
    return {"target": text or f">= {bound:g}", "status": "pass" if value >= bound else "short"}


def at_most(value: float, bound: float, text: str | None = None) -> dict:
    """The ``target`` and ``status`` keys of a row whose measured ``value`` must be ``<= bound``."""
    return {"target": text or f"<= {bound:g}", "status": "pass" if value <= bound else "short"}


def all_of(*checks: dict) -> dict:
    """Several targets on one row: it passes only when every one does."""
    return {"target": " and ".join(c["target"] for c in checks),
            "status": "pass" if all(c["status"] == "pass" for c in checks) else "short"}


def skipped(name: str, figure: str, why: str = "skipped in --quick") -> dict:
    """A row the quick mode does not measure (its full-mode run does)."""
    return {"name": name, "figure": figure, "baseline": "-", "value": why, **REPORT, "note": "run without --quick"}


def paired_speedup(baseline: nn.Module, candidate: nn.Module, x, *, rounds: int, repeats: int) -> dict:
    """Baseline/candidate latency ratio, paired by round: median and quartiles over ``rounds``.

    In each round both models run ``repeats`` timed calls (median taken), in alternating order.
    Also returns the median latency in ms of each.
    """
    base_ms: list[float] = []
    cand_ms: list[float] = []
    for i in range(rounds):
        turns = [(base_ms, baseline), (cand_ms, candidate)]
        for times, model in turns if i % 2 == 0 else turns[::-1]:
            times.append(measure_latency(model, x, repeats=repeats, warmup=1).median_ms)
    ratios = [b / c for b, c in zip(base_ms, cand_ms)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"speedup": median, "q1": q1, "q3": q3,
            "baseline_ms": statistics.median(base_ms), "candidate_ms": statistics.median(cand_ms)}


def speedup_note(r: dict) -> str:
    return f"quartiles {r['q1']:.2f}-{r['q3']:.2f}x"


def rounds_repeats(quick: bool) -> dict:
    return {"rounds": 15, "repeats": 20} if quick else {"rounds": 61, "repeats": 50}
