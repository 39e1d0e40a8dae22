"""The package's one version: labextension/package.json's, which the build copies into the distribution's
metadata (pyproject.toml's ``[tool.hatch.version]``); read back from that metadata, or from the source
tree's package.json when this checkout is not installed."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

__all__ = ["__version__"]


def _version() -> str:
    try:
        return metadata.version("jupyter_compress")
    except metadata.PackageNotFoundError:
        pass
    package = Path(__file__).resolve().parents[1] / "labextension" / "package.json"
    try:
        return str(json.loads(package.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return "0+unknown"


__version__ = _version()
