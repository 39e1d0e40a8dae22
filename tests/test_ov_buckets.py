"""OpenVINO sequence buckets (issue 21): a model called with an attention mask is padded up to a multiple of
``seq_bucket`` and each padded length runs on its own graph of fixed sequence length (the CPU plugin runs those
faster than one dynamic-shape graph; the benchmark measures by how much). Checked here on a Hugging Face BERT
built from its config (random weights): outputs cut back to the real length and equal to the model's, the
output a function of the input alone (not of the lengths seen before, nor of the graph cache), the choice
recorded in the plan and replayed bit-identically, and a clear error for a bad value."""

from __future__ import annotations

import copy

import pytest
import torch
import zoo

import jupyter_compress as jc
from jupyter_compress.methods.quantize.ov import OvModule, export_openvino, nncf_available, ov_available

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not ov_available(), reason="openvino not installed")


def _bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, pad_token_id=0)
    return transformers.BertModel(config).eval()


_batch = zoo.padded_ids  # right-padded token ids of given lengths (vocabulary 300)


def _export(model, enc, bucket: int) -> OvModule:
    with torch.no_grad():
        output = model(**enc)
    return export_openvino(model, (), enc, output, label="BertModel", seq_bucket=bucket)


def test_padded_lengths_are_cut_back_and_match_the_model_at_every_real_position():
    model = _bert()
    served = _export(model, _batch([7, 5]), 8)
    assert served.seq_bucket == 8 and "multiple of 8" in served.shapes_note
    for lengths in ([3], [12, 9], [13, 13, 2], [17, 4]):
        enc = _batch(lengths, seed=len(lengths))
        with torch.no_grad():
            ref, out = model(**enc), served(**enc)
        width = max(lengths)
        assert out.last_hidden_state.shape == (len(lengths), width, 64)  # not the padded 8 / 16 / 24
        assert out.pooler_output.shape == (len(lengths), 64)
        real = enc["attention_mask"].bool()
        # float32 graph against PyTorch float32: summation order differs, values are O(1) after LayerNorm,
        # so 1e-4 absolute is ~100x float32's rounding at this depth and far below any real error
        torch.testing.assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], rtol=0, atol=1e-4)
        torch.testing.assert_close(out.pooler_output, ref.pooler_output, rtol=0, atol=1e-4)


def test_the_output_depends_on_the_input_alone_not_on_lengths_seen_before_or_the_cache():
    model = _bert()
    served = _export(model, _batch([6]), 8)
    probe = _batch([11, 7], seed=5)
    fresh = copy.deepcopy(served)  # compiled graphs are not copied: this one starts with none
    with torch.no_grad():
        first = fresh(**probe).last_hidden_state
        served.MAX_GRAPHS = 2  # a small cache, so the probe's graph is dropped and compiled again below
        for n in (3, 20, 30, 40, 11, 50):
            served(**_batch([n], seed=n))
        again = served(**probe).last_hidden_state
    assert torch.equal(first, again)
    assert len(served._graphs) <= 2


def test_a_call_without_an_attention_mask_keeps_one_dynamic_graph_and_says_why():
    model = _bert()
    enc = _batch([5, 5])
    del enc["attention_mask"]
    served = _export(model, enc, 8)
    assert served.seq_bucket == 0 and "attention_mask" in served.shapes_note
    longer = {k: v for k, v in _batch([9, 9]).items() if k != "attention_mask"}
    with torch.no_grad():
        out, ref = served(**longer).last_hidden_state, model(**longer).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)  # as above: float32 against float32


def test_seq_bucket_zero_gives_the_dynamic_graph():
    model = _bert()
    served = _export(model, _batch([7, 5]), 0)
    assert served.seq_bucket == 0 and "seq_bucket=0" in served.shapes_note


def _classifier():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, pad_token_id=0, num_labels=3)
    return transformers.BertForSequenceClassification(config).eval()


