"""Dynamic int8 LSTM / GRU: torch's quantized recurrent kernels behind a module whose state is tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress.methods.quantize.recurrent import DynamicInt8Recurrent


class Tagger(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.rnn = getattr(nn, kind)(16, 32, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(64, 5)

    def forward(self, tokens):
        return self.head(self.rnn(self.embed(tokens))[0])


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_layers_are_quantized_accurately_and_revert_exactly(kind):
    torch.manual_seed(0)
    model = Tagger(kind).eval()
    x = torch.randint(0, 40, (4, 9))
    before = jc.state_dict_hash(model)
    with torch.no_grad():
        ref = model(x)
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="torch"), example_inputs=x, measure=False)
    assert isinstance(small.rnn, DynamicInt8Recurrent) and jc.state_dict_hash(model) == before
    row = next(r for r in report.rows if r.name == "rnn")
    # int8 per-tensor weights: 8 bits give ~6 dB a bit; 30 dB is a loose floor for random weights
    assert row.detail["sqnr_db"] > 30 and row.error < 0.05
    assert row.bytes_after < row.bytes_before / 3  # int8 weights (+ float biases)
    with torch.no_grad():
        out = small(x)
    assert out.shape == ref.shape and jc.core.metrics.relative_error(ref, out) < 0.05
    # the runtime module is rebuilt bit-exactly from the saved tensors
    again = DynamicInt8Recurrent(small.rnn.kind, small.rnn.args, small.rnn.quantized_weights(),
                                 {n: getattr(small.rnn, n) for n in small.rnn.bias_names})
    emb = model.embed(x)
    assert torch.equal(again(emb)[0], small.rnn(emb)[0])
    work = Tagger(kind).eval()
    work.load_state_dict(model.state_dict())
    jc.compress_(work, jc.DynamicQuantConfig(backend="torch"), example_inputs=x)
    jc.revert_(work)
    assert jc.state_dict_hash(work) == before


def test_quantized_recurrent_model_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = Tagger("LSTM").eval()
    x = torch.randint(0, 40, (2, 7))
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="torch"), example_inputs=x, measure=False)
    path = jc.save(small, report, tmp_path / "q.safetensors", example_inputs=x)
    loaded = jc.load(lambda: Tagger("LSTM"), path)
    assert torch.equal(loaded(x), small(x))
