#!/usr/bin/env bash
# The main job: set up .venv (scripts/setup.sh), then open notebooks/quickstart.ipynb in JupyterLab.
# Headless (--headless, or no $DISPLAY): execute it through a real kernel instead and write the
# executed notebook, an HTML rendering and report.json to out/quickstart/ (or --out DIR).
# Exits non-zero if a cell fails.
set -euo pipefail
usage() { echo "usage: scripts/quickstart.sh [--headless] [--out DIR]" >&2; }
headless=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --headless) headless=1 ;;
        --out) [ $# -ge 2 ] || { usage; exit 2; }; out="$2"; shift ;;
        --out=*) out="${1#--out=}" ;;
        -h | --help) usage; exit 0 ;;
        *) echo "quickstart.sh: unknown option '$1'" >&2; usage; exit 2 ;;
    esac
    shift
done
case "$out" in
    "") ;;
    /*) ;;
    *) out="$PWD/$out" ;;  # relative to where the user ran the script, not the repository
esac
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "$headless" = 1 ] || [ -z "${DISPLAY:-}" ]; then
    exec .venv/bin/python scripts/run_notebook.py notebooks/quickstart.ipynb "${out:-out/quickstart}"
fi
exec .venv/bin/jupyter lab notebooks/quickstart.ipynb
