"""Defaults a new user meets first: the output layer kept by the decompositions, distillation trained to
convergence, quantized weights counted as parameters, a CLI output folder loads, --emit-config in a script."""

from __future__ import annotations

import pytest
import torch
from models import make
from torch import nn

import jupyter_compress as jc
from jupyter_compress.examples.digits import DigitsCNN, digits_data, train_digits_cnn
from jupyter_compress.methods._head import output_layer

# -- 6a: the output layer (classifier head) is kept by default ----------------------------------------------


def test_svd_keeps_a_classifier_head_and_says_how_to_include_it():
    model, _ = make("mlp")  # fc1 32->64, fc2 64->48, head 48->10
    small, report = jc.compress(model, jc.SVDConfig())
    head = next(r for r in report.rows if r.name == "head")
    assert head.skipped and "output layer" in head.skipped and "keep_head=False" in head.skipped
    assert isinstance(small.head, nn.Linear) and torch.equal(small.head.weight, model.head.weight)
    assert {r.name for r in report.compressed_rows} == {"fc1", "fc2"}
    assert any("keep_head=False" in n for n in report.notes)
    _, all_layers = jc.compress(model, jc.SVDConfig(keep_head=False))
    assert "head" in {r.name for r in all_layers.compressed_rows}


def test_the_digits_head_is_kept_even_as_the_only_linear():
    # a 512 -> 10 head is tiny (rank <= 10): factoring it cost the quickstart 0.99 -> 0.70 accuracy
    model, X_test, y_test = train_digits_cnn(epochs=5)
    small, report = jc.compress(model, jc.SVDConfig())
    assert not report.compressed_rows and report.rows[0].skipped.startswith("output layer")
    assert jc.accuracy(small, X_test, y_test) == jc.accuracy(model, X_test, y_test)
    # named exactly (as per-layer sensitivity and the budget search do, or --layers head), it is factored
    _, named = jc.compress(model, jc.Plan.of(jc.Step(jc.SVDConfig(), jc.Selector(layers=("head",)))))
    assert [r.name for r in named.compressed_rows] == ["head"]


def test_a_moderately_narrow_only_layer_is_still_factored():
    model = nn.Sequential(nn.Linear(64, 32))  # the method's only layer, not tiny: compressed as asked
    _, report = jc.compress(model, jc.SVDConfig(rank=0.3))
    assert [r.name for r in report.compressed_rows] == ["0"]
    wide = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 200))  # a widening last layer (vocabulary)
    _, report = jc.compress(wide, jc.SVDConfig(rank=0.3))
    assert "2" in {r.name for r in report.compressed_rows}


def test_conv_heads_are_kept_by_tucker_and_cp_and_linear_heads_by_tt():
    torch.manual_seed(0)
    fcn = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(64, 5, 1))  # a fully convolutional classifier: its head is a 1x1 conv
    assert output_layer(fcn) == "4"
    for config in (jc.TuckerConfig(rank=0.5), jc.CPConfig(rank=0.5, n_iter=5)):
        _, report = jc.compress(fcn, config)
        assert next(r for r in report.rows if r.name == "4").skipped.startswith("output layer")
        assert report.compressed_rows
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8))
    _, report = jc.compress(mlp, jc.TTConfig(rank=0.5))
    assert next(r for r in report.rows if r.name == "2").skipped.startswith("output layer")
    assert [r.name for r in report.compressed_rows] == ["0"]


def test_keep_head_round_trips_in_plans():
    plan = jc.Plan.of(jc.SVDConfig(keep_head=False), jc.TTConfig(keep_head=False))
    assert jc.Plan.from_yaml(plan.to_yaml()) == plan


# -- 6c: quantized weights are parameters ------------------------------------------------------------------


@pytest.mark.parametrize("config", [jc.DynamicQuantConfig(backend="torch"), jc.WeightOnlyConfig(bits=8),
                                    jc.WeightOnlyConfig(bits=4), jc.StaticQuantConfig()],
                         ids=["int8-dynamic", "int8-weight", "int4-weight", "int8-static"])
def test_int8_and_int4_weights_count_as_parameters(config):
    model, x = make("mlp")
    small, report = jc.compress(model, config, example_inputs=x, data=x)
    assert jc.count_params(small) == jc.count_params(model) == report.model_params_after
    assert report.model_params_before == report.model_params_after
    assert all(r.params_after == r.params_before for r in report.rows)
    # quantization may round tiny weights to zero, never makes a zero non-zero
    assert 0 < report.model_nonzeros_after <= report.model_nonzeros_before
    assert report.model_bytes_after < report.model_bytes_before  # the bytes row shows the saving


