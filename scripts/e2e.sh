#!/usr/bin/env bash
# End-to-end tests of the JupyterLab extension in headless Chromium (Galata / Playwright):
# installs Debian's chromium if missing (Playwright never downloads a browser), `npm ci` in
# labextension/ui-tests when its lock file changed, starts JupyterLab on a free local port, runs the
# tests, stops JupyterLab. Screenshots: labextension/ui-tests/artifacts/. Extra arguments go to
# `playwright test`. Needs the venv with jupyter_compress installed (scripts/setup.sh), or VENV=DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
export PATH="$VENV/bin:$PATH"  # the server and its python3 kernels use this venv
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
say() { echo "[e2e] $*" >&2; }

if [ ! -x "$CHROMIUM" ]; then
    say "installing Debian's chromium"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/tmp/e2e-apt.log 2>&1; then
        tail -n 20 /tmp/e2e-apt.log >&2
        say "FAILED: cannot install chromium (log /tmp/e2e-apt.log)"
        exit 1
    fi
fi

cd labextension/ui-tests
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "npm ci (Galata, Playwright)"
    npm ci --no-audit --no-fund --loglevel=error
fi

# The extension under test: the installed one (pip install / scripts/setup.sh). A checkout whose
# venv was not installed from it (a developer's worktree), or whose build differs from the installed
# one, uses its own build through JUPYTER_PATH (searched first, and the first copy of an extension wins).
RUNDIR=$(mktemp -d /tmp/jupyter-compress-e2e.XXXXXX)
BUILT="$ROOT/jupyter_compress/labextension"
INSTALLED="$VENV/share/jupyter/labextensions/jupyter-compress"
if ! python -m jupyterlab.labextensions list 2>&1 | grep -q "jupyter-compress v.*enabled" \
        || { [ -f "$BUILT/package.json" ] && ! diff -rq "$BUILT/static" "$INSTALLED/static" >/dev/null 2>&1; }; then
    if [ ! -f "$BUILT/package.json" ]; then
        say "FAILED: the jupyter-compress extension is neither installed nor built (run scripts/setup.sh)"
        exit 1
    fi
    say "using this checkout's build in jupyter_compress/labextension (not the one installed in $VENV)"
    mkdir -p "$RUNDIR/share/labextensions"
    ln -s "$BUILT" "$RUNDIR/share/labextensions/jupyter-compress"
    export JUPYTER_PATH="$RUNDIR/share${JUPYTER_PATH:+:$JUPYTER_PATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # kernels import this checkout's jupyter_compress
export JUPYTERLAB_GALATA_ROOT_DIR="$RUNDIR/root"
mkdir -p "$JUPYTERLAB_GALATA_ROOT_DIR"
E2E_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export E2E_PORT TARGET_URL="http://127.0.0.1:$E2E_PORT"

say "starting JupyterLab on $TARGET_URL (log $RUNDIR/jupyterlab.log)"
jupyter-lab --config jupyter_server_test_config.py >"$RUNDIR/jupyterlab.log" 2>&1 &
LAB_PID=$!
trap 'kill "$LAB_PID" 2>/dev/null || true; wait "$LAB_PID" 2>/dev/null || true' EXIT
python - "$TARGET_URL" "$LAB_PID" <<'PY'
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
for _ in range(240):
    try:
        urllib.request.urlopen(url + "/api/status", timeout=2)
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("[e2e] FAILED: JupyterLab exited during start-up")
        time.sleep(0.5)
sys.exit("[e2e] FAILED: JupyterLab did not answer within 120 s")
PY
rm -rf artifacts
# Playwright's own report is kept in playwright-output.txt: scripts/test.sh prints its failures (and
# tests that passed only on their retry) at the very end of the run, where CI's log tail shows them.
set +e
npx playwright test "$@" 2>&1 | tee playwright-output.txt
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
    tail -n 30 "$RUNDIR/jupyterlab.log" >&2
    say "FAILED (exit $rc); screenshots in labextension/ui-tests/artifacts, report in labextension/ui-tests/playwright-report"
fi
exit "$rc"
