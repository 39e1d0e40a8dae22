"""Property-based: malformed %compress lines and %%compress plan bodies end in a clear one-line
UsageError (or succeed), never an internal exception, and never change the live model."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
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


def _check(shell, code):
    model = shell.user_ns["model"]
    before = jc.state_dict_hash(model)
    result = shell.run_cell(code, silent=True)
    error = result.error_in_exec or result.error_before_exec
    if error is not None:
        assert isinstance(error, UsageError), f"{code!r} raised {type(error).__name__}: {error}"
        assert "\n" not in str(error).strip(), f"{code!r}: a multi-line message: {error}"
    if "--inplace" not in code:
        assert jc.state_dict_hash(model) == before
    else:  # put the model back for the next example
        shell.run_cell("from jupyter_compress import revert_\ntry:\n    revert_(model)\nexcept Exception:\n    pass",
                       silent=True)
        assert jc.state_dict_hash(model) == before


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
