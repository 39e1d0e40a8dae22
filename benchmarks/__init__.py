"""Side-by-side benchmarks: every figure is a ratio against a baseline measured in the same run.

Run ``python -m benchmarks [--quick] [--only NAME]``. Each topic module exposes ``rows(quick) -> list[dict]``
with the keys of :data:`benchmarks.timing.COLUMNS`.
"""

import os
import sys
import time


def others_busy(seconds: float = 0.5) -> float | None:
    """CPUs kept busy by the machine over ``seconds`` while this process sleeps (/proc/stat); None off Linux."""

    def busy() -> float:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    try:
        start = busy()
        time.sleep(seconds)
        return (busy() - start) / seconds
    except (OSError, ValueError):
        return None


# GNU OpenMP's default (spin, then sleep) costs little on an idle machine, but as soon as another process holds
# one of this machine's 2 cores, 2-thread torch runs about 10x slower (measured: ResNet-18 at 16x3x112x112,
# 1030 ms against 105 ms with OMP_WAIT_POLICY=PASSIVE). PASSIVE in turn costs small kernels on an idle machine
# (SVD Linear at batch 8: 1.23x against 2.10x). So: the default when the machine is idle at start, PASSIVE when
# it is busy. Only effective before torch is imported (``python -m benchmarks``); OMP_WAIT_POLICY overrides.
OMP_NOTE = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (set by the caller)" \
    if "OMP_WAIT_POLICY" in os.environ else "OMP_WAIT_POLICY unset (GNU OpenMP default)"
if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
    _busy = others_busy()
    if _busy is not None and _busy > 0.5:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        OMP_NOTE = f"OMP_WAIT_POLICY=PASSIVE (other processes kept {_busy:.1f} CPUs busy at start)"