@pytest.mark.skipif(not nncf_available(), reason="nncf not installed")
def test_the_int8_preset_records_the_bucket_and_replays_bit_identically(tmp_path):
    # a task model: its BertModel (called with token ids and a 2-D mask) is the region served by OpenVINO
    model = _classifier()
    data = [_batch([9, 6, 12, 4], seed=s) for s in range(3)]
    example = _batch([10, 3])
    original = jc.state_dict_hash(model)
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="openvino", seq_bucket=8), example_inputs=example,
                                 data=data)
    assert jc.state_dict_hash(model) == original
    assert report.plan["steps"][0]["seq_bucket"] == 8
    assert isinstance(small.bert, OvModule) and small.bert.seq_bucket == 8
    assert any("sequence padded to a multiple of 8" in n for n in report.notes)
    probe = _batch([13, 5], seed=9)
    replayed, _ = jc.compress(model, report.plan, example_inputs=example, data=data)
    path = jc.save(small, report, tmp_path / "bert.safetensors", example_inputs=example)
    loaded = jc.load(_classifier, path, example_inputs=example)
    dynamic, again = jc.compress(model, jc.DynamicQuantConfig(backend="openvino"), example_inputs=example, data=data)
    assert again.plan["steps"][0]["seq_bucket"] == 0  # the default: one dynamic-shape graph
    assert isinstance(dynamic.bert, OvModule) and dynamic.bert.seq_bucket == 0
    real = probe["attention_mask"].bool()
    with torch.no_grad():
        # called as the classifier calls it: ids by position, the mask and token types by keyword
        def hidden(m):
            return m.bert(probe["input_ids"], attention_mask=probe["attention_mask"],
                          token_type_ids=probe["token_type_ids"]).last_hidden_state

        cut, whole = hidden(small), hidden(dynamic)
        assert cut.shape == whole.shape == (2, 13, 64)
        # the same int8 graph, padded to 16 and cut back, against it run at 13: only the kernels differ, so
        # every real position keeps cosine > 0.999 (a misplaced cut would compare unrelated positions)
        assert torch.nn.functional.cosine_similarity(cut[real], whole[real]).min() > 0.999
        logits = small(**probe).logits
        assert torch.equal(replayed(**probe).logits, logits)
        assert torch.equal(loaded(**probe).logits, logits)


def test_runtime_serves_a_bare_bert_model_with_buckets_and_replays_it():
    model = _bert()  # the model itself is the graph (unit 'model'): called with ids and a 2-D mask
    example = _batch([10, 3])
    served, report = jc.compress(model, jc.RuntimeConfig(backend="openvino", seq_bucket=8), example_inputs=example)
    assert isinstance(served, OvModule) and served.seq_bucket == 8
    assert report.plan["steps"][0]["seq_bucket"] == 8
    probe = _batch([13, 5], seed=9)
    real = probe["attention_mask"].bool()
    replayed, _ = jc.compress(model, report.plan, example_inputs=example)
    with torch.no_grad():
        out, ref = served(**probe), model(**probe)
        assert out.last_hidden_state.shape == (2, 13, 64)
        # float32 graph against PyTorch float32, as in the first test
        torch.testing.assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], rtol=0, atol=1e-4)
        assert torch.equal(replayed(**probe).last_hidden_state, out.last_hidden_state)


@pytest.mark.parametrize("value", [-1, 513, 2.5, True, "8"])
@pytest.mark.parametrize("config", ["DynamicQuantConfig", "RuntimeConfig"])
def test_a_bad_seq_bucket_is_a_one_line_error_naming_it(value, config):
    with pytest.raises(jc.InvalidConfigError, match="seq_bucket") as err:
        getattr(jc, config)(seq_bucket=value)
    assert "\n" not in str(err.value)


def test_a_whole_model_that_grew_is_named_as_such_in_the_warning():
    # this BERT is tiny: the OpenVINO graph's structure outweighs its weights, and the report says so first,
    # naming the replaced layer; here that layer is the model itself, which has no name of its own
    model = _bert()
    _, report = jc.compress(model, jc.RuntimeConfig(backend="openvino"), example_inputs=_batch([6, 4]))
    warning = report.to_text().splitlines()[1]
    assert warning.startswith("WARNING: LARGER than the original")
    assert "grew: the whole model (BertModel -> BertModel, +" in warning
