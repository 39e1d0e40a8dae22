"""A plan file or an artifact names code; nothing here ever imports or calls it (issue 19).

A module ``evil_mod_<random>.py`` on sys.path writes a marker file when it is imported, and its ``boom``
writes another when called. Plans name it as a module type (``types: [evil_mod_x.Thing]``) and as QAT's
training function (``train: evil_mod_x:boom``); the same plans go through ``Plan.from_yaml`` + ``compress``,
into an artifact's manifest (``load`` / ``read_manifest``), through the CLI's ``run`` / ``validate`` and a
``%%compress`` cell. Each time: no marker, the module is not in ``sys.modules``, and the answer is a one-line
error (or, for a load, possibly a model rebuilt without training). Functions of the standard library named as
``train`` (``sys:exit``, ``builtins:input``, ``os:system``...) are replaced by recorders for the test: none is
called, nothing exits or waits for input.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import struct
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import jupyter_compress as jc
from jupyter_compress import Plan
from jupyter_compress.errors import CompressError

MAX_MESSAGE = 400


class Evil:
    def __init__(self, folder: Path):
        self.name = f"evil_mod_{uuid.uuid4().hex[:12]}"
        self.imported = folder / "imported.marker"
        self.called = folder / "called.marker"
        (folder / f"{self.name}.py").write_text(textwrap.dedent(f"""\
            from pathlib import Path

            Path({str(self.imported)!r}).write_text("imported")

            from torch import nn


            class Thing(nn.Module):
                pass


            def boom(*args, **kwargs):
                Path({str(self.called)!r}).write_text("called")
            """))

    def check(self, where: str) -> None:
        assert not self.imported.exists(), f"{where}: imported {self.name}"
        assert not self.called.exists(), f"{where}: called {self.name}.boom"
        assert self.name not in sys.modules, f"{where}: {self.name} is in sys.modules"


@pytest.fixture
def evil(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    ev = Evil(folder)
    monkeypatch.syspath_prepend(str(folder))
    yield ev
    sys.modules.pop(ev.name, None)


class _Called(BaseException):
    """Raised by a recorder: a BaseException, so no ``except Exception`` in the library can hide the call."""


@pytest.fixture
def recorders(monkeypatch):
    """sys.exit, builtins.input, os.system, subprocess.call: recorders that note a call and stop the program
    there. (exec and eval stay: IPython and torch call them; named as ``train`` they are refused all the same.)"""
    import subprocess

    calls: list[str] = []

    def recorder(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise _Called(f"{name} was called")
        return call

    for owner, attr, name in ((sys, "exit", "sys:exit"), (builtins, "input", "builtins:input"),
                              (os, "system", "os:system"), (subprocess, "call", "subprocess:call")):
        monkeypatch.setattr(owner, attr, recorder(name))
    return calls


STDLIB_TRAINS = ["sys:exit", "builtins:input", "os:system", "builtins:exec", "builtins:eval", "subprocess:call",
                 "sys.exit", "builtins.input"]


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval(), torch.randn(4, 8)


def _one_line_error(exc: BaseException, where: str, extra: int = 0) -> str:
    message = str(exc)
    assert isinstance(exc, CompressError), f"{where}: {type(exc).__name__} instead of a CompressError: {message}"
    assert len(message.splitlines()) <= 1, f"{where}: a multi-line message: {message!r}"
    assert len(message) <= MAX_MESSAGE + extra, f"{where}: a {len(message)}-character message: {message[:200]!r}"
    return message


def _refused(fn, where: str, extra: int = 0) -> str:
    """``fn()`` must raise a one-line CompressError; its message."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            fn()
    except (KeyboardInterrupt, _Called):
        raise
    except BaseException as exc:  # noqa: BLE001 - any other type is the failure being tested for
        return _one_line_error(exc, where, extra)
    pytest.fail(f"{where}: accepted")


