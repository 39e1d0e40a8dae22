"""Every JSON the package writes is strict JSON (no NaN / Infinity): a non-finite float is written as the
string "Infinity", "-Infinity" or "NaN" and read back as a float (core.jsonsafe, Report.from_dict)."""

from __future__ import annotations

import json
import math

import torch
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.core.jsonsafe import dumps, json_restore, json_safe
from jupyter_compress.strategy._cache import JsonCache
from jupyter_compress.strategy._sens_result import Sensitivity
from jupyter_compress.strategy.compare import ComparisonTable


def _strict(obj) -> str:
    return json.dumps(obj, allow_nan=False)  # raises ValueError on NaN / Infinity


def _exact_model() -> nn.Module:
    """Weights that bfloat16 holds exactly (quarters of small ints): an SQNR of infinity per layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-4, 5, p.shape).float() / 4)
    return model


def test_report_with_an_infinite_sqnr_is_strict_json_and_reads_back():
    _, report = jc.compress(_exact_model(), jc.HalfConfig())
    assert math.isinf(report.rows[0].detail["sqnr_db"])  # the case that made jupyter_client warn
    data = report.to_dict()
    text = _strict(data)
    assert '"Infinity"' in text
    _strict(report._repr_mimebundle_()[jc.core.report.REPORT_MIME])
    back = jc.Report.from_dict(json.loads(text))
    assert back.rows[0].detail["sqnr_db"] == math.inf
    assert back.to_text() == report.to_text()


def test_non_finite_metrics_and_errors_round_trip():
    row = jc.LayerRow(name="NaN", method="m", layer_type="Linear", new_type="Linear", params_before=1,
                      params_after=1, nonzeros_before=1, nonzeros_after=1, bytes_before=4, bytes_after=4,
                      error=math.nan, detail={"sqnr_db": -math.inf})
    report = jc.Report(rows=[row], plan={"steps": []}, model_params_before=1, model_params_after=1,
                       model_nonzeros_before=1, model_nonzeros_after=1, model_bytes_before=4, model_bytes_after=4,
                       metrics_before={"loss": math.inf}, metrics_after={"loss": math.nan, "note": "NaN"},
                       timings={"s": math.inf}, history=[{"epoch": 1, "loss": math.inf}], notes=["NaN"])
    back = jc.Report.from_dict(json.loads(_strict(report.to_dict())))
    assert math.isnan(back.rows[0].error) and back.rows[0].detail["sqnr_db"] == -math.inf
    assert back.rows[0].name == "NaN" and back.notes == ["NaN"]  # names and notes are words, never numbers
    assert back.metrics_before["loss"] == math.inf and math.isnan(back.metrics_after["loss"])
    assert back.timings["s"] == math.inf and back.history[0]["loss"] == math.inf
    assert _strict(row.to_dict())


def test_helpers_keep_containers_and_finite_values():
    obj = {"a": (1.5, math.inf), "b": [math.nan, "x", 2], "c": torch.tensor(float("-inf")), "d": None}
    safe = json_safe(obj)
    assert safe == {"a": (1.5, "Infinity"), "b": ["NaN", "x", 2], "c": "-Infinity", "d": None}
    assert json_restore(json.loads(dumps(obj)))["a"] == [1.5, math.inf]


def test_cli_report_json_and_artifact_manifest_are_strict(tmp_path):
    from jupyter_compress.__main__ import main
    from jupyter_compress.io import read_manifest, save

    model = _exact_model()
    small, report = jc.compress(model, jc.HalfConfig())
    save(small, report, tmp_path / "a.safetensors")
    manifest = read_manifest(tmp_path / "a.safetensors")  # parsed from the stored JSON text
    assert manifest["report"]["rows"][0]["detail"]["sqnr_db"] == "Infinity"
    # what `jupyter-compress report DIR --format json` prints, from a report.json with an infinite SQNR
    (tmp_path / "report.json").write_text(dumps(report.to_dict()))
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(tmp_path), "--format", "json"]) == 0
    _strict(json.loads(out.getvalue()))


def test_strategy_results_and_sweep_cache_are_strict(tmp_path):
    table = ComparisonTable([{"label": "x", "size_ratio": math.inf, "quality_after": math.nan}], budget=0.5,
                            quality_key="accuracy", hardware="cpu")
    _strict(table.to_dict())
    sens = Sensitivity(points=[{"method": "svd", "drop": math.inf}], baseline=math.nan, metric="accuracy",
                       ratios=(0.5,))
    _strict(sens.to_dict())
    cache = JsonCache(tmp_path, "sens", "k" * 40, {"v": 1})
    cache.put("p", {"sqnr_db": math.inf})
    _strict(json.loads(cache.path.read_text()))
    assert JsonCache(tmp_path, "sens", "k" * 40, {"v": 1}).points["p"]["sqnr_db"] == math.inf


def test_plan_json_is_strict():
    model, _ = make("mlp")
    _, report = jc.compress(model, jc.SVDConfig(rank=0.5))
    _strict(json.loads(jc.Plan.from_dict(report.plan).to_json()))
