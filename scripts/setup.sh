#!/usr/bin/env bash
# One-time (idempotent) set-up of the project environment in .venv.
# Installs the CPU build of torch unless a torch is already present in the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch (CPU build)" >&2
    "$VPY" -m pip install -q -c constraints.txt "torch==2.13.0"
fi
# Keep whatever torch is installed (a GPU user's own build), pin only if we installed it.
TORCH_VERSION="$("$VPY" -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "torch==${TORCH_VERSION}" > .venv/torch-pin.txt
echo "[setup] installing jupyter_compress and test tools" >&2
"$VPY" -m pip install -q -c .venv/torch-pin.txt -e ".[test]"
