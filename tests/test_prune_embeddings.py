"""prune with ``embeddings=True`` (issue 24: a pruned-90% encoder saved small): nn.Embedding tables are pruned
only when asked, on models we did not write (a Hugging Face BERT and a GPT-2 whose token table is tied to its LM
head, built from their config classes with random weights), and the compact artifact holds the zeros."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.errors import CompressError

transformers = pytest.importorskip("transformers")

TABLES = {"embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"}


def _bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, pad_token_id=0)
    model = transformers.BertModel(config).eval()
    enc = {"input_ids": torch.randint(1, 2000, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    return model, enc


def _zero_fraction(t: torch.Tensor) -> float:
    return 1.0 - int(torch.count_nonzero(t)) / t.numel()


def test_tables_are_left_alone_by_default_and_the_note_says_so():
    model, enc = _bert()
    small, report = jc.compress(model, jc.PruneConfig(amount=0.9), example_inputs=enc)
    for name in TABLES:
        assert torch.equal(small.get_submodule(name).weight, model.get_submodule(name).weight)
    assert not TABLES & {r.name for r in report.compressed_rows}
    assert any("Embedding" in note for note in report.notes)  # the left-alone note names what was not touched


def test_embeddings_true_prunes_every_table_to_the_amount_and_leaves_the_original_alone():
    model, enc = _bert()
    original = jc.state_dict_hash(model)
    small, report = jc.compress(model, jc.PruneConfig(amount=0.9, embeddings=True), example_inputs=enc)
    assert jc.state_dict_hash(model) == original
    assert TABLES <= {r.name for r in report.compressed_rows}
    for name in TABLES:
        weight = small.get_submodule(name).weight
        # round(0.9 * numel) zeros exactly, plus any that were zero before (none in random init)
        assert _zero_fraction(weight) == pytest.approx(0.9, abs=1.0 / weight.numel() + 1e-9)
        assert isinstance(small.get_submodule(name), nn.Embedding)
    assert not any("left alone" in note and "Embedding" in note for note in report.notes)
    with torch.no_grad():
        out = small(**enc).last_hidden_state
    assert torch.isfinite(out).all()


def test_a_table_tied_to_the_lm_head_is_pruned_once_and_stays_tied():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=600, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 600, (2, 10))
    small, _ = jc.compress(model, jc.PruneConfig(amount=0.8, embeddings=True), example_inputs=ids)
    assert small.lm_head.weight is small.transformer.wte.weight
    assert _zero_fraction(small.transformer.wte.weight) == pytest.approx(0.8, abs=1e-4)
    assert _zero_fraction(model.transformer.wte.weight) == 0.0  # the user's model is untouched
    with torch.no_grad():
        assert torch.isfinite(small(ids).logits).all()


def test_compact_artifact_of_a_90pct_pruned_encoder_is_over_5x_smaller_and_loads_bit_identical(tmp_path):
    model, enc = _bert()
    small, report = jc.compress(model, jc.PruneConfig(amount=0.9, embeddings=True), example_inputs=enc)
    dense = jc.save(small, report, tmp_path / "dense.safetensors")
    compact = jc.save(small, report, tmp_path / "compact.safetensors", compact=True)
    ratio = dense.stat().st_size / compact.stat().st_size
    # 90% zeros: a bitmap (1 bit per entry) plus 10% of the fp32 values is ~0.53 bytes per entry against 4, 7.6x
    # before the codec; LayerNorms and biases stay dense (a few % of this model), so >= 5x holds with margin
    assert ratio >= 5.0, ratio
    loaded = jc.load(lambda: transformers.BertModel(model.config).eval(), compact)
    assert jc.state_dict_hash(loaded) == jc.state_dict_hash(small)
    with torch.no_grad():
        assert torch.equal(loaded(**enc).last_hidden_state, small(**enc).last_hidden_state)


def test_the_plan_round_trips_and_a_yaml_body_can_ask_for_it():
    plan = jc.Plan.from_yaml("steps:\n  - {method: prune, amount: 0.9, embeddings: true}\n")
    assert plan.steps[0].config == jc.PruneConfig(amount=0.9, embeddings=True)
    assert jc.Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_a_non_boolean_is_a_one_line_error_naming_it(bad):
    with pytest.raises(CompressError) as info:
        jc.PruneConfig(amount=0.5, embeddings=bad)
    message = str(info.value)
    assert "embeddings" in message and "True or False" in message and "\n" not in message
