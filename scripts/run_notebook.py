"""Execute a notebook through a real Jupyter kernel; write it, its HTML rendering and its report.

    python scripts/run_notebook.py notebooks/quickstart.ipynb out/quickstart

writes ``quickstart.ipynb`` (executed), ``quickstart.html`` and ``report.json`` (the last
jupyter_compress report displayed in the notebook) into the output folder, and prints their paths.
Exits non-zero if a cell fails (the partly executed notebook is still written) or no report was shown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

from jupyter_compress.core.report import REPORT_MIME

__all__ = ["REPORT_MIME", "NotebookRunError", "execute_notebook", "find_report"]


class NotebookRunError(RuntimeError):
    """A cell failed, or the notebook displayed no jupyter_compress report."""


def find_report(nb: nbformat.NotebookNode) -> dict | None:
    """The last jupyter_compress report JSON among the notebook's outputs, or None."""
    found = None
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if REPORT_MIME in output.get("data", {}):
                found = output["data"][REPORT_MIME]
    return found


def execute_notebook(path: str | Path, out_dir: str | Path, timeout: int = 600) -> dict[str, Path]:
    """Run ``path`` (cwd = its folder, kernel ``python3``); return {"notebook", "html", "report"} paths."""
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"notebook": out_dir / path.name, "html": (out_dir / path.name).with_suffix(".html"),
             "report": out_dir / "report.json"}
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(nb, paths["notebook"])
        raise NotebookRunError(f"{path} failed; partly executed notebook in {paths['notebook']}\n{exc}") from exc
    nbformat.write(nb, paths["notebook"])
    body, _ = HTMLExporter().from_notebook_node(nb)
    paths["html"].write_text(body, encoding="utf-8")
    report = find_report(nb)
    if report is None:
        raise NotebookRunError(f"{path} ran but displayed no jupyter_compress report ({REPORT_MIME}); "
                               f"does it run %compress with the report on?")
    paths["report"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    try:
        paths = execute_notebook(args.notebook, args.out_dir, timeout=args.timeout)
    except NotebookRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kind, p in paths.items():
        print(f"{kind:>8}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
