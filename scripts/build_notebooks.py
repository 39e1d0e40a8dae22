"""Write notebooks/*.ipynb from the plain-text sources in notebooks/src/*.py (no outputs committed).

A source file is Python in "percent" format: ``# %% [markdown]`` starts a markdown cell (its lines
are comments), ``# %%`` a code cell. Run ``python scripts/build_notebooks.py`` after editing one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def cells_from(text: str) -> list:
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif body:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def build(source: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells_from(source.read_text())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = ROOT / "notebooks" / f"{source.stem}.ipynb"
    nbformat.write(nb, str(out))
    return out


if __name__ == "__main__":
    names = sys.argv[1:]
    for src in sorted((ROOT / "notebooks" / "src").glob("*.py")):
        if not names or src.stem in names:
            print(build(src))
