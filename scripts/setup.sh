#!/usr/bin/env bash
# One-time (idempotent) set-up of the project environment in .venv.
# Installs the CPU build of torch unless a torch is already present in the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=.venv-setup.log
pipq() {  # quiet pip: keep its (noisy) output in a log, show it only on failure
    if ! "$VPY" -m pip "$@" >>"$LOG" 2>&1; then
        tail -n 40 "$LOG" >&2
        echo "[setup] pip $* failed; full log in $LOG" >&2
        exit 1
    fi
}
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if "$PY" -c "import torch" >/dev/null 2>&1; then
        # A torch is already installed (e.g. a GPU build): keep it, see it from the venv.
        echo "[setup] keeping the torch installed for $PY" >&2
        "$PY" -m venv --system-site-packages .venv
    else
        "$PY" -m venv .venv
    fi
fi
VPY=.venv/bin/python
: >"$LOG"
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch (CPU build)" >&2
    pipq install -c constraints.txt "torch==2.13.0" numpy
fi
# Keep whatever torch is installed (a GPU user's own build), pin only if we installed it.
TORCH_VERSION="$("$VPY" -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "torch==${TORCH_VERSION}" > .venv/torch-pin.txt
# The editable install builds the JupyterLab extension (labextension/) with node and npm.
if ! command -v npm >/dev/null 2>&1; then
    echo "[setup] npm not found: install Node.js >= 20.19 with npm (the extension is built from labextension/)" >&2
    exit 1
fi
echo "[setup] installing jupyter_compress and test tools (builds the extension when its sources changed)" >&2
pipq install -c .venv/torch-pin.txt -e ".[test]"
echo "[setup] ready: .venv (torch ${TORCH_VERSION})" >&2
