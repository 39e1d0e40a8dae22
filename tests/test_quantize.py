"""Quantization methods on small real models: numeric floors (SQNR in dB), fusion, thresholds, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.methods.quantize import BackendUnavailableError, CalibrationDataError, ort
from jupyter_compress.methods.quantize._common import sqnr_db
from jupyter_compress.methods.quantize.qlinear import DynamicInt8Linear, WeightOnlyLinear

needs_ort = pytest.mark.skipif(not ort.ort_available(), reason="onnxruntime not installed")


def _linear(in_f=256, out_f=128, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f)


# -- numeric floors ------------------------------------------------------------------------------------
# A uniform b-bit quantizer of a Gaussian with its scale set by the max gives roughly 6.02 b - 9 dB;
# floors are set a few dB below that so that they hold for any seed yet fail for a broken quantizer
# (a wrong scale, zero point or bit packing costs tens of dB).

@pytest.mark.parametrize("per_channel,floor", [(True, 36.0), (False, 33.0)])
def test_dynamic_int8_linear_against_float(per_channel, floor):
    layer = _linear()
    q = DynamicInt8Linear.from_linear(layer, per_channel)
    assert sqnr_db(layer.weight, q.dequantized_weight()) > floor
    x = torch.randn(64, 256)
    with torch.no_grad():
        # activations are 7-bit on fbgemm/x86 (reduce_range): output SQNR floor 25 dB
        assert sqnr_db(layer(x), q(x)) > 25.0


def test_per_channel_beats_per_tensor_when_rows_differ_in_scale():
    layer = _linear()
    with torch.no_grad():
        layer.weight.mul_(torch.logspace(-2, 0, 128)[:, None])  # rows spanning two decades
    per_ch = sqnr_db(layer.weight, DynamicInt8Linear.from_linear(layer, True).dequantized_weight())
    per_t = sqnr_db(layer.weight, DynamicInt8Linear.from_linear(layer, False).dequantized_weight())
    assert per_ch > per_t + 5.0  # measured about 9 dB here; the large rows dominate both


@pytest.mark.parametrize("bits,group,floor", [(8, 32, 38.0), (8, 128, 36.0), (4, 32, 15.0), (4, 128, 13.0)])
def test_weight_only_sqnr_and_size(bits, group, floor):
    layer = _linear()
    q = WeightOnlyLinear(layer, bits, group)
    assert sqnr_db(layer.weight, q.dequantized_weight()) > floor
    assert q.qweight.numel() * q.qweight.element_size() == layer.weight.numel() * bits // 8
    x = torch.randn(16, 256)
    with torch.no_grad():
        assert sqnr_db(layer(x), q(x)) > floor - 3.0


def test_weight_only_int4_smaller_groups_are_more_accurate():
    layer = _linear()
    errs = [sqnr_db(layer.weight, WeightOnlyLinear(layer, 4, g).dequantized_weight()) for g in (32, 64, 128)]
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("dtype,floor", [("bfloat16", 40.0), ("float16", 60.0)])
def test_half_cast_sqnr(dtype, floor):
    model, x = make("mlp")
    small, report = jc.compress(model, jc.HalfConfig(dtype=dtype), example_inputs=x)
    with torch.no_grad():
        assert sqnr_db(model(x), small(x)) > floor - 10.0
    assert all(r.detail["sqnr_db"] > floor for r in report.compressed_rows)
    assert report.model_bytes_after < 0.55 * report.model_bytes_before


# -- dynamic int8 routes and reports ------------------------------------------------------------------------
def test_torch_route_rows_carry_sqnr_and_output_error():
    model, x = make("mlp")
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="torch"), example_inputs=x)
    assert {r.name for r in report.compressed_rows} == {"fc1", "fc2", "head"}
    for r in report.rows:
        assert r.detail["sqnr_db"] > 35.0 and 0.0 < r.error < 0.05
    with torch.no_grad():
        assert sqnr_db(model(x), small(x)) > 25.0


def test_max_error_keeps_sensitive_layers_in_float_and_names_them():
    model, x = make("mlp")
    _, full = jc.compress(model, jc.DynamicQuantConfig(backend="torch"), example_inputs=x)
    errors = sorted(r.error for r in full.rows)
    threshold = (errors[0] + errors[1]) / 2  # keeps all but the least sensitive layer in float
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="torch", max_error=threshold), example_inputs=x)
    kept = [r.name for r in report.skipped_rows]
    assert len(kept) == 2 and all("max_error" in r.skipped for r in report.skipped_rows)
    assert all(isinstance(small.get_submodule(n), nn.Linear) for n in kept)
    assert any(n in note for note in report.notes for n in kept)


def test_max_error_without_data_says_what_to_pass():
    model, _ = make("mlp")
    with pytest.raises(CalibrationDataError, match="calibration data"):
        jc.compress(model, jc.DynamicQuantConfig(backend="torch", max_error=0.01))


@needs_ort
def test_onnxruntime_route_matches_float_and_survives_copy_and_state_dict():
    model, x = make("transformer")
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="onnxruntime"), example_inputs=x)
    assert isinstance(small.attn, ort.OrtModule) and isinstance(small.mlp, ort.OrtModule)
    with torch.no_grad():
        ref, out = model(x), small(x)
        assert sqnr_db(ref, out) > 25.0
        twin = copy.deepcopy(small)
        assert torch.equal(twin(x), out)
        fresh, _ = jc.compress(model, jc.DynamicQuantConfig(backend="onnxruntime"), example_inputs=x)
        fresh.load_state_dict(small.state_dict())
        assert torch.equal(fresh(x), out)
    routes = [n for n in report.notes if n.startswith("Routes measured for attn")]
    assert routes and "int8 Linears (torch)" in routes[0] and "int8 (ONNX Runtime)" in routes[0]
    quantized = [r for r in report.compressed_rows if r.layer_type == "Linear"]
    assert {r.name for r in quantized} >= {"attn.query", "attn.key", "attn.value", "attn.out", "mlp.0", "mlp.2"}


def test_missing_backend_gives_alternatives(monkeypatch):
    # the only way to see this message on a machine that has onnxruntime is to hide it
    monkeypatch.setattr(ort, "ort_available", lambda: False)
    model, x = make("mlp")
    with pytest.raises(BackendUnavailableError, match="backend='torch'"):
        jc.compress(model, jc.DynamicQuantConfig(backend="onnxruntime"), example_inputs=x)
    with pytest.raises(ImportError):  # the two-parent error class
        jc.compress(model, jc.DynamicQuantConfig(backend="onnxruntime"), example_inputs=x)


def test_layers_whose_parent_reads_weights_are_skipped_and_named():
    model, x = make("torch_encoder")
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="torch"), example_inputs=x)
    skipped = {r.name: r.skipped for r in report.skipped_rows}
    assert "encoder.linear1" in skipped and "reads this layer's .weight" in skipped["encoder.linear1"]
    with torch.no_grad():
        assert small(x).shape == model(x).shape


# -- static int8 --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from jupyter_compress.examples.digits import digits_data, train_digits_cnn

    model, X_test, y_test = train_digits_cnn(epochs=10)
    return model, X_test, y_test, digits_data()[0][:512]


@pytest.mark.parametrize("observer", ["histogram", "minmax", "moving_average"])
def test_static_int8_digits_accuracy_within_half_a_point(digits, observer):
    model, X_test, y_test, X_cal = digits
    small, report = jc.compress(model, jc.StaticQuantConfig(observer=observer), data=list(X_cal.split(64)))
    before, after = jc.accuracy(model, X_test, y_test), jc.accuracy(small, X_test, y_test)
    assert after >= before - 0.005
    fused = {r.name: r.detail.get("fused") for r in report.compressed_rows}
    assert fused["conv1"] == "conv+bn+relu" and fused["conv2"] == "conv+bn+relu"
    assert isinstance(small.bn1, nn.Identity)
    assert all(r.detail["sqnr_db"] > 35.0 for r in report.compressed_rows if "sqnr_db" in r.detail)
    assert report.model_bytes_after < report.model_bytes_before / 3.5


def test_static_needs_data():
    model, _ = make("cnn")
    with pytest.raises(CalibrationDataError, match="needs calibration data"):
        jc.compress(model, jc.StaticQuantConfig())


def test_calibration_data_of_wrong_shape_names_the_expected_shape(digits):
    model, X_test, _, _ = digits
    with pytest.raises(CalibrationDataError, match=r"expects input \(N, 1, 8, 8\)"):
        jc.compress(model, jc.StaticQuantConfig(), data=torch.randn(8, 1, 9, 9), example_inputs=X_test[:4])
    with pytest.raises(CalibrationDataError, match=r"\(N, 1, H, W\) at its first layer 'conv1'"):
        jc.compress(model, jc.StaticQuantConfig(), data=torch.randn(8, 3, 8, 8))
    assert isinstance(model.bn1, nn.BatchNorm2d)  # the user's model untouched by the failures


# -- quantization-aware fine-tuning ----------------------------------------------------------------------
_QAT_DATA: dict = {}


def qat_train(model):
    """The user's training loop, named in the plan as '<this module>:qat_train'."""
    from jupyter_compress.examples.digits import fine_tune

    X, y = _QAT_DATA["train"]
    # a small learning rate: the float model is already trained and static int8 loses nothing here, so
    # QAT only has to keep accuracy (lr 1e-3 measured 1.3 pt lower: it perturbs a converged model)
    fine_tune(model, X, y, epochs=2, lr=1e-4)


