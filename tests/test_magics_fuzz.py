"""Property-based: malformed %compress lines and %%compress plan bodies end in a clear one-line
UsageError (or succeed), never an internal exception, and never change the live model.

Issue 19 (safety) adds attack classes: YAML alias bombs, deep nesting, huge and odd numbers, tags, long
strings, control characters, names IPython owns for --as, training functions named by a plan body. Each case
also checks that the error is short, that it comes within a bounded time, and that the names IPython keeps in
the namespace (In, Out, get_ipython, exit, ...) are the very same objects afterwards.

Generated cases per run: test_malformed_lines 150, test_malformed_plan_bodies 150, test_attack_plan_bodies 150,
test_as_names 80, test_attack_lines 120 (650 in total).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import jupyter_compress as jc

OPTIONS = ["--prune", "--structured", "--svd", "--tucker", "--cp", "--tt", "--nm", "--distill", "--quantize", "--auto", "--max-drop", "--scope", "--layers",
           "--exclude", "--as", "--eval", "--example", "--data", "--calib", "--seed", "--inplace", "--emit-config",
           "--no-report", "--report", "--bogus", "-x"]
VALUES = ["0.5", "50%", "int8", "int4", "static-int8", "bf16", "1.5", "-1", "0", "8", "999", "energy:0.9", "energy:2", "auto", "2:4", "4:2", "a:b",
          "global", "nowhere", "0", "re:[", "re:.*", "x", "evaluate", "model", "'unclosed", "9lives", "", "nan", "inf"]


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext jupyter_compress").raise_error()
    sh.run_cell(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\nx = torch.randn(2, 8)\n"
        "def evaluate(m):\n    return float(m(x).sum())\n"
    ).raise_error()
    return sh


# names whose objects IPython owns: a %compress line must leave them as they were
IPYTHON_STABLE = ["get_ipython", "In", "Out", "exit", "quit", "_oh", "_dh", "_ih", "__builtins__", "__name__"]
IPYTHON_OWNED = IPYTHON_STABLE + ["_", "__", "___", "_i", "_ii", "_iii", "_1", "_i1", "__builtin__", "_exit_code"]
MAX_MESSAGE = 420      # the core's ~400 plus the '%compress: ' prefix
CELL_SECONDS = 20.0    # a refused or tiny compression, on a loaded 2-core machine


def _check(shell, code):
    ns = shell.user_ns
    model = ns["model"]
    before = jc.state_dict_hash(model)
    owned = {name: ns[name] for name in IPYTHON_STABLE if name in ns}
    baseline = {name: ns[name] for name in ("model", "x", "evaluate", "torch", "nn") if name in ns}
    start = time.perf_counter()
    try:
        result = shell.run_cell(code, silent=True)
    finally:
        changed = [name for name, value in owned.items() if ns.get(name) is not value]
        ns.update(owned)  # keep the shared shell usable whatever happened (--as x rebinds x, ...)
        ns.update(baseline)
    elapsed = time.perf_counter() - start
    shown = code if len(code) <= 300 else f"{code[:200]!r}...[{len(code):,} chars]"
    assert not changed, f"{shown!r} rebound names IPython owns: {changed}"
    assert not getattr(shell, "exit_now", False), f"{shown!r} asked the shell to exit"
    error = result.error_in_exec or result.error_before_exec
    if error is not None:
        assert isinstance(error, UsageError), f"{shown!r} raised {type(error).__name__}: {str(error)[:300]}"
        message = str(error).strip()
        assert "\n" not in message, f"{shown!r}: a multi-line message: {message[:600]}"
        assert len(message) <= MAX_MESSAGE, f"{shown!r}: a {len(message):,}-character message: {message[:300]}..."
    assert elapsed < CELL_SECONDS, f"{shown!r} took {elapsed:.1f} s"
    if "--inplace" not in code:
        assert jc.state_dict_hash(model) == before
    else:  # put the model back for the next example
        shell.run_cell("from jupyter_compress import revert_\ntry:\n    revert_(model)\nexcept Exception:\n    pass",
                       silent=True)
        assert jc.state_dict_hash(model) == before
    return error


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(OPTIONS), st.sampled_from(VALUES)), max_size=4),
       st.sampled_from(["model", "nothing", "x", "model.0", "model.nope", ""]))
def test_malformed_lines(shell, pairs, target):
    line = " ".join([target] + [f"{o} {v}" if v else o for o, v in pairs])
    _check(shell, f"%compress {line} --no-report")


YAML_BITS = ["steps:", "- {method: prune}", "- {method: prune, amount: 2}", "- {method: svd, rank: -3}",
             "- {method: nm, n: 3, m: 2}", "- method: [1, 2]", "- 7", "steps: 5", "seed: x", "{", "]]",
             "jupyter_compress_plan: 99", "- {method: prune, amout: 0.5}", "- {method: tucker, rank: [1, 2, 3]}",
             "- {method: svd, rank: 'energy:0.9', layers: ['re:(']}", "- {method: structured}", "!!python/object:os.system",
             "- {method: prune, layers: [nope]}", "- {method: tt, rank: 0.5}", "\t- bad indent", "steps: []"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(YAML_BITS), min_size=1, max_size=5))
def test_malformed_plan_bodies(shell, lines):
    _check(shell, "%%compress model --as fuzzed --no-report\n" + "\n".join(lines) + "\n")


# --- issue 19: attack classes ---------------------------------------------------------------------------

def _bomb(levels: int, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nsteps: *a{levels}"


ATTACK_BODIES = [
    _bomb(2), _bomb(5), _bomb(7), "s: &s 0.5\nsteps: [{method: prune, amount: *s}]",
    "m: &m {method: prune}\nsteps: [*m, *m]",
    "steps: " + "[" * 50_000 + "]" * 50_000, "steps: " + "{a: " * 20_000 + "1" + "}" * 20_000,
    "steps:\n" + "".join("  " * (i + 1) + "- \n" for i in range(300)),
    "seed: " + "9" * 5000 + "\nsteps: [{method: prune}]", "seed: " + "9" * 400 + "\nsteps: [{method: prune}]",
    "jupyter_compress_plan: 0x" + "f" * 5000 + "\nsteps: []", "jupyter_compress_plan: " + "9" * 400,
    "steps: [{method: prune, amount: 1.0e400}]", "steps: [{method: prune, amount: .nan}]",
    "steps: [{method: svd, rank: 100000000000000000000000}]", "steps: [{method: tt, cores: 1000000000000}]",
    "steps: [{method: prune.nm, n: 2, m: " + "9" * 30 + "}]", "steps: [{method: quantize.weight, group_size: -1}]",
    "steps: [{method: distill, epochs: 100000000000000000000}]", "steps: [{method: prune, amount: 1:30}]",
    "!!python/object/apply:os.system ['echo pwned']", "steps: [!!python/name:os.system ]",
    "steps: [{method: prune, amount: !!binary aGVsbG8=}]", "steps: [{method: !!timestamp 2001-12-14}]",
    "steps: [{method: " + "x" * 100_000 + "}]", "steps: [{method: prune, layers: ['" + "y" * 100_000 + "']}]",
    "steps: [{method: prune, layers: ['re:" + "(" * 5000 + "']}]", "steps: [{method: prune, layers: ['re:a{99999999999}']}]",
    "steps: [{method: prune, " + "k" * 50_000 + ": 1}]", "steps: [{method: prune, scope: \"a\\u2028b\"}]",
    "steps: [{method: prune, types: ['jc_fuzz_absent_pkg.Layer']}]", "steps: [{method: prune, types: [os.path]}]",
    "steps: [{method: quantize.qat, train: exit}]", "steps: [{method: quantize.qat, train: get_ipython}]",
    "steps: [{method: quantize.qat, train: 'sys:exit'}]", "steps: [{method: quantize.qat, train: 'builtins:input'}]",
    "steps: [{method: quantize.qat, train: __import__}]", "steps: [{method: quantize.qat, train: In}]",
"steps: [{method: quantize.qat, train: 'x.__class__'}]",
    "\x00", "\x1f", "steps: []\x85", "\ufeffsteps: [{method: prune}]", "# " + "c" * 2_000_000 + "\nsteps: []",
]
AS_NAMES = IPYTHON_OWNED + ["class", "None", "True", "9lives", "a.b", "a-b", "''", "λ", "_compress_report",
                            "__spec__", "small", "fuzz_small", "In_small", "model", "x"]


@settings(max_examples=150, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=list(HealthCheck))
@given(st.sampled_from(ATTACK_BODIES), st.sampled_from(["fuzzed", "small", "In", "get_ipython", "exit"]),
       st.sampled_from(["", " --example x", " --data x --example x", " --seed 3", " --inplace"]))
def test_attack_plan_bodies(shell, body, name, options):
    _check(shell, f"%%compress model --as {name}{options} --no-report\n{body}\n")


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(AS_NAMES), st.sampled_from(["line", "cell"]))
def test_as_names(shell, name, form):
    ns = shell.user_ns
    previous = ns.get(name, "absent")
    code = (f"%compress model --prune 0.5 --as {name} --no-report" if form == "line" else
            f"%%compress model --as {name} --no-report\nsteps: [{{method: prune, amount: 0.5}}]\n")
    error = _check(shell, code)
    if name in IPYTHON_OWNED:
        assert error is not None, f"--as {name} (a name IPython owns) was accepted"
        assert ns.get(name, "absent") is previous, f"--as {name} rebound it"
    elif name not in ("model", "x") and error is None:
        ns.pop(name.strip("'"), None)


# (a line magic's text goes through IPython's $-expansion first, which is quadratic: 100,000-character lines
# would time IPython, not jupyter_compress)
LINE_ATTACKS = ["--prune 1e400", "--prune nan", "--prune -0", "--prune " + "9" * 5000, "--prune 0x10",
                "--nm " + "9" * 5000 + ":4", "--nm 2:" + "9" * 30, "--seed " + "9" * 5000, "--seed -1",
                "--svd energy:nan", "--svd " + "9" * 400, "--svd energy:" + "9" * 5000, "--tt 0",
                "--layers 're:a{99999999999}' --prune 0.5", "--exclude 're:" + "(" * 5000 + "' --prune 0.5",
                "--layers " + "z" * 5_000 + " --prune 0.5", "--distill " + "9" * 30, "--distill 0",
                "--prune 0.5 --as " + "n" * 10_000, "--prune '\x00'",
                "--quantize " + "q" * 5_000, "--prune 0.5 --example x[",
                "--prune 0.5 --example '" + "(" * 2000 + "'", "--prune 0.5 --data __import__",
                "--prune 0.5 --eval In", "--prune 0.5 --eval x", "--prune 0.5 --data In"]


@settings(max_examples=120, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(LINE_ATTACKS), min_size=1, max_size=2),
       st.sampled_from(["model", "model.0", "x", "In", "get_ipython", "exit"]))
def test_attack_lines(shell, attacks, target):
    _check(shell, f"%compress {target} {' '.join(attacks)} --no-report")
