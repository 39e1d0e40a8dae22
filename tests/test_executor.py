"""Executors: in-process, process pool and a local Dask cluster of 2 workers give the same numbers, ship
the shared payload once per worker, stream results, honour cancellation."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from strategy_models import accuracy_eval, digits

from jupyter_compress.strategy.executor import InProcess, ProcessPool, as_executor, run_sweep
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
    assert os.getpid() not in _once_per_worker(out.results)


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
    remote = sensitivity(model, cache_dir=tmp_path / "b", executor=dask_client, **kw)
    assert remote.complete and remote.measured == len(local.points)
    key = lambda p: (p["method"], p["unit"], p["ratio"])  # noqa: E731
    # one thread per task on both sides: identical arithmetic, so identical numbers
    assert {key(p): p["metric"] for p in remote.points} == {key(p): p["metric"] for p in local.points}


@pytest.mark.slow
def test_dask_ships_once_per_worker_and_cancels(dask_client):
    out = run_sweep(whoami, {i: i for i in range(12)}, shared={"k": 5}, executor=dask_client, progress=False)
    assert {k: v["value"] for k, v in out.results.items()} == {i: 5 * i for i in range(12)}
    per_worker = _once_per_worker(out.results)
    assert len(per_worker) == 2 and all(len(ids) == 1 for ids in per_worker.values())
    start = time.monotonic()
    stopped = run_sweep(slow, {i: i for i in range(40)}, executor=dask_client, progress=False,
                        should_stop=lambda: True)
    assert stopped.interrupted and len(stopped.results) == 1
    # the 39 cancelled tasks (8 s of sleeping on 2 workers) did not run to the end
    assert time.monotonic() - start < 6


def test_import_does_not_pull_dask_or_bokeh():
    code = ("import sys, jupyter_compress as jc\nassert callable(jc.auto)\n"
            "print(','.join(m for m in ('dask', 'distributed', 'bokeh', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == ""
