"""The CLI as a CI gate: each exit code means one thing, every error is one line on stderr.

0 ok, 1 a threshold crossed (a NaN metric crosses), 2 usage or input error, 3 internal error, 130 Ctrl-C.
Most cases call ``main([...])`` in-process (fast); a few go through ``python -m jupyter_compress`` to prove
the real exit status and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from jupyter_compress import cli_run
from jupyter_compress.__main__ import main
from jupyter_compress.core.plan import Plan

TESTS = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
PRUNE = "jupyter_compress_plan: 1\nsteps:\n- {method: prune, amount: 0.5}\n"


def _plan(tmp_path: Path, text: str = PRUNE, name: str = "plan.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def _one_line_error(err: str) -> str:
    """The error line, asserting stderr holds exactly one non-empty line and no traceback."""
    lines = _lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("jupyter-compress: ") and "Traceback" not in err
    return lines[0]


def _last_line_error(err: str) -> str:
    """For errors after the run started: progress lines ('[jupyter-compress] ...'), then ONE error line."""
    lines = _lines(err)
    errors = [line for line in lines if not line.startswith("[jupyter-compress] ")]
    assert errors == [lines[-1]], err
    assert lines[-1].startswith("jupyter-compress: ") and "Traceback" not in err
    return lines[-1]


def _tiny(tmp_path, *extra: str) -> list[str]:
    return ["run", _plan(tmp_path), "--model", "cli_models:tiny", "--out", str(tmp_path / "out"), *extra]


# --- 0 ------------------------------------------------------------------------------------------------
def test_exit_0_when_every_threshold_holds(tmp_path, capsys):
    code, out, err = _main(capsys, *_tiny(tmp_path, "--eval", "cli_models:tiny_eval", "--max-drop", "100%",
                                          "--max-size-mb", "100", "--json"))
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and result["exit_code"] == 0 and result["crossed"] == []
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert all(line.startswith("[jupyter-compress] ") for line in _lines(err))


def test_exit_0_for_a_valid_plan_and_for_help(tmp_path, capsys):
    code, out, _ = _main(capsys, "validate", _plan(tmp_path))
    assert code == 0 and "valid plan, 1 step(s)" in out
    code, out, _ = _main(capsys, "run", "--help")
    assert code == 0 and "exit codes:" in out and "internal error" in out and "--debug" in out


# --- 1 ------------------------------------------------------------------------------------------------
def test_exit_1_when_a_threshold_is_crossed(tmp_path, capsys):
    code, out, _ = _main(capsys, *_tiny(tmp_path, "--max-size-mb", "0.000001"))
    assert code == 1 and "above --max-size-mb" in out
    code, out, _ = _main(capsys, *_tiny(tmp_path, "--eval", "cli_models:tiny_eval", "--max-drop", "0"))
    assert code == 1 and "more than --max-drop" in out


@pytest.mark.parametrize("evaluate", ["nan_eval", "nan_dict_eval", "nan_after_eval"])
def test_a_nan_metric_crosses_max_drop(tmp_path, capsys, evaluate):
    code, out, _ = _main(capsys, *_tiny(tmp_path, "--eval", f"cli_models:{evaluate}", "--max-drop", "100%", "--json"))
    assert code == 1
    result = json.loads(out)
    assert not result["ok"] and result["exit_code"] == 1 and "is NaN" in result["crossed"][0]


def _report(before, after, latency=None, size=1000):
    metrics_after = dict(after, **({} if latency is None else {"latency_ms": latency}))
    return SimpleNamespace(metrics_before=before, metrics_after=metrics_after, model_bytes_after=size)


def test_check_thresholds_never_passes_on_nan():
    nan = float("nan")
    check = cli_run.check_thresholds
    ok = _report({"accuracy": 0.9}, {"accuracy": 0.9}, latency=1.0)
    assert check(ok, max_drop=0.0, max_latency_ms=2.0, max_size_mb=1.0) == []
    assert "is NaN" in check(_report({"accuracy": nan}, {"accuracy": 0.9}), max_drop=1.0, max_latency_ms=None,
                             max_size_mb=None)[0]
    assert "is NaN" in check(_report({"metric": 1.0}, {"metric": nan}), max_drop=1.0, max_latency_ms=None,
                             max_size_mb=None)[0]
    assert "not measured after" in check(_report({"accuracy": 1.0}, {}), max_drop=1.0, max_latency_ms=None,
                                         max_size_mb=None)[0]
    assert "latency is NaN" in check(_report({}, {}, latency=nan), max_drop=None, max_latency_ms=1e9,
                                     max_size_mb=None)[0]
    assert check(_report({"accuracy": torch.tensor(0.9)}, {"accuracy": torch.tensor(0.5)}), max_drop=0.1,
                 max_latency_ms=None, max_size_mb=None)  # 0-dim tensors are metrics too


# --- 2 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--max-drop", "--max-latency-ms", "--max-size-mb"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-1", "1e400", "lots"])
def test_bad_thresholds_are_usage_errors(tmp_path, capsys, flag, value):
    extra = ["--eval", "cli_models:tiny_eval"] if flag == "--max-drop" else []
    code, _, err = _main(capsys, *_tiny(tmp_path, *extra, f"{flag}={value}"))
    assert code == 2
    line = _one_line_error(err)
    assert flag in line and repr(value) in line and "e.g." in line
    assert not (tmp_path / "out").exists()  # checked before anything ran


def test_nan_percent_drop_is_a_usage_error(tmp_path, capsys):
    code, _, err = _main(capsys, *_tiny(tmp_path, "--eval", "cli_models:tiny_eval", "--max-drop", "nan%"))
    assert code == 2 and "'nan%'" in _one_line_error(err)


def test_max_drop_without_eval_is_a_usage_error(tmp_path, capsys):
    code, _, err = _main(capsys, *_tiny(tmp_path, "--max-drop", "1%"))
    assert code == 2 and "--eval" in _one_line_error(err)


@pytest.mark.parametrize("text", [
    "!!python/object:os.system {}\n",
    "steps: !!python/object/apply:os.system ['echo pwned']\n",
    "steps:\n- {method: prnue, amount: 0.5}\n",
    "steps:\n- {method: prune, amount: 2}\n",
    "steps: []\n",
    "",
    "steps: [\n",
    "jupyter_compress_plan: 99\nsteps:\n- {method: prune}\n",
])
def test_bad_plans_are_usage_errors(tmp_path, capsys, text):
    plan = _plan(tmp_path, text)
    for argv in (["validate", plan], ["run", plan, "--model", "cli_models:tiny", "--out", str(tmp_path / "o")]):
        code, _, err = _main(capsys, *argv)
        assert code == 2
        _one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_unreadable_plan_files_are_usage_errors(tmp_path, capsys):
    binary = tmp_path / "plan.bin"
    binary.write_bytes(b"\xff\xfe\x00steps")
    for path in (tmp_path / "missing.yaml", tmp_path, binary):
        code, _, err = _main(capsys, "validate", path)
        assert code == 2 and str(path.name) in _one_line_error(err)


def test_warnings_are_one_progress_line_each(tmp_path, capsys):
    code, _, err = _main(capsys, "validate", _plan(tmp_path, "foo: 1\n" + PRUNE))
    assert code == 0
    (line,) = _lines(err)
    assert line.startswith("[jupyter-compress] warning: UserWarning: ") and "'foo'" in line


def test_long_values_are_quoted_by_a_short_prefix(tmp_path, capsys):
    code, _, err = _main(capsys, "validate", tmp_path / ("x" * 5000))
    line = _one_line_error(err)
    assert code == 2 and len(line) < 400 and "characters)" in line


@pytest.mark.parametrize(("model", "words"), [
    ("cli_models:raising_factory", "--model 'cli_models:raising_factory' raised ValueError: no checkpoint"),
    ("cli_models:not_a_model", "returned a int, not a torch.nn.Module"),
    ("cli_models:nope", "has no attribute 'nope'"),
    ("cli_models", "must look like 'package.module:name'"),
    ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
])
def test_bad_factories_are_usage_errors(tmp_path, capsys, model, words):
    code, _, err = _main(capsys, "run", _plan(tmp_path), "--model", model, "--out", tmp_path / "o")
    assert code == 2 and words in _one_line_error(err)


def test_a_module_that_raises_on_import_is_a_usage_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "exitcodes_boom_module.py").write_text("raise RuntimeError('import-time failure')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = _main(capsys, "run", _plan(tmp_path), "--model", "exitcodes_boom_module:f", "--out",
                         tmp_path / "o")
    assert code == 2 and "raised RuntimeError: import-time failure" in _one_line_error(err)


@pytest.mark.parametrize(("evaluate", "words"), [
    ("raising_eval", "--eval 'cli_models:raising_eval' raised RuntimeError: the eval set is missing"),
    ("exiting_eval", "--eval 'cli_models:exiting_eval' raised SystemExit: 0"),  # sys.exit(0) is no pass
])
def test_an_eval_function_that_raises_is_a_usage_error(tmp_path, capsys, evaluate, words):
    code, _, err = _main(capsys, *_tiny(tmp_path, "--eval", f"cli_models:{evaluate}", "--max-drop", "1%"))
    assert code == 2 and words in _last_line_error(err)


def test_bad_weights_files_are_usage_errors(tmp_path, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    other = tmp_path / "other.safetensors"
    save_file({"0.weight": torch.zeros(3, 3), "extra": torch.zeros(1)}, str(other))
    for path, words in ((tmp_path / "missing.safetensors", "cannot read --weights"),
                        (garbage, "is not a readable safetensors file"),
                        (other, "does not fit the model from --model 'cli_models:tiny'")):
        code, _, err = _main(capsys, *_tiny(tmp_path, "--weights", path))
        assert code == 2 and words in _last_line_error(err)
    line = _last_line_error(err)
    assert "3 missing key(s)" in line and "1 unexpected key(s)" in line and "[3, 3] in the file" in line


@pytest.mark.parametrize(("train", "words"), [
    ("=cli_models:tiny_train", "--train must look like"),
    ("mytrain=no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
    ("mytrain=cli_models:NOT_CALLABLE", "is a int, not a function"),
    ("other=cli_models:tiny_train", "names the training function 'mytrain', which no --train gives"),
])
def test_bad_train_options_are_usage_errors(tmp_path, capsys, train, words):
    plan = _plan(tmp_path, "steps:\n- {method: quantize.qat, train: mytrain}\n")
    for argv in (["validate", plan], ["run", plan, "--model", "cli_models:tiny", "--data", "cli_models:tiny_data",
                                      "--out", tmp_path / "o"]):
        code, _, err = _main(capsys, *argv, "--train", train)
        assert code == 2 and words in _one_line_error(err)


def test_a_training_function_that_raises_is_a_usage_error(tmp_path, capsys):
    plan = _plan(tmp_path, "steps:\n- {method: quantize.qat, train: mytrain}\n")
    code, _, err = _main(capsys, "run", plan, "--model", "cli_models:tiny", "--data", "cli_models:tiny_data",
                         "--out", tmp_path / "o", "--train", "mytrain=cli_models:raising_train")
    assert code == 2 and "--train 'mytrain' raised ValueError: the training data is gone" in _last_line_error(err)


def test_argparse_errors_are_one_line_usage_errors(tmp_path, capsys):
    for argv in (["run", _plan(tmp_path)], ["bogus"], ["report"], ["run", "--nope"]):
        code, _, err = _main(capsys, *argv)
        assert code == 2 and "--help" in _one_line_error(err)


def test_other_input_errors(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = _main(capsys, "run", _plan(tmp_path), "--model", "cli_models:tiny", "--out", tmp_path / "file")
    assert code == 2 and "is a file" in _one_line_error(err)
    code, _, err = _main(capsys, "report", tmp_path / "nowhere")
    assert code == 2 and "no report.json" in _one_line_error(err)
    code, _, err = _main(capsys, "report", tmp_path / "file")
    assert code == 2 and "not a report.json" in _one_line_error(err)


# --- 3 and 130 -------------------------------------------------------------------------------------------
def _boom(*args, **kwargs):
    raise RuntimeError("a bug in jupyter_compress")


def test_a_bug_of_ours_is_an_internal_error_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_run, "check_thresholds", _boom)
    code, _, err = _main(capsys, *_tiny(tmp_path))
    assert code == 3
    line = _last_line_error(err)
    assert line == ("jupyter-compress: internal error: RuntimeError: a bug in jupyter_compress; rerun with --debug "
                    "for the traceback and report it")
    monkeypatch.setattr(Plan, "describe", _boom)
    code, _, err = _main(capsys, "validate", _plan(tmp_path))
    assert code == 3 and "internal error: RuntimeError" in _one_line_error(err)


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_adds_the_traceback(tmp_path, capsys, monkeypatch, where):
    monkeypatch.setattr(Plan, "describe", _boom)
    argv = ["validate", _plan(tmp_path)]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    code, _, err = _main(capsys, *argv)
    assert code == 3 and "Traceback (most recent call last)" in err and "_boom" in err
    assert _lines(err)[-1].startswith("jupyter-compress: internal error: RuntimeError")


def test_debug_shows_the_cause_of_a_usage_error(tmp_path, capsys):
    code, _, err = _main(capsys, "run", "--debug", _plan(tmp_path), "--model", "cli_models:raising_factory",
                         "--out", tmp_path / "o")
    assert code == 2 and "Traceback" in err and "no checkpoint at /models/tiny.pt" in err
    assert _lines(err)[-1].startswith("jupyter-compress: --model")


def test_ctrl_c_exits_130(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_run, "check_thresholds", interrupt)
    code, _, err = _main(capsys, *_tiny(tmp_path))
    assert code == 130 and _last_line_error(err) == "jupyter-compress: interrupted"


# --- validate agrees with run --------------------------------------------------------------------------
GOOD_PLANS = [
    PRUNE,
    "seed: 3\nsteps:\n- {method: svd, rank: 0.5}\n- {method: prune, amount: 0.25, exclude: ['2']}\n",
    "steps:\n- {method: quantize.qat, train: mytrain}\n",
    "steps:\n- {method: quantize.qat, train: 'cli_models:tiny_train'}\n",
]
BAD_PLANS = [
    "steps:\n- {method: prnue, amount: 0.5}\n",                     # unknown method
    "steps:\n- {method: prune, amount: 1.5}\n",                     # value out of range
    "steps:\n- {method: prune, amout: 0.5}\n",                      # misspelt key
    "steps:\n- {method: svd, rank: 'energy:x'}\n",                  # bad rank spec
    "steps:\n- {method: prune, layers: ['re:(']}\n",                # bad regex
    "steps:\n- {method: prune, types: [NoSuchLayer]}\n",            # unknown layer type
    "seed: -1\nsteps:\n- {method: prune}\n",                        # bad seed
    "jupyter_compress_plan: 2\nsteps:\n- {method: prune}\n",        # newer schema
    "steps: []\n",                                                  # no steps
    "",                                                             # empty file
    "steps: [{method: prune\n",                                     # not YAML
    '{"steps": [{"method": "prune", "amount": -1}]}',               # JSON, bad value
    "!!python/object/apply:os.system ['echo pwned']\n",             # unsafe tag
    "steps:\n- {method: quantize.qat, train: not_given}\n",         # a training function no --train gives
]


@pytest.mark.parametrize("text", GOOD_PLANS + BAD_PLANS)
def test_validate_agrees_with_run(tmp_path, capsys, text):
    plan = _plan(tmp_path, text)
    train = ["--train", "mytrain=cli_models:tiny_train", "--train", "cli_models:tiny_train"]
    validate, _, validate_err = _main(capsys, "validate", plan, *train)
    run, _, run_err = _main(capsys, "run", plan, "--model", "cli_models:tiny", "--data", "cli_models:tiny_data",
                            "--out", tmp_path / "out", *train)
    assert validate == run == (0 if text in GOOD_PLANS else 2), (validate_err, run_err)
    if validate:
        assert _one_line_error(validate_err) == _one_line_error(run_err)


# --- through a real process -----------------------------------------------------------------------------
def _process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jupyter_compress", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=300)


def test_process_nan_threshold_exits_2_with_one_line(tmp_path):
    res = _process(*_tiny(tmp_path, "--max-latency-ms", "nan"))
    assert res.returncode == 2 and res.stdout == ""
    assert "--max-latency-ms 'nan' is not a finite number" in _one_line_error(res.stderr)


def test_process_raising_factory_exits_2_and_debug_shows_the_traceback(tmp_path):
    argv = ["run", _plan(tmp_path), "--model", "cli_models:raising_factory", "--out", tmp_path / "o"]
    res = _process(*argv)
    line = _one_line_error(res.stderr)
    assert res.returncode == 2 and "raised ValueError" in line
    res = _process("--debug", *argv)
    assert res.returncode == 2 and "Traceback (most recent call last)" in res.stderr
    assert _lines(res.stderr)[-1] == line


def test_process_nan_eval_exits_1(tmp_path):
    res = _process(*_tiny(tmp_path, "--eval", "cli_models:nan_eval", "--max-drop", "1%"))
    assert res.returncode == 1, res.stderr
    assert "metric is NaN" in res.stdout and "thresholds crossed" in res.stdout


def test_quiet_leaves_only_the_error_line_on_stderr(tmp_path, capsys):
    """--quiet: no progress or warning lines, so stderr is exactly the one error line, even after the run
    started (here an --eval function that raises)."""
    code, _, err = _main(capsys, "--quiet", *_tiny(tmp_path, "--eval", "cli_models:raising_eval", "--max-drop", "1%"))
    assert code == 2
    assert len(_lines(err)) == 1 and _lines(err)[0].startswith("jupyter-compress: ") and "--eval" in err
    code, out, err = _main(capsys, *_tiny(tmp_path, "--quiet"))
    assert code == 0 and err.strip() == "" and "all thresholds hold" in out