def test_qat_trains_the_fake_quantized_layers_and_keeps_accuracy(digits):
    from jupyter_compress.examples.digits import digits_data

    model, X_test, y_test, X_cal = digits
    X_train, _, y_train, _ = digits_data()
    _QAT_DATA["train"] = (X_train, y_train)
    before = jc.state_dict_hash(model)
    small, report = jc.compress(model, jc.QATConfig(train=qat_train), data=list(X_cal.split(64)))
    assert jc.state_dict_hash(model) == before
    assert all(r.detail.get("trained") for r in report.compressed_rows if "trained" in r.detail)
    # the plan records the function by name only; replaying it takes the function from functions=
    assert report.plan["steps"][0]["train"] == f"{__name__}:qat_train"
    assert jc.accuracy(small, X_test, y_test) >= jc.accuracy(model, X_test, y_test) - 0.005
    assert isinstance(small.bn2, nn.Identity)


def test_qat_names_a_missing_training_function():
    model, x = make("cnn")
    with pytest.raises(jc.CompressError, match="never imports code") as info:
        jc.compress(model, jc.QATConfig(train="no_such_module:train"), example_inputs=x)
    assert "\n" not in str(info.value)


def test_qat_takes_a_named_function_from_functions_only():
    model, x = make("cnn")
    calls = []
    plan = jc.Plan.from_yaml("steps: [{method: quantize.qat, train: my_train}]")
    jc.compress(model, plan, data=[x], functions={"my_train": calls.append})
    assert len(calls) == 1 and isinstance(calls[0], nn.Module)
