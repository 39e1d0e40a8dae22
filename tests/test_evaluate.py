"""Evaluation metrics against reference implementations (scikit-learn, the codecs' own round trips)."""

from __future__ import annotations

import json
import math
import zlib

import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from jupyter_compress import PruneConfig, compress
from jupyter_compress.core.evaluate import Evaluator, attach_thresholds, evaluate, task_metrics
from jupyter_compress.core.metrics_size import available_codecs, codec_sizes, disk_sizes, state_bytes
from jupyter_compress.core.metrics_speed import batch_of, peak_memory_bytes, speed_metrics
from jupyter_compress.core.metrics_task import classification_metrics, fidelity_metrics, regression_metrics
from jupyter_compress.core.thresholds import Thresholds, check_thresholds
from jupyter_compress.errors import InvalidConfigError


@pytest.fixture(scope="module")
def digits():
    from jupyter_compress.examples.digits import train_digits_cnn

    return train_digits_cnn(epochs=3)


# float64 arithmetic on both sides: agreement to 1e-12 (only summation order differs).
TOL = 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    y_true = torch.randint(0, 5, (200,), generator=g)
    y_pred = torch.where(torch.rand(200, generator=g) < 0.6, y_true, torch.randint(0, 6, (200,), generator=g))
    got = classification_metrics(y_true, y_pred)
    t, p = y_true.numpy(), y_pred.numpy()
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(t, p), abs=TOL)
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        assert got[f"{name}_macro"] == pytest.approx(fn(t, p, average="macro", zero_division=0), abs=TOL)
        per = fn(t, p, average=None, zero_division=0, labels=sorted(set(t) | set(p)))
        assert [got["per_class"][str(c)][name] for c in sorted(set(t) | set(p))] == pytest.approx(per, abs=TOL)


def test_class_never_predicted_counts_zero_like_sklearn():
    t, p = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 1, 1])
    got = classification_metrics(t, p)
    assert got["per_class"]["2"]["precision"] == 0.0 and got["per_class"]["2"]["support"] == 1
    assert got["f1_macro"] == pytest.approx(skm.f1_score(t, p, average="macro", zero_division=0), abs=TOL)


@pytest.mark.parametrize("shape", [(100,), (100, 3)])
def test_regression_matches_sklearn(shape):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    p = t + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
    got = regression_metrics(t, p)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(t, p), abs=TOL)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(t, p), abs=TOL)
    assert got["r2"] == pytest.approx(skm.r2_score(t, p), abs=TOL)


def test_fidelity_by_hand():
    ref = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    assert fidelity_metrics(ref, ref)["sqnr_db"] == math.inf
    out = ref.clone()
    out[1] = torch.tensor([3.0, 1.0, 0.0])  # second row's argmax flips
    f = fidelity_metrics(ref, out)
    assert f["top1_agreement"] == 0.5
    noise = 9 + 9
    assert f["sqnr_db"] == pytest.approx(10 * math.log10(float((ref**2).sum()) / noise), abs=1e-12)
    p, q = ref.double().softmax(1), out.double().softmax(1)
    kl = float((p * (p.log() - q.log())).sum(1).mean())
    assert f["kl_div"] == pytest.approx(kl, abs=1e-12)
    cos = float(nn.functional.cosine_similarity(ref.double(), out.double()).mean())
    assert f["cosine"] == pytest.approx(cos, abs=1e-12)


def test_codecs_round_trip_and_match_the_libraries(tmp_path):
    import lz4.frame
    import zstandard

    assert set(available_codecs()) == {"zlib", "lz4", "zstd"}
    model = nn.Linear(64, 32)
    with torch.no_grad():
        model.weight[:, :48] = 0  # compressible
    payload = state_bytes(model)
    assert len(payload) == (64 * 32 + 32) * 4
    results = {r.codec: r for r in codec_sizes(payload)}
    assert results["zlib"].compressed_bytes == len(zlib.compress(payload, 6))
    assert lz4.frame.decompress(lz4.frame.compress(payload)) == payload
    assert results["lz4"].compressed_bytes == len(lz4.frame.compress(payload))
    assert results["zstd"].compressed_bytes == len(zstandard.ZstdCompressor(level=3).compress(payload))
    assert all(r.ratio > 1.5 for r in results.values())  # three quarters of the weight is zeros
    sizes = disk_sizes(model)
    assert sizes["raw_bytes"] == len(payload) and sizes["sparse_bytes"] < sizes["raw_bytes"]


def test_speed_metrics_and_batches():
    x = torch.randn(3, 8)
    assert batch_of(x, 7).shape == (7, 8) and batch_of({"a": x}, 2)["a"].shape == (2, 8)
    m = nn.Linear(8, 4)
    out = speed_metrics(m, x, batch_sizes=(1, 16), repeats=3, warmup=1)
    assert {"latency_ms", "latency_p95_ms", "throughput", "latency_ms@1", "throughput@16"} <= set(out)
    assert out["latency_p95_ms"] >= out["latency_ms"] > 0


