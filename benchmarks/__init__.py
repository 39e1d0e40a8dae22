"""Side-by-side benchmarks: every figure is a ratio against a baseline measured in the same run.

Run ``python -m benchmarks [--quick] [--only NAME]``. Each topic module exposes ``rows(quick) -> list[dict]``
with the keys of :data:`benchmarks.timing.COLUMNS`.
"""

import os

# OpenMP threads that spin while waiting (GNU OpenMP's default) make 2-thread torch about 10x slower as soon as
# another process holds one of this machine's 2 cores (measured: ResNet-18 at 16x3x112x112, 1030 ms against
# 105 ms with passive waiting). Passive waiting keeps the figures meaningful on a shared machine. It only takes
# effect when this package is imported before torch (``python -m benchmarks``); set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
