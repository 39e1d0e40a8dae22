"""ONNX export of compressed models, verified against PyTorch in ONNX Runtime."""

from __future__ import annotations

import pytest
import torch
from models import make

import jupyter_compress as jc
from jupyter_compress.methods import PruneConfig, StructuredPruneConfig, SVDConfig

PLANS = {
    "pruned": jc.Plan.of(PruneConfig(amount=0.5)),
    "svd": jc.Plan.of(SVDConfig(rank=0.5)),
    "structured": jc.Plan.of(StructuredPruneConfig(amount=0.5, keep_first=False)),
    "tucker": jc.Plan.of(jc.TuckerConfig(rank=0.5)),
}


CASES = [(p, f) for p in PLANS for f in ("mlp", "cnn") if not (p == "tucker" and f == "mlp")]  # MLP: no Conv2d


@pytest.mark.parametrize("plan,family", CASES)
def test_compressed_models_export_and_agree(tmp_path, plan, family):
    model, x = make(family)
    small, report = jc.compress(model, PLANS[plan], example_inputs=x, measure=False)
    assert report.compressed_rows
    result = jc.export_onnx(small, x, tmp_path / "m.onnx")
    # float32 kernels of PyTorch and ONNX Runtime sum in different orders: 1e-3 relative, 1e-4 absolute
    assert result.verified and result.max_abs_error < 1e-4 + 1e-3 * float(small(x).abs().max())
    assert result.path.stat().st_size == result.bytes > 0
    assert result.torch_ms > 0 and result.onnxruntime_ms > 0
    assert "outputs agree" in repr(result)
    # the batch dimension is dynamic
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    bigger = torch.cat([x, x, x])
    out = session.run(None, {"input": bigger.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), small(bigger).detach(), rtol=1e-3, atol=1e-4)


def test_a_model_already_running_in_onnxruntime_is_refused_clearly(tmp_path):
    model, x = make("transformer")
    q, _ = jc.compress(model, jc.DynamicQuantConfig(), example_inputs=x, measure=False)
    if not any(type(m).__name__ == "OrtModule" for m in q.modules()):
        pytest.skip("the int8 preset took the torch route on this machine")
    with pytest.raises(jc.CompressError, match="already runs in ONNX Runtime") as info:
        jc.export_onnx(q, x, tmp_path / "q.onnx")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "q.onnx").exists()


def test_bad_example_inputs():
    model, _ = make("mlp")
    with pytest.raises(jc.CompressError, match="a tensor, a tuple of tensors or a dict"):
        jc.export_onnx(model, [1, 2], "never.onnx")