def test_peak_memory_sees_the_activations():
    # Linear(256 -> 2048) on 128 rows: the output alone is 128*2048*4 = 1 MiB; ReLU makes another.
    m = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 4))
    peak = peak_memory_bytes(m, torch.randn(128, 256))
    assert 2 * 2**20 <= peak < 4 * 2**20
    assert peak_memory_bytes(m, torch.randn(16, 256)) < peak


def test_evaluator_on_the_digits_cnn_and_report(digits):
    model, X, y = digits
    calls = []
    ev = Evaluator((X, y), reference=model, example_inputs=X[:32], disk=True, memory=True,
                   user_eval=lambda m: calls.append(1) or {"mine": 1.0})
    small, report = compress(model, PruneConfig(amount=0.6), eval=ev)
    before, after = report.metrics_before, report.metrics_after
    preds = model(X).argmax(1)
    assert before["accuracy"] == pytest.approx(skm.accuracy_score(y, preds), abs=TOL)
    assert before["top1_agreement"] == 1.0 and before["sqnr_db"] == math.inf
    assert after["top1_agreement"] < 1.0 and after["disk_zstd_bytes"] < before["disk_zstd_bytes"]
    ev(model)  # cached: the baseline is measured once
    assert len(calls) == 2
    attach_thresholds(report, Thresholds(max_drop=0.0, max_latency_ms=1e6))
    drop = before["accuracy"] - after["accuracy"]
    assert report.passed is (drop <= 0)
    text, page = report.to_text(), report.to_html()
    assert "PASS: latency" in text and "codecs" in page and "per-class F1" in page
    data = json.loads(json.dumps(report.to_dict()))
    assert data["thresholds"][1]["ok"] is True and "plots_html" not in data


def test_thresholds_fail_and_unchecked(digits):
    model, X, y = digits
    small, report = compress(model, PruneConfig(amount=0.95), eval=Evaluator((X, y)))
    attach_thresholds(report, Thresholds(max_drop=0.01, max_latency_ms=1.0, max_bytes=10))
    assert report.passed is False
    assert report.to_text().splitlines()[1].startswith("WARNING: a threshold is crossed")
    assert [t["ok"] for t in report.thresholds] == [False, None, False]
    assert "UNCHECKED" in report.to_text() and "WARNING" in report.to_html()
    with pytest.raises(InvalidConfigError, match="max_drop"):
        Thresholds(max_drop=-1)


def test_a_nan_metric_crosses_the_limit_and_a_missing_one_is_unchecked():
    """The one threshold rule (the CLI's gate reads it too): NaN crosses, missing is unchecked, 0-d tensors count."""
    nan = float("nan")

    def check(before, after, **limits):
        return check_thresholds(Thresholds(**limits), metrics_before=before, metrics_after=after, bytes_after=100)

    (row,) = check({"accuracy": 0.9}, {"accuracy": nan}, max_drop=1.0)
    assert row["ok"] is False and row["metric"] == "accuracy" and "is NaN after" in row["message"]
    (row,) = check({"metric": nan}, {"metric": nan}, max_drop=1.0)
    assert row["ok"] is False and "NaN before and after" in row["message"]
    (row,) = check({"accuracy": 0.9, "latency_ms": 1.0}, {"latency_ms": 1.0}, max_drop=1.0)
    assert row["ok"] is None and "not measured after" in row["message"]
    (row,) = check({"latency_ms": 2.0}, {}, max_drop=1.0)  # a cost is never the quality metric
    assert row["ok"] is None and row["metric"] is None
    (row,) = check({"accuracy": torch.tensor(0.9)}, {"accuracy": torch.tensor(0.5)}, max_drop=0.1)
    assert row["ok"] is False and row["value"] == pytest.approx(0.4)
    (row,) = check({}, {"latency_ms": nan}, max_latency_ms=1e9)
    assert row["ok"] is False and "latency is NaN" in row["message"]
    assert [r["ok"] for r in check({"accuracy": 0.9}, {"accuracy": 0.9, "latency_ms": 1.0}, max_drop=0.0,
                                   max_latency_ms=2.0, max_bytes=100)] == [True, True, True]


def test_task_auto_and_evaluate_regression():
    model = nn.Linear(4, 1)
    X = torch.randn(50, 4)
    y = (X @ torch.ones(4, 1)).float()
    out = evaluate(model, (X, y))
    assert {"mae", "mse", "r2"} <= set(out) and "accuracy" not in out
    assert task_metrics(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]))["accuracy"] >= 0
    with pytest.raises(ValueError, match="task"):
        task_metrics(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]), task="x")
