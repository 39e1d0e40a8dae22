"""Issue 18, the tuning panel's first hour: Generate cell writes exactly the applied plan, in numbers as a
person writes them, whatever the browser's slider echoes back; every panel output has a static fallback;
a terminal IPython gets a one-line hint; progress bars leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from models import make

import jupyter_compress as jc
from jupyter_compress.core.plan import Plan, tidy_float
from jupyter_compress.widgets import tune
from jupyter_compress.widgets.controls import StepSlider

WIDGET = "application/vnd.jupyter.widget-view+json"


def _cell_plan(code: str) -> Plan:
    return Plan.from_yaml(code.split("\n", 1)[1])


def test_floats_are_written_as_a_person_writes_them():
    assert tidy_float(0.8000000000000002) == 0.8 and tidy_float(0.5000000000000001) == 0.5
    assert tidy_float(0.02 + 48 * 0.01) == 0.5 and tidy_float(1e-7) == 1e-7 and tidy_float(3) == 3
    noisy = Plan.of(jc.PruneConfig(amount=0.4000000000000001), jc.SVDConfig(rank=0.8000000000000002))
    for text in (noisy.to_yaml(), noisy.to_json()):
        assert "0000000" not in text and "0.4" in text and "0.8" in text


def test_slider_snaps_to_its_step_and_keeps_what_python_set_against_echoes():
    slider = StepSlider(value=0.5, min=0.02, max=1.0, step=0.01)
    slider.value = 0.8000000000000002
    assert slider.value == 0.8 and repr(slider.value) == "0.8"
    sent = []
    slider.send_state = lambda key=None: sent.append(key)
    slider.set_state({"value": 0.8000000000000002})  # the browser's rendering of 0.8: dropped, nothing sent
    assert slider.value == 0.8 and sent == []
    slider.set_state({"value": 0.5})  # a view that wrote back its old value right after a set from Python
    assert slider.value == 0.8 and sent == ["value"]  # refused; Python's value sent again
    slider._python_set_at = -1e9  # later: the user moves the slider
    sent.clear()
    slider.set_state({"value": 0.5000000000000001})
    assert repr(slider.value) == "0.5" and sent == []  # tidied here, no correction sent back mid-drag
    slider.set_state({"value": 0.333})  # off the grid for real: snapped, and the front end told
    assert slider.value == 0.33 and sent == ["value"]


def test_generate_cell_writes_the_applied_plan_and_reproduces_its_hash():
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext jupyter_compress").raise_error()
    model, x = make("cnn")
    shell.user_ns.update(net=model, x=x)
    panel = tune(model, example_inputs=x, name="net", namespace=shell.user_ns, as_name="tuned")
    # before any Apply the cell holds the controls' plan, and says so
    panel.method_pickers["pruning"].value = "prune"
    assert "Not applied in the panel yet" in panel.cell_code()
    # set from Python (as the quickstart does), with the browser's echoes in between
    panel.method_pickers["decomposition"].value = "svd"
    panel.controls["svd"]["rank"].value = 0.8
    panel.controls["svd"]["rank"].set_state({"value": 0.5})  # a stale view writing back
    panel.controls["prune"]["amount"].value = 0.4
    panel.controls["prune"]["amount"].set_state({"value": 0.4000000000000001})
    applied = panel.apply()
    assert panel.applied_plan is not None
    assert [s.config.rank if s.method == "svd" else s.config.amount for s in panel.applied_plan.steps] == [0.8, 0.4]
    # the user moves a slider after Apply: the cell still holds what was applied
    panel.controls["prune"]["amount"]._python_set_at = -1e9
    panel.controls["prune"]["amount"].set_state({"value": 0.6100000000000001})
    assert panel.plan() != panel.applied_plan
    code = panel.cell_code()
    assert code.startswith("%%compress net --as tuned\n") and "reproduces the applied result" in code
    assert "rank: 0.8\n" in code and "amount: 0.4\n" in code and "0000000" not in code
    assert _cell_plan(code) == panel.applied_plan
    shell.run_cell(code.replace("--as tuned", "--as again --no-report")).raise_error()
    assert jc.state_dict_hash(shell.user_ns["again"]) == jc.state_dict_hash(applied)
    panel.revert()
    assert panel.applied_plan is None and "amount: 0.61\n" in panel.cell_code()


def test_the_panel_output_has_text_and_html_fallbacks_updated_on_apply():
    InteractiveShell.instance()
    model, x = make("mlp")
    panel = tune(model, example_inputs=x, name="net")
    with capture_output() as out:
        panel._ipython_display_()
    data = out.outputs[-1].data
    assert WIDGET in data and "\n" not in data["text/plain"] and "VBox(" not in data["text/plain"]
    assert data["text/plain"].startswith("jupyter_compress tuning panel on net: nothing applied yet")
    assert "jupyter-compress-tune-static" in data["text/html"] and "after (preview)" in data["text/html"]
    panel.method_pickers["pruning"].value = "prune"
    with capture_output() as applied:
        panel.apply()
    update = applied.outputs[-1]
    assert update.update  # the same output, updated in place
    assert "applied prune(" in update.data["text/plain"] and "as 'net_tuned'" in update.data["text/plain"]
    assert "Applied as <code>net_tuned</code>" in update.data["text/html"] and "amount: 0.5" in update.data["text/html"]
    assert WIDGET in update.data


def test_terminal_ipython_gets_a_one_line_hint_for_tune():
    code = textwrap.dedent("""\
        import torch
        model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        %load_ext jupyter_compress
        %compress model --tune
        print("panel" if "_compress_panel" in globals() else "no panel")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", "-c", code],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert lines == ["%compress --tune needs a notebook (ipywidgets): open the notebook in JupyterLab or "
                     "Notebook 7, or write the plan as a cell with %compress MODEL --prune 0.5 ... --emit-config",
                     "no panel"]


def test_progress_bars_are_closed_and_their_notebook_output_emptied():
    from tqdm.notebook import tqdm as notebook_tqdm

    from jupyter_compress.core.progress import _clearing_class, progress_bar

    plain = progress_bar(3, desc="distill")  # outside a kernel: tqdm's text bar, erased when closed
    assert plain.leave is False
    plain.close()
    InteractiveShell.instance()
    with capture_output() as out:
        bar = _clearing_class(notebook_tqdm)(total=10, desc="distill", leave=False)
        bar.update(3)
        bar.close()  # ended early (converged / stopped): tqdm would leave a red bar at 30%
    assert WIDGET in out.outputs[0].data
    assert out.outputs[-1].data == {"text/plain": ""} and out.outputs[-1].update
    assert bar.container.comm is None  # the widget is closed too


def test_applied_plans_round_trip_through_the_cell_text():
    for amount in [round(0.01 * i, 2) for i in range(0, 99, 7)]:
        slider = StepSlider(value=amount, min=0.0, max=0.99, step=0.01)
        plan = Plan.of(jc.PruneConfig(amount=slider.value))
        assert Plan.from_yaml(plan.to_yaml()) == plan and Plan.from_json(plan.to_json()) == plan
