"""Interleaved latency comparison: baseline and candidate take turns, so machine noise hits both alike."""

from __future__ import annotations

import statistics

from torch import nn

from jupyter_compress import measure_latency

COLUMNS = ("name", "figure", "baseline", "value", "note")


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
