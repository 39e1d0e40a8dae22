"""`import jupyter_compress` must stay Jupyter-free and light (checked in a clean subprocess)."""

import subprocess
import sys


def test_import_does_not_pull_jupyter_or_tensorly():
    code = (
        "import sys, jupyter_compress\n"
        "heavy = [m for m in ('IPython', 'ipywidgets', 'bokeh', 'tensorly', 'ipykernel', 'dask', 'distributed', 'onnxruntime', 'sentence_transformers', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import jupyter_compress pulled in: {out.stdout.strip()}"


def test_methods_are_listed_with_help_without_tensorly():
    code = (
        "import sys, jupyter_compress as jc\n"
        "names = [m['name'] for m in jc.list_methods()]\n"
        "assert {'prune', 'svd'} <= set(names), names\n"
        "assert all(m['help'] for m in jc.list_methods())\n"
        "print('tensorly' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
