#!/usr/bin/env bash
# The test command (README, second command; .ci/run calls exactly this).
# Sets up .venv on a fresh machine (CPU torch; builds the JupyterLab extension), lints, runs the
# TypeScript unit tests, the browser end-to-end tests (scripts/e2e.sh; E2E=0 skips them, saying so)
# and then the whole Python suite. The e2e stage runs before pytest so pytest's summary closes the
# output; its failure still fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff" >&2
.venv/bin/ruff check jupyter_compress tests benchmarks scripts
echo "[test] TypeScript unit tests (vitest)" >&2
(
    cd labextension
    [ -f node_modules/.package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error
    npm test --silent
)
e2e_rc=0
if [ "${E2E:-1}" != 0 ]; then
    echo "[test] e2e: JupyterLab in headless Chromium (scripts/e2e.sh)" >&2
    VENV="$PWD/.venv" bash scripts/e2e.sh || e2e_rc=$?
else
    echo "[test] e2e NOT RUN (E2E=0)" >&2
fi
echo "[test] pytest" >&2
pytest_rc=0
.venv/bin/python -m pytest "$@" || pytest_rc=$?
# The e2e stage's failures, and tests that passed only when retried, are printed last (CI shows the tail).
E2E_OUT=labextension/ui-tests/playwright-output.txt
if [ -f "$E2E_OUT" ] && { [ "$e2e_rc" != 0 ] || grep -qE "^ +[0-9]+ flaky" "$E2E_OUT"; }; then
    echo "[test] e2e report (Playwright; failures and flaky tests):" >&2
    sed -n '/^ *1) /,$p' "$E2E_OUT" | sed 's/\x1b\[[0-9;]*m//g' | head -n 120 >&2
fi
if [ "$pytest_rc" != 0 ]; then
    exit "$pytest_rc"
fi
if [ "$e2e_rc" != 0 ]; then
    echo "[test] FAILED: the e2e stage (scripts/e2e.sh) exited $e2e_rc; see its output above" >&2
    exit "$e2e_rc"
fi
