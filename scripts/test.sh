#!/usr/bin/env bash
# The test command (README, second command; .ci/run calls exactly this).
# Sets up .venv on a fresh machine (CPU torch), lints, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff" >&2
.venv/bin/ruff check jupyter_compress tests benchmarks scripts
echo "[test] pytest" >&2
.venv/bin/python -m pytest "$@"
