"""The ``runtime`` step (issue 21): blocks of a (compressed) model served on OpenVINO or ONNX Runtime, the
route measured on the example inputs, recorded in the plan and replayed bit-identically without measuring;
a model without OpenVINO falls back with a note; Hugging Face models keep their call interface."""

from __future__ import annotations

import pytest
import torch
from models import make

import jupyter_compress as jc
from jupyter_compress.methods import runtime
from jupyter_compress.methods.quantize.ort import OrtModule, ort_available
from jupyter_compress.methods.quantize.ov import OvModule, ov_available

pytestmark = pytest.mark.skipif(not ort_available(), reason="onnxruntime not installed")
RUNTIMES = (OvModule, OrtModule)


def _served(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, RUNTIMES)]


def test_auto_records_its_choice_and_a_replay_builds_it_bit_identically_without_measuring():
    model, x = make("cnn")
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    original = jc.state_dict_hash(model)
    served, report = jc.compress(model, jc.RuntimeConfig(), example_inputs=x)
    assert jc.state_dict_hash(model) == original  # the live model untouched
    step = report.plan["steps"][0]
    assert step["backend"] in ("openvino", "openvino-bf16", "onnxruntime", "torch")  # recorded, not 'auto'
    measured = next(n for n in report.notes if n.startswith("Runtime measured per block"))
    assert "at batch 16" in measured and "at batch 1 " in measured  # batch-1 serving timed too, and shown
    with torch.no_grad():
        ref, out = model(x), served(x)
    # float routes: f32 within 1e-4 relative; a bf16 route only when it kept cosine >= 0.999 (its budget)
    cos = torch.nn.functional.cosine_similarity(ref, out, dim=1).mean().item()
    assert cos >= 0.999, cos
    kept = {k for k in step["keep"].split(",") if k}
    assert set(_served(served)).isdisjoint(kept)
    again, rep2 = jc.compress(model, report.plan, example_inputs=x)
    assert not any(n.startswith("Runtime measured") for n in rep2.notes)
    assert _served(again) == _served(served)
    with torch.no_grad():
        assert torch.equal(again(x), out)


@pytest.mark.skipif(not ov_available(), reason="openvino not installed")
def test_forced_openvino_serves_the_whole_model_in_f32_close_to_pytorch():
    model, x = make("cnn")
    served, report = jc.compress(model, jc.RuntimeConfig(backend="openvino"), example_inputs=x)
    assert isinstance(served, OvModule)  # compress() on a copy: one graph, no PyTorch between blocks
    assert report.plan["steps"][0]["unit"] == "model"
    with torch.no_grad():
        # f32 kernels in another order of summation: 1e-4 relative, 1e-5 absolute
        torch.testing.assert_close(served(x), model(x), rtol=1e-4, atol=1e-5)
    assert [r.name for r in report.compressed_rows] == ["(model)"]
    assert report.compressed_rows[0].new_type.startswith("OvModule")


@pytest.mark.skipif(not ov_available(), reason="openvino not installed")
def test_scope_blocks_serves_each_block_and_keeps_the_model_object():
    model, x = make("cnn")
    served, report = jc.compress(model, jc.RuntimeConfig(backend="openvino", unit="blocks"), example_inputs=x)
    assert type(served) is type(model)
    blocks = _served(served)
    assert {"stem", "block", "fc", "head"} <= set(blocks)
    assert all(isinstance(served.get_submodule(b), OvModule) for b in blocks)
    with torch.no_grad():
        torch.testing.assert_close(served(x), model(x), rtol=1e-4, atol=1e-5)


def test_in_place_then_revert_is_bit_exact():
    model, x = make("mlp")
    original = jc.state_dict_hash(model)
    report = jc.compress_(model, jc.RuntimeConfig(backend="onnxruntime"), example_inputs=x)
    assert _served(model) and "" not in _served(model)  # in place: the blocks, never the object itself
    assert any("In place, your model object is kept" in n for n in report.notes)
    jc.revert_(model)
    assert jc.state_dict_hash(model) == original and not _served(model)


def test_without_openvino_auto_falls_back_and_says_so(monkeypatch):
    monkeypatch.setattr(runtime, "ov_available", lambda: False)
    model, x = make("cnn")
    served, report = jc.compress(model, jc.RuntimeConfig(), example_inputs=x)
    assert report.plan["steps"][0]["backend"] in ("onnxruntime", "torch")
    assert any("OpenVINO is not installed" in n and "jupyter-compress[deploy]" in n for n in report.notes)
    assert not any(isinstance(m, OvModule) for m in served.modules())


