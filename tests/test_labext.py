"""The JupyterLab extension's packaging and its kernel-side protocol (jupyter_compress.notebook).

The browser side is tested by labextension/ (vitest) and scripts/e2e.sh (Galata in Chromium); here a
real kernel talks to a scripted frontend made with jupyter_client, which answers (or not) the
comm the kernel opens, as the extension would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jupyter_compress
from jupyter_compress import Report

ROOT = Path(__file__).resolve().parents[1]
LABEXT = ROOT / "labextension"
BUILT = ROOT / "jupyter_compress" / "labextension"
NAME = "jupyter-compress"


def test_one_version_for_python_and_the_extension():
    """The version is typed once, in labextension/package.json: pyproject.toml reads it from there when the
    wheel is built ([tool.hatch.version]), and __version__ is the installed distribution's."""
    from importlib.metadata import version

    package = json.loads((LABEXT / "package.json").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r"^version\s*=", pyproject, re.M), "the version is typed in pyproject.toml too"
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    source = re.search(r"^\[tool\.hatch\.version\]\npath = \"([^\"]+)\"\npattern = '([^']+)'", pyproject, re.M)
    assert source and source.group(1) == "labextension/package.json"
    built = re.search(source.group(2), (ROOT / source.group(1)).read_text(), re.M).group("version")
    assert package["name"] == NAME
    assert package["version"] == built == jupyter_compress.__version__ == version("jupyter_compress")


def test_the_extension_ships_the_bokehjs_of_the_python_bokeh():
    """Report plots travel as bokeh JSON items drawn by the BokehJS the extension ships (issue 18): the
    two must be one version (bump @bokeh/bokehjs in labextension/package.json with the bokeh pin)."""
    bokeh = pytest.importorskip("bokeh")
    package = json.loads((LABEXT / "package.json").read_text())
    assert package["dependencies"]["@bokeh/bokehjs"] == bokeh.__version__


def test_report_json_carries_the_python_summary_for_the_renderer():
    """The renderer (labextension/src/report.ts) shows the summary lines embedded in the report JSON,
    so it cannot drift from Python's Report.summary(); its own computation is only a fallback for
    JSON without them (the TypeScript tests check that fallback against labextension/tests/fixtures)."""
    fixture = json.loads((LABEXT / "tests" / "fixtures" / "report.json").read_text())
    report = Report.from_dict(fixture["report"])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["summary"] == [list(line) for line in report.summary()]
    assert Report.from_dict(data).summary() == report.summary()


def test_report_json_carries_the_threshold_lines_and_layer_table_for_the_renderer():
    """The renderer shows a crossed threshold first and the per-layer table from cells Python wrote (issue 18),
    the same ones the text and HTML views show; the fixture the TypeScript tests use holds them."""
    fixture = json.loads((LABEXT / "tests" / "fixtures" / "report.json").read_text())
    report = Report.from_dict(fixture["report"])
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["layer_table"] == fixture["layer_table"]
    assert data["layer_table"]["head"][0] == "layer" and len(data["layer_table"]["rows"]) == len(report.rows)
    text = " ".join(report.to_text().split())
    assert all(" ".join(" ".join(cells).split()) in text for cells in data["layer_table"]["rows"])
    assert data["threshold_lines"] == []
    report.thresholds = fixture["thresholds"]
    data = json.loads(json.dumps(report._repr_mimebundle_()["application/vnd.jupyter-compress.report+json"]))
    assert data["threshold_lines"] == fixture["threshold_lines"] == report.threshold_lines()
    assert fixture["threshold_lines"][0].startswith("FAIL: ") and data["passed"] is False
    assert fixture["threshold_lines"][0] in report.to_text()


def test_report_json_carries_its_plots_for_the_renderer_but_report_json_files_do_not():
    """JupyterLab shows the report's JSON (the extension ranks it ahead of text/html), so the plots
    attached to the report travel in it too; to_dict() (the CLI's report.json) leaves them out."""
    fixture = json.loads((LABEXT / "tests" / "fixtures" / "report.json").read_text())
    report = Report.from_dict(fixture["report"])
    report.attach_html("weights", '<div id="p"></div><script>draw("p")</script>')
    bundle = json.loads(json.dumps(report._repr_mimebundle_()))
    data = bundle["application/vnd.jupyter-compress.report+json"]
    assert data["plots_html"] == [["weights", '<div id="p"></div><script>draw("p")</script>']]
    assert '<script>draw("p")</script>' in bundle["text/html"]
    assert "plots_html" not in report.to_dict()
    again = Report.from_dict(data)
    assert again.plots_html == report.plots_html and again.summary() == report.summary()
    assert "plots_html" not in Report.from_dict(fixture["report"])._repr_mimebundle_()[
        "application/vnd.jupyter-compress.report+json"]


def _labextension_list(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "jupyterlab.labextensions", "list"], capture_output=True,
                         text=True, env=env, timeout=120)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # drop its colours


@pytest.mark.skipif(not (BUILT / "package.json").exists(), reason="extension not built (npm run build:prod)")
def test_built_extension_is_discoverable(tmp_path):
    """The build output, laid out as the wheel's shared-data lays it, is listed as enabled and OK."""
    dest = tmp_path / "share" / "jupyter" / "labextensions" / NAME
    dest.parent.mkdir(parents=True)
    dest.symlink_to(BUILT, target_is_directory=True)
    env = dict(os.environ, JUPYTER_PATH=str(tmp_path / "share" / "jupyter"))
    text = _labextension_list(env)
    assert re.search(rf"{NAME} v{re.escape(jupyter_compress.__version__)} enabled\s+\S*OK", text), text


