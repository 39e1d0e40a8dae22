"""The built wheel, installed alone (no extras) into a clean venv, is the whole product: the magics, the
tuning panel, plots, the JupyterLab extension and a `jupyter` command, checked through a real kernel of
that venv. Slow (a venv with torch: about a minute with a warm pip cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    _pip(Path(sys.executable), "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(ROOT))
    wheel = next((tmp / "dist").glob("jupyter_compress-*.whl"))
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)  # no system site packages: nothing of the test venv leaks in
    python = env_dir / "bin" / "python"
    # the torch this machine uses (CPU build), pinned as scripts/setup.sh pins it
    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__.split('+')[0])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    (tmp / "pin.txt").write_text(f"torch=={torch_version}\n")
    _pip(python, "install", "-q", "-c", str(tmp / "pin.txt"), str(wheel))
    return env_dir


def test_the_wheel_brings_jupyter_and_the_enabled_extension(clean_venv):
    jupyter = clean_venv / "bin" / "jupyter"
    assert jupyter.exists()
    listed = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=120)
    text = listed.stdout + listed.stderr
    assert "jupyter-compress" in text and "enabled" in text, text[-2000:]


def test_compress_and_tune_run_through_a_kernel_of_the_clean_venv(clean_venv):
    python = clean_venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    env["PATH"] = f"{clean_venv / 'bin'}:{env.get('PATH', '')}"
    proc = subprocess.run([str(python), str(ROOT / "tests" / "wheel_kernel_check.py")], capture_output=True,
                          text=True, timeout=900, env=env, cwd=str(clean_venv))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = json.loads(proc.stdout)
    for cell in cells:
        errors = [o for o in cell["outputs"] if o["type"] == "error"]
        assert not errors, (cell["code"], errors)
        assert not any("Traceback" in o.get("text", "") for o in cell["outputs"]), cell
    report = [o for o in cells[2]["outputs"] if o["type"] == "display_data"]
    assert report and "application/vnd.jupyter-compress.report+json" in report[0]["mimes"]
    assert any("compressed model as 'small'" in o.get("text", "") for o in cells[2]["outputs"])
    panel = [o for o in cells[3]["outputs"] if o["type"] == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in o["mimes"] for o in panel), cells[3]
    assert "Sequential" in "".join(o.get("text", "") for o in cells[4]["outputs"])
