"""Where a sweep runs: in this process (default), a process pool, or a ``dask.distributed`` cluster.

A sweep is ``task(shared, item)`` over many small ``items``; ``shared`` (the model, the eval function,
probe data) is shipped once per worker, never once per item: a process pool receives it in each worker's
initializer, a Dask cluster through ``client.scatter(..., broadcast=True)``. Results stream back as they
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


def _pool_run(task, item):
    return _guarded(task, _WORKER_SHARED["shared"], item)


class ProcessPool:
    """A pool of ``workers`` processes (``spawn`` by default: safe with torch's thread pools)."""

    name = "process pool"

    def __init__(self, workers: int = 2, *, start_method: str = "spawn", threads_per_worker: int | None = 1):
        self.workers, self.start_method, self.threads = workers, start_method, threads_per_worker
        self._futures: list = []

    def submit_all(self, task, shared, items):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        import cloudpickle

        payload = cloudpickle.dumps(shared)
        ctx = multiprocessing.get_context(self.start_method)
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_pool_init,
                                 initargs=(payload, self.threads)) as pool:
            keys = {pool.submit(_pool_run, task, item): key for key, item in items.items()}
            self._futures = list(keys)
            try:
                for future in as_completed(keys):
                    yield keys[future], future.result()
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


def _dask_run(task, payload, item, threads):
    _set_threads(threads)
    return _guarded(task, payload.value, item)


class DaskExecutor:
    """Items as tasks on a ``distributed.Client``; ``shared`` scattered to every worker once."""

    name = "dask"

    def __init__(self, client, *, threads_per_task: int | None = 1):
        self.client, self.threads = client, threads_per_task
        self._futures: list = []

    def submit_all(self, task, shared, items):
        from distributed import as_completed

        shared_future = self.client.scatter(_Payload(shared), broadcast=True, hash=False)
        keys = {self.client.submit(_dask_run, task, shared_future, item, self.threads, pure=False): key
                for key, item in items.items()}
        self._futures = list(keys)
        try:
            for future in as_completed(keys):
                yield keys[future], future.result()
        finally:
            self.cancel()
            self.client.cancel([shared_future])

    def cancel(self) -> None:
        if self._futures:
            self.client.cancel(self._futures)


def as_executor(spec: Any = None):
    """``None`` / ``'inprocess'``; ``'processes'`` or an int (pool size); a ``distributed.Client``; or an
    executor object (anything with ``submit_all`` and ``cancel``)."""
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
    from ..errors import InvalidConfigError

    raise InvalidConfigError(f"executor must be None, 'inprocess', 'processes', a worker count or a "
                             f"dask.distributed Client; got {spec!r}.")


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
    return outcome