def test_installed_extension_is_listed():
    """After pip install (scripts/setup.sh), `jupyter labextension list` shows it enabled; in CI a
    missing one fails instead of skipping."""
    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / NAME / "package.json"
    if not installed.exists() and not os.environ.get("CI"):
        pytest.skip(f"not installed in {sys.prefix} (this venv was not pip-installed from this checkout)")
    text = _labextension_list(dict(os.environ))
    assert re.search(rf"{NAME} v\S+ enabled\s+\S*OK.*python, jupyter_compress", text), text


# -- the kernel side of the protocol, through a real kernel -------------------------------------


@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", extra_arguments=[], startup_timeout=120, cwd=str(ROOT))
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc, code: str, *, cell_id: str | None = None, frontend=None, timeout: float = 60):
    """Execute code (with JupyterLab's cellId metadata); `frontend(msg)` sees every iopub message
    and plays the extension. Returns (reply content, stdout text)."""
    msg = kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                              "user_expressions": {}, "allow_stdin": False,
                                              "stop_on_error": True},
                         metadata={"cellId": cell_id} if cell_id else {})
    kc.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    stdout = []
    deadline = time.monotonic() + timeout
    while True:
        m = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if frontend is not None:
            frontend(m)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "stream":
            stdout.append(m["content"]["text"])
        if m["msg_type"] == "error":
            stdout.append("\n".join(m["content"]["traceback"]))
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], "".join(stdout)


def send_comm(kc, msg_type: str, comm_id: str, data: dict) -> None:
    kc.shell_channel.send(kc.session.msg(msg_type, {"comm_id": comm_id, "data": data}))


class Frontend:
    """Answers comm_open on jupyter_compress.cells the way the extension does (or as told)."""

    def __init__(self, kc, answer):
        self.kc, self.answer, self.requests = kc, answer, []

    def __call__(self, msg):
        if msg["msg_type"] == "comm_open" and msg["content"]["target_name"] == "jupyter_compress.cells":
            self.requests.append(msg["content"]["data"])
            self.answer(self.kc, msg["content"]["comm_id"])


def test_no_extension_means_false_promptly(kernel):
    t0 = time.monotonic()
    reply, out = run(kernel, "from jupyter_compress.notebook import insert_cell_below\n"
                             "print('result', insert_cell_below('x = 1', tag='t', timeout=1.0))")
    assert reply["status"] == "ok", out
    assert "result False" in out
    assert time.monotonic() - t0 < 10  # 1 s timeout + kernel round trips; never the default 5 s wait


def test_ack_is_read_while_the_cell_blocks(kernel):
    """The extension's answer arrives while the calling cell still runs; insert_cell_below sees it."""
    def answer(kc, comm_id):
        send_comm(kc, "comm_msg", comm_id, {"ok": True, "cell_id": "new-cell-1"})

    frontend = Frontend(kernel, answer)
    reply, out = run(kernel, "from jupyter_compress.notebook import insert_cell_below\n"
                             "import time; t = time.monotonic()\n"
                             "ok = insert_cell_below('y = 2', tag='gen', timeout=20)\n"
                             "print('result', ok, time.monotonic() - t < 10)",
                     cell_id="anchor-cell-7", frontend=frontend)
    assert reply["status"] == "ok", out
    assert frontend.requests == [{"code": "y = 2", "tag": "gen", "anchor_cell_id": "anchor-cell-7"}]
    assert "result True True" in out, out


def test_refusal_and_callbacks_of_the_non_blocking_request(kernel):
    def refuse(kc, comm_id):
        send_comm(kc, "comm_msg", comm_id, {"ok": False, "reason": "no cell with id 'zzz' in this notebook"})

    frontend = Frontend(kernel, refuse)
    reply, out = run(kernel, "from jupyter_compress.notebook import request_cell_below, current_cell_id\n"
                             "seen = []\n"
                             "req = request_cell_below('z = 3', 'gen', anchor_cell_id='zzz', timeout=20,\n"
                             "                         on_done=seen.append)\n"
                             "print('cell', current_cell_id())",
                     cell_id="cell-A", frontend=frontend)
    assert reply["status"] == "ok", out
    assert "cell cell-A" in out
    assert frontend.requests[0]["anchor_cell_id"] == "zzz"
    # the answer is read once the cell has finished; the next request finds it resolved
    reply, out = run(kernel, "import time\nfor _ in range(100):\n    if req.done: break\n    time.sleep(0.05)\n"
                             "print('resolved', req.ok, req.reason, seen == [req])")
    assert "resolved False no cell with id 'zzz' in this notebook True" in out, out


def test_closed_comm_means_false(kernel):
    def close(kc, comm_id):  # what JupyterLab does for a comm target nobody registered
        send_comm(kc, "comm_close", comm_id, {})

    reply, out = run(kernel, "from jupyter_compress.notebook import insert_cell_below\n"
                             "import time; t = time.monotonic()\n"
                             "print('result', insert_cell_below('w = 4', timeout=20), time.monotonic() - t < 10)",
                     frontend=Frontend(kernel, close))
    assert reply["status"] == "ok", out
    assert "result False True" in out, out


def test_outside_a_kernel_resolves_false_at_once():
    from jupyter_compress.notebook import current_cell_id, insert_cell_below

    t0 = time.monotonic()
    assert insert_cell_below("x = 1", timeout=5) is False
    assert time.monotonic() - t0 < 1
    assert current_cell_id() is None
