"""The jupyter-compress command (installed console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupyter_compress as jc

CLI = str(Path(sys.executable).with_name("jupyter-compress"))


def test_methods_lists_every_registered_method():
    out = subprocess.run([CLI, "methods", "--json"], capture_output=True, text=True, check=True).stdout
    assert {m["name"] for m in json.loads(out)} == {m["name"] for m in jc.list_methods()}


def test_validate_accepts_a_good_plan_and_rejects_a_typo(tmp_path):
    good = tmp_path / "good.yaml"
    jc.Plan.of(jc.SVDConfig(rank=0.5), jc.PruneConfig(amount=0.5)).save(str(good))
    ok = subprocess.run([CLI, "validate", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "valid plan, 2 step(s)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n- {method: prnue, amount: 0.5}\n")
    res = subprocess.run([sys.executable, "-m", "jupyter_compress", "validate", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "Unknown method 'prnue'. Did you mean 'prune'?" in res.stderr and "Traceback" not in res.stderr


# --- run / report -------------------------------------------------------------------------------
import os  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from jupyter_compress.core.registry import get_method, method_names  # noqa: E402

TESTS = str(Path(__file__).parent)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, str(Path(TESTS).parent)])}


def _run(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def digits_weights(tmp_path_factory):
    from jupyter_compress.examples.digits import train_digits_cnn

    model, _, _ = train_digits_cnn(epochs=8)
    path = tmp_path_factory.mktemp("w") / "digits.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def test_run_round_trip_on_digits_with_thresholds(tmp_path, digits_weights):
    model, weights = digits_weights
    plan = tmp_path / "plan.yaml"
    jc.Plan.of(jc.StructuredPruneConfig(amount=0.25, keep_first=False), seed=1).save(str(plan))
    common = [str(plan), "--model", "cli_models:digits", "--weights", str(weights), "--eval",
              "cli_models:digits_eval", "--example", "cli_models:digits_example"]
    ok = _run("run", *common, "--out", str(tmp_path / "ok"), "--max-drop", "50%", "--json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["ok"] and result["crossed"] == []
    assert "[jupyter-compress] compressing" in ok.stderr
    # the same plan in-process gives a bit-identical state_dict
    from cli_models import digits_example

    small, _ = jc.compress(model, jc.Plan.load(str(plan)), example_inputs=digits_example())
    saved = load_file(str(tmp_path / "ok" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in small.state_dict().items())
    # the artifact reloads by replay
    from jupyter_compress.examples.digits import DigitsCNN
    from jupyter_compress.io import load

    loaded = load(DigitsCNN, tmp_path / "ok" / "model.safetensors")
    assert jc.state_dict_hash(loaded) == jc.state_dict_hash(small)
    # an impossible threshold: exit 1, and the report says which
    bad = _run("run", *common, "--out", str(tmp_path / "bad"), "--max-drop", "0%", "--max-size-mb", "0.001")
    assert bad.returncode == 1
    assert "more than --max-drop" in bad.stdout and "above --max-size-mb" in bad.stdout
    rep = _run("report", str(tmp_path / "bad"), "--format", "json")
    assert rep.returncode == 0 and any("THRESHOLD CROSSED" in n for n in json.loads(rep.stdout)["notes"])


def test_run_usage_errors_exit_2_without_traceback(tmp_path):
    plan = tmp_path / "plan.yaml"
    jc.Plan.of(jc.PruneConfig(amount=0.5)).save(str(plan))
    for args in (["--model", "cli_models"], ["--model", "cli_models:nope"], ["--model", "no_such_mod:f"],
                 ["--model", "cli_models:cnn", "--max-drop", "lots"], ["--model", "cli_models:cnn", "--max-size-mb", "nan"],
                 ["--model", "cli_models:raising_factory"]):
        res = _run("run", str(plan), *args, "--out", str(tmp_path / "o"))
        assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr


@pytest.mark.parametrize("method", method_names())
def test_every_method_is_bit_identical_in_process_and_from_the_cli(tmp_path, method):
    import cli_models

    fam = cli_models.family_for(method)  # the CNN, or a small transformer for embedding tables
    model, example, data = (getattr(cli_models, fam + suffix)() for suffix in ("", "_example", "_data"))
    plan = jc.Plan.of(get_method(method).config_cls(), seed=11)
    small, report = jc.compress(model, plan, example_inputs=example, data=data)
    assert report.compressed_rows, f"{method} changes no layer of the {fam}"
    plan_file = tmp_path / "plan.yaml"
    # the plan the report records (what --emit-config writes): a setting the method chose by measuring (the
    # runtime's backend) is pinned there, so the CLI builds the same thing without measuring on its own
    jc.Plan.from_dict(report.plan).save(str(plan_file))
    res = _run("run", str(plan_file), "--model", f"cli_models:{fam}", "--example", f"cli_models:{fam}_example",
               "--data", f"cli_models:{fam}_data", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert saved.keys() == small.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in small.state_dict().items())


def test_run_round_trip_on_minilm(tmp_path):
    from jupyter_compress.examples.minilm import corpus, embed, load_minilm
    from jupyter_compress.io import load

    plan = tmp_path / "plan.yaml"
    plan.write_text("jupyter_compress_plan: 1\nseed: 0\nsteps:\n"
                    "- {method: prune.structured, amount: 0.25, layers: ['re:.*intermediate\\.dense']}\n")
    res = _run("run", str(plan), "--model", "cli_models:minilm", "--example", "cli_models:minilm_example",
               "--out", str(tmp_path / "out"), "--max-size-mb", "200")
    assert res.returncode == 0, res.stderr
    loaded = load(load_minilm, tmp_path / "out" / "model.safetensors")
    assert loaded[0].model.encoder.layer[0].intermediate.dense.out_features == 1152
    from cli_models import minilm_example

    small, _ = jc.compress(load_minilm(), jc.Plan.load(str(plan)), example_inputs=minilm_example())
    sentences = corpus(8, offset=50)
    assert torch.equal(embed(loaded, sentences), embed(small, sentences))
    assert loaded.encode(sentences[:2]).shape == (2, 384)
