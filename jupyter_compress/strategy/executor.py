"""Where a sweep runs: in this process (default), a process pool, or a ``dask.distributed`` cluster.

A sweep is ``task(shared, item)`` over many small ``items``; ``shared`` (the model, the eval function,
probe data) is shipped once per worker, never once per item: a process pool receives it in each worker's
initializer, a Dask cluster through ``client.scatter(..., broadcast=True)``. Items are sent in batches sized
to about ``task_s`` seconds each (the first item is measured here and sizes them): a sensitivity point on a
small model takes milliseconds, far less than a task's round trip. When the whole sweep is estimated at less
than ``min_work_s`` (the cost of starting tasks and shipping the model), it runs in this process and
``note`` says so. Results stream back as they
finish (``on_result`` is called for each, in the calling process, so a cache can be written as it goes),
with a tqdm.auto progress bar. ``should_stop()`` is polled between results (a time budget, a Stop button);
Ctrl-C cancels what is pending and returns the results so far: nothing already measured is lost.

Processes receive ``shared`` serialized by cloudpickle (installed with dask), because eval functions are
often lambdas or closures that the standard pickler refuses; this is transport between processes, never
a file. ``task`` itself must be importable (a module-level function).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["InProcess", "ProcessPool", "DaskExecutor", "SweepOutcome", "as_executor", "run_sweep"]


@dataclasses.dataclass
class SweepOutcome:
    """Results by key; ``interrupted`` when Ctrl-C or ``should_stop`` ended the sweep early."""

    results: dict[Hashable, Any]
    errors: dict[Hashable, str]
    interrupted: bool = False
    note: str | None = None  # where it ran and why (a distributed executor's sizing)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


class InProcess:
    """Run every item here, one after the other (``shared`` is used as is: nothing is copied)."""

    name = "in-process"

    def submit_all(self, task, shared, items):
        for key, item in items.items():
            yield key, _guarded(task, shared, item)

    def cancel(self) -> None:
        pass


def _guarded(task, shared, item):
    try:
        return ("ok", task(shared, item))
    except Exception as exc:  # one failing point must not end the sweep; it is reported by key
        return ("error", f"{type(exc).__name__}: {exc}")


_WORKER_SHARED: dict[str, Any] = {}


def _pool_init(payload: bytes, threads: int | None) -> None:
    import cloudpickle

    _set_threads(threads)
    _WORKER_SHARED["shared"] = cloudpickle.loads(payload)


def _pool_run_batch(task, batch):
    return _run_batch(task, _WORKER_SHARED["shared"], batch)


def _run_batch(task, shared, batch):
    return [(key, _guarded(task, shared, item)) for key, item in batch]


class _Sized:
    """What a distributed executor shares: measure the first item here, then either keep the sweep in this
    process (too little work to pay for the workers) or cut the rest into batches of about ``task_s``."""

    name = "distributed"
    workers = 1

    def __init__(self, task_s: float, min_work_s: float):
        self.task_s, self.min_work_s = task_s, min_work_s
        self.note: str | None = None
        self._futures: list = []

    def _plan(self, task, shared, items):
        """Yields ``(key, result)`` of the first item (and of every item when the sweep stays here); returns
        the remaining items cut into batches, or None when nothing is left to distribute."""
        import time

        entries = list(items.items())
        if not entries:
            return None
        start = time.perf_counter()
        yield entries[0][0], _guarded(task, shared, entries[0][1])
        each = max(time.perf_counter() - start, 1e-6)
        rest = entries[1:]
        if not rest:
            return None
        estimate = each * len(rest)
        if estimate < self.min_work_s:
            self.note = (f"Ran in this process: the sweep's {len(rest) + 1} points were estimated at "
                         f"{estimate + each:.1f} s ({each * 1e3:.0f} ms each), less than the {self.min_work_s:g} s "
                         f"that starting {self.name} tasks and shipping the model cost.")
            for key, item in rest:
                yield key, _guarded(task, shared, item)
            return None
        per = max(1, round(self.task_s / each))
        per = min(per, max(1, -(-len(rest) // (4 * self.workers))))  # >= 4 batches per worker: balance
        # guided sizes: batches of ``per`` while there is plenty left, then smaller (the remaining points over
        # twice the workers), down to single points, so the workers finish together instead of one waiting
        # out another's last full batch
        batches, i = [], 0
        while i < len(rest):
            size = max(1, min(per, -(-(len(rest) - i) // (2 * self.workers))))
            batches.append(rest[i:i + size])
            i += size
        self.note = (f"Ran on {self.name} ({self.workers} workers): {len(rest)} points in {len(batches)} tasks of "
                     f"up to {per} ({each * 1e3:.0f} ms a point measured here first).")
        return batches


class ProcessPool(_Sized):
    """A pool of ``workers`` processes (``spawn`` by default: safe with torch's thread pools)."""

    name = "process pool"

    def __init__(self, workers: int = 2, *, start_method: str = "spawn", threads_per_worker: int | None = 1,
                 task_s: float = 1.0, min_work_s: float = 0.0):
        super().__init__(task_s, min_work_s)
        self.workers, self.start_method, self.threads = workers, start_method, threads_per_worker

    def submit_all(self, task, shared, items):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        import cloudpickle

        batches = yield from self._plan(task, shared, items)
        if not batches:
            return
        payload = cloudpickle.dumps(shared)
        ctx = multiprocessing.get_context(self.start_method)
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_pool_init,
                                 initargs=(payload, self.threads)) as pool:
            futures = [pool.submit(_pool_run_batch, task, batch) for batch in batches]
            self._futures = futures
            try:
                for future in as_completed(futures):
                    yield from future.result()
            finally:
                self.cancel()

    def cancel(self) -> None:
        for future in self._futures:
            future.cancel()