def test_int8_recurrent_and_onnxruntime_regions_count_their_weights():
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(16, 32, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0]

    model = Tagger()
    small, report = jc.compress(model, jc.DynamicQuantConfig(), example_inputs=torch.randn(2, 5, 16))
    assert report.model_params_after == report.model_params_before == jc.count_params(small)
    pytest.importorskip("onnxruntime")
    from jupyter_compress.methods.quantize.ort import OrtModule

    model, x = make("transformer")
    small, report = jc.compress(model, jc.DynamicQuantConfig(backend="onnxruntime"), example_inputs=x)
    assert any(isinstance(m, OrtModule) for m in small.modules())
    assert report.model_params_after == report.model_params_before == jc.count_params(small)
    assert report.totals["params_after"] == report.totals["params_before"]


# -- 6b: distillation trains to convergence by default -----------------------------------------------------


def _label_baseline(student: nn.Module, X, y, epochs: int, lr: float) -> nn.Module:
    """The same student trained on labels alone: AdamW (distill's optimizer), same lr, batch size and epochs."""
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    for _ in range(epochs):
        student.train()
        for batch in torch.randperm(len(X), generator=gen).split(64):
            loss = nn.functional.cross_entropy(student(X[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return student.eval()


def _student() -> nn.Module:
    torch.manual_seed(1)
    return DigitsCNN(width=4)  # ~1/10 of the teacher's parameters


def test_distill_defaults_reach_the_accuracy_of_training_on_labels():
    teacher, _, _ = train_digits_cnn()
    X_train, X_test, y_train, y_test = digits_data(0)
    student, report = jc.distill(_student(), teacher, (X_train, y_train), progress=False)
    epochs = len(report.history)
    assert 3 < epochs <= jc.DistillConfig.epochs
    assert any(n.startswith("Early stopping") for n in report.notes) or any("still falling" in n for n in report.notes)
    baseline = _label_baseline(_student(), X_train, y_train, epochs, jc.DistillConfig.lr)
    # within 1 point (4.5 of the 450 test images): one seed, one split, so a few images either way is noise;
    # the old defaults (3 epochs, lr 1e-3) were 17 points short
    assert jc.accuracy(student, X_test, y_test) >= jc.accuracy(baseline, X_test, y_test) - 0.01


def test_distill_warns_when_the_cap_is_hit_with_the_loss_still_falling():
    teacher, _, _ = train_digits_cnn(epochs=3)
    X_train, _, y_train, _ = digits_data(0)
    _, report = jc.distill(_student(), teacher, (X_train, y_train), epochs=2, lr=1e-3, progress=False)
    assert any(n.startswith("WARNING: the training loss was still falling") for n in report.notes)
    _, report = jc.distill(_student(), teacher, (X_train, y_train), epochs=40, lr=1e-9, patience=2, progress=False)
    assert len(report.history) == 3 and any("stopped early at epoch 3" in n for n in report.notes)
    assert not any("still falling" in n for n in report.notes)


def test_the_distill_plan_step_uses_the_same_stopping_rule():
    config = jc.DistillConfig()
    assert (config.epochs, config.patience) == (jc.DistillConfig.epochs, jc.DistillConfig.patience)
    assert jc.DistillConfig.from_dict(config.to_dict()) == config
    with pytest.raises(jc.InvalidConfigError, match="patience"):
        jc.DistillConfig(patience=-1)


# -- 9: small things ---------------------------------------------------------------------------------------


def test_load_accepts_the_cli_output_folder_and_a_missing_file_is_one_line(tmp_path):
    from jupyter_compress.io import load, save

    model, x = make("mlp")
    small, report = jc.compress(model, jc.PruneConfig(amount=0.5))
    save(small, report, tmp_path / "out" / "model.safetensors")  # what `jupyter-compress run --out out` writes
    loaded = load(lambda: make("mlp")[0], tmp_path / "out")
    assert jc.state_dict_hash(loaded) == jc.state_dict_hash(small)
    for missing in (tmp_path / "empty", tmp_path / "nope.safetensors"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(FileNotFoundError) as err:
            load(lambda: make("mlp")[0], missing)
        assert isinstance(err.value, jc.CompressError) and "\n" not in str(err.value)
        assert str(missing) in str(err.value)


def test_emit_config_prints_the_cell_where_no_frontend_takes_it(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext jupyter_compress").raise_error()
    shell.run_cell("import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
                   "m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))").raise_error()
    capsys.readouterr()
    shell.run_cell("%compress m --prune 0.5 --as m_small --emit-config --no-report").raise_error()
    out = capsys.readouterr().out
    assert "# --emit-config:" in out and "%%compress m --as m_small --no-report" in out
    shell.rl_next_input = None
