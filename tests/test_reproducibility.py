"""The same plan and seed give a bit-identical state_dict in the notebook that made it (an in-process
IPython shell), in its generated %%compress cell re-run in a fresh kernel, and from the CLI (the last in
tests/test_cli.py), for every registered method."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_models import family_for
from IPython.core.interactiveshell import InteractiveShell
from jupyter_client.manager import start_new_kernel
from test_kernel import execute

from jupyter_compress.core.registry import get_method, method_names

pytestmark = pytest.mark.kernel
TESTS = str(Path(__file__).parent)
SETUP = ("import sys\nsys.path[:0] = [{tests!r}]\nfrom cli_models import cnn, cnn_example, cnn_data\n"
         "model, x, data = cnn(), cnn_example(), cnn_data()\n"
         "from cli_models import transformer, transformer_example, transformer_data\n"
         "tmodel, tx, tdata = transformer(), transformer_example(), transformer_data()\n%load_ext jupyter_compress\n"
         "from jupyter_compress import state_dict_hash")


@pytest.fixture(scope="module")
def made():
    """Each method run by the magic in the notebook that makes it: {method: (generated cell, hash)}."""
    shell = InteractiveShell.instance()
    shell.run_cell(SETUP.format(tests=TESTS)).raise_error()
    out = {}
    for method in method_names():
        config = get_method(method).config_cls()
        body = "steps:\n- " + "{" + ", ".join([f"method: {method}"] + [
            f"{k}: {v!r}" for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))]) + "}\n"
        # the CNN, or a small transformer for a method the CNN has no layer for (embedding tables)
        names = ("model", "x", "data") if family_for(method) == "cnn" else ("tmodel", "tx", "tdata")
        result = shell.run_cell(f"%%compress {names[0]} --as small --data {names[2]} --example {names[1]} "
                                f"--emit-config --no-report\nseed: 5\n{body}")
        if result.error_in_exec is not None:
            out[method] = (None, str(result.error_in_exec))
            continue
        cell = shell.rl_next_input
        shell.rl_next_input = None
        out[method] = (cell, shell.run_cell("state_dict_hash(small)").result)
    return out


@pytest.fixture(scope="module")
def fresh_kernel():
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=120,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, str(Path(TESTS).parent)])})
    reply, _ = execute(kc, SETUP.format(tests=TESTS))
    assert reply["status"] == "ok", reply
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


@pytest.mark.parametrize("method", method_names())
def test_generated_cell_in_a_fresh_kernel_reproduces_the_bits(made, fresh_kernel, method):
    cell, expected = made[method]
    assert cell is not None, f"{method} failed in the notebook: {expected}"
    assert cell.startswith(("%%compress model", "%%compress tmodel")) and "seed" in cell
    reply, _ = execute(fresh_kernel, cell.replace("--as small", "--as again --no-report", 1), timeout=300)
    assert reply["status"] == "ok", reply
    reply, outputs = execute(fresh_kernel, "print(state_dict_hash(again))")
    printed = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream").strip()
    assert printed == expected
