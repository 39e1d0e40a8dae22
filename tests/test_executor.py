"""Executors: in-process, process pool and a local Dask cluster of 2 workers give the same numbers, ship
the shared payload once per worker, stream results, honour cancellation."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from strategy_models import accuracy_eval, digits

from jupyter_compress.strategy.executor import DaskExecutor, InProcess, ProcessPool, as_executor, run_sweep
from jupyter_compress.strategy.sensitivity import sensitivity


def whoami(shared, item):
    """Which process ran the item, and which copy of ``shared`` it saw."""
    if item == "boom":
        raise ValueError("bad item")
    return {"pid": os.getpid(), "shared": id(shared), "value": shared["k"] * item}


def slow(shared, item):
    time.sleep(0.2)
    return item


def test_in_process_streams_and_reports_errors():
    seen = []
    out = run_sweep(whoami, {"a": 1, "b": "boom", "c": 3}, shared={"k": 2}, progress=False,
                    on_result=lambda k, v: seen.append(k))
    assert {k: v["value"] for k, v in out.results.items()} == {"a": 2, "c": 6}
    assert seen == ["a", "c"] and "bad item" in out.errors["b"] and not out.interrupted


def test_should_stop_cancels_the_rest():
    out = run_sweep(whoami, {i: i for i in range(10)}, shared={"k": 1}, progress=False, should_stop=lambda: True)
    assert out.interrupted and len(out.results) == 1


def test_bad_executor():
    with pytest.raises(ValueError, match="executor"):
        as_executor("gpu-cluster")
    assert isinstance(as_executor(None), InProcess) and isinstance(as_executor(3), ProcessPool)


def _once_per_worker(results):
    by_pid = {}
    for r in results.values():
        by_pid.setdefault(r["pid"], set()).add(r["shared"])
    return by_pid


@pytest.mark.slow
def test_process_pool_ships_once_and_matches(tmp_path):
    out = run_sweep(whoami, {i: i for i in range(8)}, shared={"k": 3}, executor=ProcessPool(2), progress=False)
    assert {k: v["value"] for k, v in out.results.items()} == {i: 3 * i for i in range(8)}
    assert all(len(ids) == 1 for ids in _once_per_worker(out.results).values())
    # the first item runs here (its time sizes the batches); every other one in the workers
    assert out.results[0]["pid"] == os.getpid()
    assert os.getpid() not in _once_per_worker({k: v for k, v in out.results.items() if k != 0})


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.slow
def test_dask_sensitivity_equals_in_process(tmp_path, dask_client):
    model, X, y = digits()
    kw = dict(eval=accuracy_eval(X, y), example_inputs=X[:8], methods=["prune", "svd"], ratios=(0.5, 0.9),
              progress=False)
    local = sensitivity(model, cache_dir=tmp_path / "a", **kw)
    remote = sensitivity(model, cache_dir=tmp_path / "b", executor=DaskExecutor(dask_client, min_work_s=0), **kw)
    assert remote.complete and remote.measured == len(local.points)
    assert remote.executor_note.startswith("Ran on dask (2 workers)")
    key = lambda p: (p["method"], p["unit"], p["ratio"])  # noqa: E731
    # one thread per task on both sides: identical arithmetic, so identical numbers
    assert {key(p): p["metric"] for p in remote.points} == {key(p): p["metric"] for p in local.points}


@pytest.mark.slow
def test_dask_ships_once_per_worker_and_cancels(dask_client):
    # every task worth sending (min_work_s=0), one item per task (task_s=0)
    out = run_sweep(whoami, {i: i for i in range(12)}, shared={"k": 5}, progress=False,
                    executor=DaskExecutor(dask_client, min_work_s=0, task_s=0))
    assert {k: v["value"] for k, v in out.results.items()} == {i: 5 * i for i in range(12)}
    per_worker = _once_per_worker({k: v for k, v in out.results.items() if k != 0})
    assert len(per_worker) == 2 and all(len(ids) == 1 for ids in per_worker.values())
    start = time.monotonic()
    stopped = run_sweep(slow, {i: i for i in range(40)}, executor=DaskExecutor(dask_client, task_s=0),
                        progress=False, should_stop=lambda: True)
    assert stopped.interrupted and len(stopped.results) == 1
    # the 39 cancelled tasks (8 s of sleeping on 2 workers) did not run to the end
    assert time.monotonic() - start < 6


def paced(shared, item):
    time.sleep(0.05)
    return os.getpid()


@pytest.mark.slow
def test_dask_keeps_small_sweeps_here_and_batches_large_ones(dask_client):
    # 8 points of ~50 ms: 0.4 s of work, less than min_work_s: no task is sent, and the note says why
    small = run_sweep(paced, {i: i for i in range(8)}, executor=DaskExecutor(dask_client, min_work_s=4.0),
                      progress=False)
    assert set(small.results.values()) == {os.getpid()} and small.note.startswith("Ran in this process")
    # 40 points of ~50 ms with tasks of ~0.2 s: batches of 4 (at most 39 / (4 batches x 2 workers) = 5)
    big = run_sweep(paced, {i: i for i in range(40)}, progress=False,
                    executor=DaskExecutor(dask_client, min_work_s=0.5, task_s=0.2))
    assert len(big.results) == 40 and os.getpid() not in {v for k, v in big.results.items() if k != 0}
    tasks = int(big.note.split(" points in ")[1].split(" tasks")[0])
    assert 8 <= tasks <= 14, big.note  # 39 points / 4 (a point measured at 40-60 ms: 3 to 5 per task)


@pytest.mark.slow
def test_a_scheduler_address_connects_to_that_cluster(dask_client):
    ex = as_executor(dask_client.scheduler.address)  # what a user passes for a cluster started elsewhere
    try:
        assert isinstance(ex, DaskExecutor) and ex.workers == 2
        ex.min_work_s, ex.task_s = 0, 0
        out = run_sweep(whoami, {i: i for i in range(6)}, shared={"k": 2}, executor=ex, progress=False)
        assert {k: v["value"] for k, v in out.results.items()} == {i: 2 * i for i in range(6)}
    finally:
        ex.client.close()


def test_import_does_not_pull_dask_or_bokeh():
    code = ("import sys, jupyter_compress as jc\nassert callable(jc.auto)\n"
            "print(','.join(m for m in ('dask', 'distributed', 'bokeh', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_an_address_where_no_scheduler_answers_is_a_one_line_error():
    pytest.importorskip("distributed")
    from jupyter_compress.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match=r"tcp://127\.0\.0\.1:1.*no Dask scheduler answered.*dask scheduler"):
        as_executor("tcp://127.0.0.1:1")


def test_batches_shrink_towards_the_end_so_workers_finish_together():
    # the first item is timed here (~20 ms of sleep); task_s 0.1 s asks for ~5 items a batch
    pool = ProcessPool(2, task_s=0.1)
    items = {i: i for i in range(41)}
    plan = pool._plan(lambda shared, item: time.sleep(0.02) or item, None, items)
    first = []
    try:
        while True:
            first.append(next(plan))
    except StopIteration as stop:
        batches = stop.value
    assert [key for key, _ in first] == [0]  # only the first item ran here
    sizes = [len(b) for b in batches]
    assert sum(sizes) == 40 and [k for b in batches for k, _ in b] == list(range(1, 41))  # each once, in order
    assert sizes == sorted(sizes, reverse=True)  # never larger than the one before
    assert sizes[0] >= 3 and sizes[-2:] == [1, 1]  # full batches first, single items last
