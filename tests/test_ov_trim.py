"""Padding trimmed on the OpenVINO route (issue 21): the rows of a right-padded batch run in groups of similar
real length, each group cut to its longest row, and the outputs are put back in place. Checked on Hugging Face
BERT models built from their configs (random weights): the grouping is the cheapest under its cost model and
covers every row once; real positions keep the model's values and padded ones come back as zeros; calls that
cannot be trimmed (left padding, one unpadded row, a mask that is not 0/1) run as given; ``trim_padding='auto'``
trims only where the model's output was seen not to read the padded positions, records what it saw in the
plan, and a replay or a load is bit-identical."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import zoo
from torch import nn

import jupyter_compress as jc
from jupyter_compress.methods.quantize.ov import OvModule, export_openvino, nncf_available, ov_available
from jupyter_compress.methods.quantize.padding import (
    CALL_TOKENS,
    QUADRATIC,
    length_groups,
    padding_reaches_output,
    row_groups,
)

transformers = pytest.importorskip("transformers")
needs_ov = pytest.mark.skipif(not ov_available(), reason="openvino not installed")


def _config(**extra):
    return transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128, pad_token_id=0, **extra)


_batch = zoo.padded_ids  # right-padded token ids of given lengths (vocabulary 300)


class Hidden(nn.Module):
    """A model whose output is every position's hidden state, padded ones included."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bert = transformers.BertModel(_config()).eval()

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


class MeanPooled(Hidden):
    """A sentence encoder as sentence-transformers builds one: BERT, then the mask-weighted mean of its tokens."""

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = super().forward(input_ids, attention_mask, token_type_ids)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _cost(groups, lengths) -> float:
    return sum(len(rows) * n * (1 + n / QUADRATIC) + CALL_TOKENS for rows, n in groups)


def test_the_groups_cover_every_row_once_and_are_the_cheapest_under_the_cost_model():
    rng = np.random.default_rng(0)
    for _ in range(30):
        lengths = rng.integers(1, 120, size=int(rng.integers(1, 9)))
        groups = length_groups(lengths)
        rows = np.concatenate([r for r, _ in groups])
        assert sorted(rows.tolist()) == list(range(len(lengths)))
        assert all(n == lengths[r].max() for r, n in groups)
        # brute force: every split of the rows sorted by length into consecutive runs
        order = np.argsort(lengths, kind="stable")
        best = min(_cost([(order[a:b], int(lengths[order[b - 1]])) for a, b in zip((0, *cuts), (*cuts, len(order)))],
                         lengths)
                   for k in range(len(order))
                   for cuts in itertools.combinations(range(1, len(order)), k))
        assert _cost(groups, lengths) == pytest.approx(best, rel=1e-12)


def test_calls_that_cannot_be_trimmed_run_as_given():
    def feed(enc):
        return [enc[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")]

    ragged = feed(_batch([30, 4, 5, 29]))
    assert row_groups(ragged, 1) is not None
    left = [np.ascontiguousarray(a[:, ::-1]) for a in ragged]  # left padding: positions would shift
    assert row_groups(left, 1) is None
    weighted = [a.copy() for a in ragged]
    weighted[1][weighted[1] == 1] = 2  # not a 0/1 mask
    assert row_groups(weighted, 1) is None
    assert row_groups(feed(_batch([12])), 1) is None  # one unpadded row: nothing to cut
    assert row_groups(feed(_batch([12, 12, 12])), 1) is None  # no padding
    padded = row_groups(feed(_batch([5], width=32)), 1)  # one row padded to max_length: cut to its length
    assert [(r.tolist(), n) for r, n in padded] == [([0], 5)]


def _export(model: nn.Module, enc: dict) -> OvModule:
    with torch.no_grad():
        output = model(**enc)
    return export_openvino(model, (), enc, output, label=type(model).__name__, trim=True)


@needs_ov
def test_real_positions_keep_the_models_values_and_padded_ones_are_zeros():
    model = transformers.BertModel(_config()).eval()
    served = _export(model, _batch([9, 3, 7]))
    assert served.trim, served.shapes_note
    enc = _batch([31, 2, 3, 30, 17, 5, 4, 29], seed=3)
    real = enc["attention_mask"].bool()
    before = served.trimmed_calls
    with torch.no_grad():
        out, ref = served(**enc), model(**enc)
    assert served.trimmed_calls == before + 1
    assert type(out) is type(ref) and out.last_hidden_state.shape == ref.last_hidden_state.shape
    # float32 graph against PyTorch float32: summation order differs, values are O(1) after LayerNorm, so
    # 1e-4 absolute is ~100x float32's rounding at this depth and far below a misplaced row or position
    torch.testing.assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], rtol=0, atol=1e-4)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, rtol=0, atol=1e-4)
    assert torch.count_nonzero(out.last_hidden_state[~real]) == 0
    served.trim = False  # the same graph on the whole padded batch: padded positions computed
    with torch.no_grad():
        whole = served(**enc)
    assert torch.count_nonzero(whole.last_hidden_state[~real]) > 0


