"""quantize.embedding: int8 / int4 embedding tables on models we did not write (a Hugging Face BERT and a
GPT-2 with tied input / output embeddings, built from their config classes with random weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.methods.quantize.embedding import QuantizedEmbedding

transformers = pytest.importorskip("transformers")


def _bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, pad_token_id=0)
    model = transformers.BertModel(config).eval()
    enc = {"input_ids": torch.randint(1, 500, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    enc["input_ids"][:, -3:] = 0
    enc["attention_mask"][:, -3:] = 0
    return model, enc


@pytest.mark.parametrize("bits,min_cosine,shrink", [(8, 0.9995, 3.5), (4, 0.97, 6.0)])
def test_bert_tables_shrink_and_the_output_stays_close(bits, min_cosine, shrink):
    model, enc = _bert()
    original = jc.state_dict_hash(model)
    small, report = jc.compress(model, jc.EmbeddingQuantConfig(bits=bits), example_inputs=enc)
    assert jc.state_dict_hash(model) == original
    names = {r.name for r in report.compressed_rows}
    assert names == {"embeddings.word_embeddings", "embeddings.position_embeddings",
                     "embeddings.token_type_embeddings"}
    word = next(r for r in report.rows if r.name == "embeddings.word_embeddings")
    # int8: 1 byte per weight + one fp32 scale per 64 (4.0x minus the scales); int4: half a byte (7.1x)
    assert word.bytes_before / word.bytes_after >= shrink
    with torch.no_grad():
        ref, out = model(**enc).last_hidden_state, small(**enc).last_hidden_state
    # random-weight BERT, per token: int8's rounding error (~0.6% of each row) barely moves the output;
    # int4 (~11% per row) keeps cosine above 0.97 through two layers with LayerNorm
    cos = nn.functional.cosine_similarity(ref, out, dim=-1).min().item()
    assert cos >= min_cosine, cos
    table = small.embeddings.word_embeddings
    assert isinstance(table, QuantizedEmbedding)
    assert table.weight.shape == (500, 64)  # code reading .weight still sees the table's shape
    torch.testing.assert_close(table.weight[7] * 1, table.dequantized_weight()[7])
    assert torch.count_nonzero(table(torch.tensor([0]))) == 0  # the padding row stays zero


def test_a_lookup_equals_the_dequantized_table_row_by_row():
    torch.manual_seed(1)
    emb = nn.Embedding(37, 32)
    for bits in (8, 4):
        q = QuantizedEmbedding(emb, bits, 16)
        idx = torch.randint(0, 37, (3, 5))
        # same float operations on the gathered rows as on the whole table: exactly equal
        assert torch.equal(q(idx), q.dequantized_weight()[idx])


def test_a_tied_gpt2_table_is_left_alone_with_a_note_and_nothing_grows():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 300, (2, 10))
    small, report = jc.compress(model, jc.EmbeddingQuantConfig(), example_inputs=ids)
    assert [r.name for r in report.compressed_rows] == ["transformer.wpe"]
    assert any("tied" in n and "transformer.wte" in n for n in report.notes)
    assert small.lm_head.weight is small.transformer.wte.weight  # still tied
    assert jc.model_bytes(small) < jc.model_bytes(model)


def test_bad_settings_are_one_line_errors_and_unfit_tables_are_skipped_with_the_reason():
    with pytest.raises(jc.InvalidConfigError, match="bits"):
        jc.EmbeddingQuantConfig(bits=3)
    model = nn.ModuleList([nn.Embedding(20, 30), nn.Embedding(20, 8, max_norm=1.0)])  # no forward: no inputs
    small, report = jc.compress(model, jc.EmbeddingQuantConfig(group_size=16))
    reasons = {r.name: r.skipped for r in report.rows}
    assert "groups of 16" in reasons["0"] and "max_norm" in reasons["1"]


def test_save_and_load_round_trip(tmp_path):
    model, enc = _bert()
    small, report = jc.compress(model, jc.EmbeddingQuantConfig(bits=4), example_inputs=enc)
    jc.save(small, report, tmp_path / "a")
    again = jc.load(_bert()[0], tmp_path / "a")
    assert jc.state_dict_hash(again) == jc.state_dict_hash(small)