class _Payload:
    """One object for ``scatter`` (which would scatter a dict's values one by one and rebuild the dict
    for every task); workers keep it in memory and hand every task the very same ``shared``."""

    def __init__(self, value):
        self.value = value


def _dask_run_batch(task, payload, batch, threads):
    _set_threads(threads)
    return _run_batch(task, payload.value, batch)


class DaskExecutor(_Sized):
    """Batches of items as tasks on a ``distributed.Client`` (a local cluster, or a scheduler's address:
    ``executor="tcp://host:8786"``); ``shared`` scattered to every worker once. ``task_s``: the seconds of
    work per task to aim at; ``min_work_s``: below this estimated total the sweep stays in this process."""

    name = "dask"

    def __init__(self, client, *, threads_per_task: int | None = 1, task_s: float = 1.0, min_work_s: float = 4.0):
        super().__init__(task_s, min_work_s)
        self.client, self.threads = client, threads_per_task

    @property
    def workers(self) -> int:
        try:
            return max(1, sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()))
        except Exception:  # a client that cannot say: assume one
            return 1

    def submit_all(self, task, shared, items):
        from distributed import as_completed

        batches = yield from self._plan(task, shared, items)
        if not batches:
            return
        shared_future = self.client.scatter(_Payload(shared), broadcast=True, hash=False)
        futures = [self.client.submit(_dask_run_batch, task, shared_future, batch, self.threads, pure=False)
                   for batch in batches]
        self._futures = futures
        try:
            for future in as_completed(futures):
                yield from future.result()
        finally:
            self.cancel()
            self.client.cancel([shared_future])

    def cancel(self) -> None:
        if self._futures:
            self.client.cancel(self._futures)


def as_executor(spec: Any = None):
    """``None`` / ``'inprocess'``; ``'processes'`` or an int (pool size); a ``distributed.Client`` or a Dask
    scheduler's address (``'tcp://host:8786'``); or an executor object (anything with ``submit_all`` and
    ``cancel``)."""
    if spec is None or spec == "inprocess":
        return InProcess()
    if spec == "processes":
        return ProcessPool()
    if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 1:
        return ProcessPool(spec)
    if hasattr(spec, "submit_all") and hasattr(spec, "cancel"):
        return spec
    if type(spec).__name__ == "Client" and hasattr(spec, "scatter"):
        return DaskExecutor(spec)
    if isinstance(spec, str) and spec.startswith(("tcp://", "tls://", "ucx://", "ws://", "wss://")):
        try:
            from distributed import Client
        except ImportError:
            from ..errors import InvalidConfigError

            raise InvalidConfigError(f"executor={spec!r} is a Dask scheduler address, and dask.distributed is "
                                     f"not installed: pip install distributed.") from None
        try:
            client = Client(spec, timeout="10s")
        except OSError as exc:
            from ..errors import InvalidConfigError

            raise InvalidConfigError(f"executor={spec!r}: no Dask scheduler answered there ({exc}); start one "
                                     f"(`dask scheduler`) or pass the address it prints.") from None
        return DaskExecutor(client)
    from ..errors import InvalidConfigError

    raise InvalidConfigError(f"executor must be None, 'inprocess', 'processes', a worker count, a "
                             f"dask.distributed Client or a scheduler address ('tcp://host:8786'); got {spec!r}.")


def run_sweep(task: Callable, items: dict[Hashable, Any], *, shared: Any = None, executor: Any = None,
              progress: bool = True, desc: str = "sweep", on_result: Callable | None = None,
              should_stop: Callable[[], bool] | None = None) -> SweepOutcome:
    """Run ``task(shared, item)`` for every item on ``executor``; see the module docstring."""
    ex = as_executor(executor)
    outcome = SweepOutcome({}, {})
    if not items:
        return outcome
    from ..core.progress import progress_bar

    bar = progress_bar(len(items), desc=desc, disable=not progress)  # closed and cleared when done
    stream = ex.submit_all(task, shared, items)
    try:
        for key, (status, value) in stream:
            if status == "ok":
                outcome.results[key] = value
                if on_result is not None:
                    on_result(key, value)
            else:
                outcome.errors[key] = value
            bar.update(1)
            if should_stop is not None and should_stop():
                outcome.interrupted = True
                break
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        ex.cancel()
        stream.close()
        bar.close()
    outcome.note = getattr(ex, "note", None)
    return outcome