def test_the_evil_module_does_what_it_says(evil):
    """The markers work: importing the module and calling boom leave them (so their absence below means it)."""
    import importlib

    module = importlib.import_module(evil.name)
    assert evil.imported.exists() and not evil.called.exists()
    module.boom(None)
    assert evil.called.exists()
    evil.imported.unlink()
    evil.called.unlink()
    sys.modules.pop(evil.name)
    evil.check("cleanup")


# --- (i) types --------------------------------------------------------------------------------------

def _type_plans(name: str) -> list[str]:
    return [f"steps: [{{method: prune, amount: 0.5, types: ['{name}.Thing']}}]",
            f"steps: [{{method: svd, rank: 2, types: ['{name}.sub.Thing']}}]",
            f"steps: [{{method: prune, exclude: ['0'], types: [Linear, '{name}.Thing']}}]",
            f'{{"steps": [{{"method": "prune", "types": ["{name}.Thing"]}}]}}']


def test_plan_types_never_import(evil):
    model, x = _tiny()
    before = jc.state_dict_hash(model)
    for text in _type_plans(evil.name):
        _refused(lambda t=text: jc.compress(model, Plan.from_yaml(t), example_inputs=x), f"compress({text})")
        evil.check(text)
        _refused(lambda t=text: jc.compress(model, t, example_inputs=x), f"compress(text {text})")
        _refused(lambda t=text: jc.compress_(model, t, example_inputs=x), f"compress_(text {text})")
        evil.check(text)
    _refused(lambda: Plan.from_json(json.dumps({"steps": [{"method": "prune", "types": [f"{evil.name}.Thing"]}]})),
             "from_json")
    _refused(lambda: jc.Selector(types=(f"{evil.name}.Thing",)).select(model, (nn.Linear,)), "Selector")
    evil.check("Selector")
    assert jc.state_dict_hash(model) == before


# --- (ii) QAT's train ---------------------------------------------------------------------------------

def test_qat_train_name_is_never_imported(evil):
    model, x = _tiny()
    before = jc.state_dict_hash(model)
    for train in (f"{evil.name}:boom", f"{evil.name}.boom", f"__main__:{evil.name}"):
        text = f"steps: [{{method: quantize.qat, train: '{train}'}}]"
        for run in (lambda t=text: jc.compress(model, Plan.from_yaml(t), example_inputs=x),
                    lambda t=text: jc.compress_(model, t, example_inputs=x, data=x),
                    lambda t=text: jc.compress(model, t, example_inputs=x, functions={"other": lambda m: None})):
            message = _refused(run, f"compress({text})")
            assert "functions" in message, f"the error does not name the fix (functions=...): {message}"
            evil.check(text)
    assert jc.state_dict_hash(model) == before


def test_qat_train_comes_from_functions_only(evil):
    """The positive side: the caller's function of that name runs (once), the module of that name does not."""
    model, x = _tiny()
    calls = []

    def mine(m):
        calls.append(type(m).__name__)

    for train, functions in ((f"{evil.name}:boom", {f"{evil.name}:boom": mine}), (f"{evil.name}:boom", {"boom": mine}),
                             ("my_train", {"my_train": mine})):
        calls.clear()
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            small, _ = jc.compress(model, f"steps: [{{method: quantize.qat, train: '{train}'}}]", example_inputs=x,
                                   functions=functions)
        assert calls and len(calls) == 1, f"train {train!r} with functions {sorted(functions)}: called {calls}"
        evil.check(train)


@pytest.mark.parametrize("train", STDLIB_TRAINS)
def test_stdlib_functions_named_as_train_are_not_called(train, recorders):
    model, x = _tiny()
    text = f"steps: [{{method: quantize.qat, train: '{train}'}}]"
    _refused(lambda: jc.compress(model, text, example_inputs=x), f"compress({text})")
    _refused(lambda: jc.compress_(model, text, example_inputs=x), f"compress_({text})")
    assert not recorders, f"{train}: called {recorders}"


