"""JupyterLab server for the e2e tests (scripts/e2e.sh starts it). Never use it for real work:
it turns authentication off."""

import os

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821 - `c` is the config object Jupyter passes in
c.ServerApp.port = int(os.environ.get("E2E_PORT", "8888"))  # noqa: F821
c.ServerApp.allow_root = True  # noqa: F821 - CI runs as root
c.ServerApp.ip = "127.0.0.1"  # noqa: F821