@needs_ov
def test_trimming_with_sequence_buckets_keeps_shapes_and_real_positions():
    model = transformers.BertModel(_config()).eval()
    enc = _batch([9, 3, 7])
    with torch.no_grad():
        served = export_openvino(model, (), enc, model(**enc), label="BertModel", seq_bucket=8, trim=True)
    assert served.trim and served.seq_bucket == 8
    for lengths in ([12, 12, 3], [30, 2, 29, 5, 4], [6]):  # a group at the full length, several, one row
        probe = _batch(lengths, seed=len(lengths), width=max(lengths) + 1)
        real = probe["attention_mask"].bool()
        with torch.no_grad():
            out, ref = served(**probe).last_hidden_state, model(**probe).last_hidden_state
        assert out.shape == ref.shape
        # float32 graph against PyTorch float32, as above
        torch.testing.assert_close(out[real], ref[real], rtol=0, atol=1e-4)
        assert torch.count_nonzero(out[~real]) == 0


class ReadsPadding(nn.Module):
    """A custom layer that ignores the mask: every position reads the mean of all positions, padding too."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.proj = nn.Embedding(300, 16), nn.Linear(16, 16)

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids)
        return self.proj(x + x.mean(1, keepdim=True)) * attention_mask.unsqueeze(-1)


@needs_ov
def test_a_block_whose_real_positions_read_the_padding_is_not_trimmed():
    served = _export(ReadsPadding().eval(), {k: v for k, v in _batch([9, 3, 7]).items() if k != "token_type_ids"})
    assert not served.trim and "real positions differ" in served.shapes_note


@needs_ov
def test_the_check_sees_whether_the_output_reads_padded_positions():
    enc = _batch([9, 3, 7])
    batches = [_batch([12, 3, 8, 2], seed=s) for s in range(2)]
    pooled, hidden = MeanPooled(), Hidden()
    for model, reads in ((pooled, False), (hidden, True)):
        served = _export(model.bert, enc)
        before = jc.state_dict_hash(model)
        assert padding_reaches_output(model, "bert", served, batches) is reads
        assert jc.state_dict_hash(model) == before and isinstance(model.bert, transformers.BertModel)
        assert served.fill == 0.0
    served = _export(pooled.bert, enc)
    assert padding_reaches_output(pooled, "bert", served, [_batch([6, 6])]) is None  # no padding: not seen


@needs_ov
@pytest.mark.skipif(not nncf_available(), reason="nncf not installed")
def test_the_int8_preset_trims_where_the_output_does_not_read_padding_and_replays_bit_identically(tmp_path):
    data = [_batch([9, 6, 12, 4, 11, 2], seed=s) for s in range(3)]
    example = _batch([10, 3, 8])
    model = MeanPooled()
    original = jc.state_dict_hash(model)
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="openvino"), example_inputs=example, data=data)
    assert jc.state_dict_hash(model) == original
    assert isinstance(small.bert, OvModule) and small.bert.trim
    assert report.plan["steps"][0]["trim_padding"] == "on"  # what was seen, so a replay does not look again
    assert any("padding trimmed" in n for n in report.notes)
    probe = _batch([14, 3, 5, 13, 2], seed=9)
    with torch.no_grad():
        got, ref = small(**probe), model(**probe)
        # int8 against float on a random-weight BERT: per-sentence cosine, as the route's fidelity budget reads it
        assert torch.nn.functional.cosine_similarity(got, ref).min() > 0.99
        replayed, _ = jc.compress(model, report.plan, example_inputs=example, data=data)
        path = jc.save(small, report, tmp_path / "pooled.safetensors", example_inputs=example)
        loaded = jc.load(MeanPooled, path, example_inputs=example)
        assert replayed.bert.trim and loaded.bert.trim
        assert torch.equal(replayed(**probe), got) and torch.equal(loaded(**probe), got)
        untrimmed, plan_off = jc.compress(model, jc.DynamicQuantConfig(backend="openvino", trim_padding="off"),
                                          example_inputs=example, data=data)
        assert not untrimmed.bert.trim and plan_off.plan["steps"][0]["trim_padding"] == "off"
        # the same int8 graph with and without trimming: only the kernels' shapes differ
        assert torch.nn.functional.cosine_similarity(untrimmed(**probe), got).min() > 0.999


@needs_ov
@pytest.mark.skipif(not nncf_available(), reason="nncf not installed")
def test_a_model_that_returns_padded_positions_is_not_trimmed_unless_asked():
    data = [_batch([9, 6, 12, 4], seed=s) for s in range(2)]
    example = _batch([10, 3])
    model = Hidden()
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="openvino"), example_inputs=example, data=data)
    assert isinstance(small.bert, OvModule) and not small.bert.trim
    assert report.plan["steps"][0]["trim_padding"] == "off"
    assert any("reads the padded positions" in n for n in report.notes)
    forced, report = jc.compress(model, jc.DynamicQuantConfig(backend="openvino", trim_padding="on"),
                                 example_inputs=example, data=data)
    assert forced.bert.trim
    probe = _batch([11, 4], seed=2)
    with torch.no_grad():
        assert torch.count_nonzero(forced(**probe)[~probe["attention_mask"].bool()]) == 0


@needs_ov
def test_runtime_trims_a_classifiers_bert_and_keeps_its_logits():
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(_config(num_labels=3)).eval()
    data = [_batch([9, 6, 12, 4], seed=s) for s in range(2)]
    example = _batch([10, 3, 7])
    served, report = jc.compress(model, jc.RuntimeConfig(backend="openvino", unit="blocks"), example_inputs=example,
                                 data=data)
    assert isinstance(served.bert, OvModule) and served.bert.trim
    assert report.plan["steps"][0]["trim_padding"] == "on"
    probe = _batch([13, 2, 6], seed=4)
    with torch.no_grad():
        # float32 graph against PyTorch float32, as above: the logits read the first token only
        torch.testing.assert_close(served(**probe).logits, model(**probe).logits, rtol=0, atol=1e-4)
        # the classifier calls its BERT with the ids by position; a user may give them by keyword
        by_position = served.bert(probe["input_ids"], attention_mask=probe["attention_mask"],
                                  token_type_ids=probe["token_type_ids"]).last_hidden_state
        assert torch.equal(served.bert(**probe).last_hidden_state, by_position)
        with pytest.raises(TypeError, match=r"argument 0 \(input_ids\)"):
            served.bert(attention_mask=probe["attention_mask"])


@pytest.mark.parametrize("config", ["DynamicQuantConfig", "RuntimeConfig"])
def test_a_bad_trim_padding_is_a_one_line_error_naming_it(config):
    with pytest.raises(jc.InvalidConfigError, match="trim_padding") as err:
        getattr(jc, config)(trim_padding="sometimes")
    assert "\n" not in str(err.value)