def test_a_forced_backend_the_machine_lacks_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(runtime, "ov_available", lambda: False)
    model, x = make("mlp")
    before = jc.state_dict_hash(model)
    with pytest.raises(jc.CompressError, match=r"needs openvino.*deploy"):
        jc.compress(model, jc.RuntimeConfig(backend="openvino"), example_inputs=x)
    assert jc.state_dict_hash(model) == before


def test_pruned_then_served_keeps_the_pruned_output():
    model, x = make("cnn")
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    plan = jc.Plan.of(jc.StructuredPruneConfig(amount=0.5), jc.RuntimeConfig(backend="onnxruntime"))
    served, report = jc.compress(model, plan, example_inputs=x)
    pruned, _ = jc.compress(model, jc.StructuredPruneConfig(amount=0.5), example_inputs=x)
    assert _served(served)
    with torch.no_grad():
        torch.testing.assert_close(served(x), pruned(x), rtol=1e-4, atol=1e-5)  # f32 in ONNX Runtime
    assert [s["method"] for s in report.plan["steps"]] == ["prune.structured", "runtime"]


def test_a_hugging_face_classifier_keeps_its_call_and_output_type():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    inputs = {"input_ids": torch.randint(1, 100, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long)}
    inputs["attention_mask"][1, 6:] = 0
    served, _ = jc.compress(model, jc.RuntimeConfig(backend="onnxruntime"), example_inputs=inputs)
    assert isinstance(served, OrtModule)  # the whole classifier in one graph
    with torch.no_grad():
        out, ref = served(**inputs), model(**inputs)
    assert type(out) is type(ref)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    assert served.config.num_labels == 3  # code reading the model's config still works


@pytest.mark.skipif(not ov_available(), reason="openvino not installed")
def test_save_and_load_round_trip_an_openvino_served_model(tmp_path):
    model, x = make("cnn")
    served, report = jc.compress(model, jc.RuntimeConfig(backend="openvino"), example_inputs=x)
    path = jc.save(served, report, tmp_path / "served.safetensors", example_inputs=x)
    loaded = jc.load(lambda: make("cnn")[0], path, example_inputs=x)
    assert _served(loaded) == _served(served)
    with torch.no_grad():
        assert torch.equal(loaded(x), served(x))  # the saved IR itself is loaded, so the same kernels run


@pytest.mark.skipif(not ov_available(), reason="openvino not installed")
def test_an_openvino_graph_serializes_to_the_same_bytes_however_many_graphs_the_process_built_before():
    # OpenVINO names new nodes from a process-wide counter; the IR we store names them by graph position, so a
    # replay after other work in the same process (a notebook) equals one in a fresh process (the CLI)
    def build():
        model, x = make("cnn")
        served, _ = jc.compress(model, jc.RuntimeConfig(backend="openvino"), example_inputs=x)
        return {k: v.clone() for k, v in served.state_dict().items()}

    first, second = build(), build()
    assert first.keys() == second.keys() and "ov_xml" in first
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_regions_that_took_different_routes_are_each_pinned_and_replayed_without_measuring(monkeypatch):
    from jupyter_compress.methods.quantize import dynamic

    model, x = make("transformer")
    real_pick, answers = dynamic.pick, iter(["onnxruntime", "torch", "onnxruntime", "torch"])

    def alternate(routes, min_cosine):  # stand-in for timings that favour a different route per region
        want = next(answers)
        return next(r for r in routes if r.backend == want and (r.module is not None or want == "torch")), True

    monkeypatch.setattr(dynamic, "pick", alternate)
    small, report = jc.compress(model, jc.DynamicQuantConfig(), example_inputs=x, data=[x])
    step = report.plan["steps"][0]
    assert step["backend"] == "auto" and sorted(step["routes"].values()) == ["onnxruntime", "torch"], step
    monkeypatch.setattr(dynamic, "pick", lambda *a: pytest.fail("a pinned replay measured routes"))
    plan = jc.Plan.from_yaml(jc.Plan.from_dict(report.plan).to_yaml())
    again, _ = jc.compress(make("transformer")[0], plan, example_inputs=x, data=[x])
    assert jc.state_dict_hash(again) == jc.state_dict_hash(small)
    monkeypatch.setattr(dynamic, "pick", real_pick)
    with pytest.raises(jc.CompressError, match="routes"):  # a pinned route the config refuses: one clear line
        jc.DynamicQuantConfig(routes={"attn": "tpu"})