# --- (iii) artifacts ----------------------------------------------------------------------------------

_KEY = "jupyter_compress"


def _rewrite_manifest(path: Path, change) -> None:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    manifest = json.loads(header["__metadata__"][_KEY])
    change(manifest)
    header["__metadata__"][_KEY] = json.dumps(manifest)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


@pytest.fixture
def qat_artifact(tmp_path):
    """A real QAT run with a training function (passed by name), saved; and how often training ran."""
    model, x = _tiny()
    calls = []

    def my_train(m):
        calls.append("train")
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
        loss = m(x).pow(2).mean()
        loss.backward()
        opt.step()

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        small, report = jc.compress(model, "steps: [{method: quantize.qat, train: my_train}]", example_inputs=x,
                                    functions={"my_train": my_train})
    assert calls == ["train"]
    path = jc.save(small, report, tmp_path / "qat.safetensors", example_inputs=x)
    calls.clear()
    return path, calls, small, x


def _load_or_refuse(path: Path, where: str):
    """jc.load: a model, or None after a one-line CompressError."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return jc.load(lambda: _tiny()[0], path)
    except (KeyboardInterrupt, _Called):
        raise
    except BaseException as exc:  # noqa: BLE001
        _one_line_error(exc, where, extra=len(str(path)))
        return None


def test_loading_a_qat_artifact_does_not_train(qat_artifact):
    path, calls, small, x = qat_artifact
    model = _load_or_refuse(path, "load of an untouched QAT artifact")
    assert model is not None, "an untouched QAT artifact does not load"
    assert not calls, "load ran the training function"
    with torch.no_grad():
        assert torch.equal(model(x), small(x))


def _set_train(name):
    def change(manifest):
        for step in manifest["plan"]["steps"]:
            if step.get("method") == "quantize.qat":
                step["train"] = name
    return change


def _add_types(name):
    def change(manifest):
        manifest["plan"]["steps"][0]["types"] = [f"{name}.Thing"]
    return change


def test_tampered_artifact_runs_nothing(qat_artifact, evil, recorders):
    path, calls, _, _ = qat_artifact
    original = path.read_bytes()
    for what, change in ((f"train {evil.name}:boom", _set_train(f"{evil.name}:boom")),
                         (f"types {evil.name}.Thing", _add_types(evil.name)),
                         *((f"train {t}", _set_train(t)) for t in STDLIB_TRAINS)):
        path.write_bytes(original)
        _rewrite_manifest(path, change)
        model = _load_or_refuse(path, f"load with {what}")
        assert model is None, f"load accepted a manifest whose plan was changed ({what}): the digest misses it"
        with contextlib.suppress(CompressError):
            jc.io.read_manifest(path)
        evil.check(what)
        assert not calls, f"load with {what} ran the training function"
        assert not recorders, f"load with {what}: called {recorders}"


def test_legitimately_saved_plan_naming_code_runs_nothing(tmp_path, evil, recorders):
    """save() writes a plan naming code with a valid digest (no tampering): load still imports and calls
    nothing: it replays QAT without training (the weights come from the file)."""
    model, x = _tiny()
    for train in (f"{evil.name}:boom", *STDLIB_TRAINS):
        try:
            plan = Plan.of(jc.QATConfig(train=train))
        except CompressError:
            continue  # not even a plan
        path = jc.save(model, plan, tmp_path / "named.safetensors", example_inputs=x)
        _load_or_refuse(path, f"load of a saved plan with train {train}")
        evil.check(train)
        assert not recorders, f"load of a saved plan with train {train}: called {recorders}"


# --- (iv) the CLI ---------------------------------------------------------------------------------------

def _factory_spec() -> str:
    import cli_models

    return "cli_models:tiny" if hasattr(cli_models, "tiny") else "cli_models:cnn"


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from jupyter_compress.__main__ import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, err


def test_cli_runs_nothing_a_plan_file_names(tmp_path, evil, recorders, capsys):
    spec = _factory_spec()
    example = spec + "_example"
    plans = {
        "types": f"steps: [{{method: prune, types: ['{evil.name}.Thing']}}]\n",
        "train": f"steps: [{{method: quantize.qat, train: '{evil.name}:boom'}}]\n",
        **{f"train {t}": f"steps: [{{method: quantize.qat, train: '{t}'}}]\n" for t in STDLIB_TRAINS},
    }
    for what, text in plans.items():
        plan = tmp_path / "plan.yaml"
        plan.write_text(text)
        for argv in (["run", str(plan), "--model", spec, "--example", example, "--out", str(tmp_path / "out")],
                     ["validate", str(plan)]):
            code, err = _cli(argv, capsys)
            assert code == 2, f"{argv[0]} of a plan with {what}: exit {code}; stderr {err[-400:]!r}"
            errors = [line for line in err.splitlines() if line.strip() and not line.startswith("[jupyter-compress]")]
            assert len(errors) == 1 and errors[0].startswith("jupyter-compress: "), \
                f"{argv[0]} of a plan with {what}: stderr {err[-600:]!r}"
            evil.check(f"{argv[0]} {what}")
            assert not recorders, f"{argv[0]} of a plan with {what}: called {recorders}"


# --- (vi) the %%compress cell ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext jupyter_compress").raise_error()
    sh.run_cell("import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
                "model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\n"
                "x = torch.randn(4, 8)\n").raise_error()
    return sh


def test_compress_cell_runs_nothing_its_body_names(shell, evil, recorders):
    from IPython.core.error import UsageError

    shell.user_ns.pop(evil.name, None)
    bodies = {"types": f"steps: [{{method: prune, types: ['{evil.name}.Thing']}}]",
              "train": f"steps: [{{method: quantize.qat, train: '{evil.name}:boom'}}]",
              **{f"train {t}": f"steps: [{{method: quantize.qat, train: '{t}'}}]"
                 for t in ("exit", "quit", "get_ipython", "__builtins__.exec", "__import__", *STDLIB_TRAINS)}}
    model = shell.user_ns["model"]
    before = jc.state_dict_hash(model)
    for what, body in bodies.items():
        result = shell.run_cell(f"%%compress model --example x --data x --as fuzz_small --no-report\n{body}\n",
                                silent=True)
        error = result.error_in_exec or result.error_before_exec
        assert isinstance(error, UsageError), f"%%compress with {what}: {type(error).__name__}: {error}"
        assert len(str(error).strip().splitlines()) == 1, f"%%compress with {what}: {error}"
        evil.check(f"%%compress {what}")
        assert not recorders, f"%%compress with {what}: called {recorders}"
        assert not getattr(shell, "exit_now", False), f"%%compress with {what} asked the shell to exit"
        assert jc.state_dict_hash(model) == before


def test_compress_cell_with_the_notebook_importing_sys_and_os(shell, recorders):
    """``import sys, os`` in the notebook does not make ``train: sys:exit`` or ``os:system`` a training function
    a plan body can reach."""
    from IPython.core.error import UsageError

    shell.run_cell("import sys, os, builtins, subprocess").raise_error()
    try:
        for train in STDLIB_TRAINS:
            result = shell.run_cell(f"%%compress model --example x --data x --as fuzz_small --no-report\n"
                                    f"steps: [{{method: quantize.qat, train: '{train}'}}]\n", silent=True)
            error = result.error_in_exec or result.error_before_exec
            assert not recorders, f"%%compress with train {train}: called {recorders}"
            assert isinstance(error, UsageError), f"%%compress with train {train}: {type(error).__name__}: {error}"
    finally:
        for name in ("sys", "os", "builtins", "subprocess"):
            shell.user_ns.pop(name, None)
