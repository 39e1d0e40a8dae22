"""What a sensitivity sweep measures and how, as one value that ``sensitivity``, ``auto`` and ``advise``
pass along (instead of a dozen keyword arguments forwarded by hand)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ._measure import Scorer, probe_batches

__all__ = ["SweepSettings", "DEFAULT_RATIOS"]

DEFAULT_RATIOS = (0.25, 0.5, 0.75, 0.9)


@dataclasses.dataclass(frozen=True, eq=False)  # it holds tensors and functions: compared by identity
class SweepSettings:
    """The settings of :func:`~jupyter_compress.strategy.sensitivity.sensitivity` (see its docstring)."""

    eval: Callable[[nn.Module], Any] | None = None
    data: Any = None
    example_inputs: Any = None
    methods: Sequence[str] | None = None
    ratios: Any = DEFAULT_RATIOS
    layers: Any = None
    metric: str | None = None
    higher_is_better: bool = True
    subsample: int | None = None
    executor: Any = None
    cache_dir: Any = None
    time_budget_s: float | None = None
    progress: bool = True
    seed: int = 0
    should_stop: Callable[[], bool] | None = None
    # auto's search: a setting harsher than one that alone dropped the metric by more than this is not
    # measured (it cannot be part of a plan within that budget); None measures every setting
    stop_above: float | None = None
    # auto's 'disk' objective: each point also records the estimated compact bytes of the tensors it changed
    # (``compact_before`` / ``compact_after``; see ``_disk.unit_compact_bytes``)
    compact_sizes: bool = False

    def replace(self, **changes: Any) -> SweepSettings:
        return dataclasses.replace(self, **changes)

    def probes(self) -> list[Any]:
        """The input batches fidelity is measured on (``data`` else the example inputs, cut to ``subsample``)."""
        return probe_batches(self.data, self.example_inputs, self.subsample)

    def inputs(self, probes: list[Any]) -> Any:
        """The example inputs, else the first probe batch (to trace or time the model); None without either."""
        return self.example_inputs if self.example_inputs is not None else (probes[0] if probes else None)

    def scorer(self, probes: list[Any]) -> Scorer:
        return Scorer(self.eval, probes, self.metric, self.higher_is_better)
