"""Where BokehJS comes from, and turning figures into HTML that notebooks keep.

No CDN: the default mode ``"inline"`` puts BokehJS (from the installed bokeh package) into the
*first* plot output of the kernel session only; later plots carry just their data (a few KB), so a
saved notebook holds one copy of BokehJS. Call :func:`load_bokehjs` in an early cell to choose
that output yourself (if the first plot cell is cleared or re-run, re-run that cell too).
``"server"`` points at a local URL serving BokehJS (e.g. a ``bokeh serve`` or any static server
holding ``bokeh.util.paths.bokehjs_path()``): outputs then embed no BokehJS at all.
"""

from __future__ import annotations

from typing import Any

__all__ = ["configure", "resources_mode", "load_bokehjs", "figure_html", "BokehJS"]

_STATE: dict[str, Any] = {"mode": "inline", "root_url": None, "loaded": False}
_COMPONENTS = ["bokeh", "bokeh-widgets"]  # core and the layer Select; no tables, no GL


def configure(mode: str = "inline", root_url: str | None = None) -> None:
    """``configure("inline")`` (default, offline) or ``configure("server", root_url="http://host:port/")``.

    Repeating the current setting (the magic does on every run) keeps BokehJS counted as emitted."""
    if mode not in ("inline", "server"):
        raise ValueError(f"mode must be 'inline' or 'server'; got {mode!r}.")
    if mode == "server" and not root_url:
        raise ValueError("mode='server' needs root_url, the local URL that serves BokehJS under static/js/.")
    if (mode, root_url) != (_STATE["mode"], _STATE["root_url"]):
        _STATE.update(mode=mode, root_url=root_url, loaded=False)


def resources_mode() -> str:
    return _STATE["mode"]


def _resources():
    from bokeh.resources import Resources

    if _STATE["mode"] == "server":
        return Resources(mode="server", root_url=_STATE["root_url"], components=_COMPONENTS)
    return Resources(mode="inline", components=_COMPONENTS)


def _script_tags() -> str:
    res = _resources()
    if _STATE["mode"] == "server":
        return "".join(f'<script src="{url}"></script>' for url in res.js_files)
    return "".join(f"<script>{code}</script>" for code in res.js_raw)


class BokehJS:
    """Displays the BokehJS loader (``<script>`` tags) as an output."""

    def __init__(self, html: str):
        self.html = html

    def _repr_html_(self) -> str:
        return self.html


def load_bokehjs(force: bool = False) -> BokehJS:
    """BokehJS as a displayable output; later plots in this kernel then leave it out."""
    html = _script_tags() if force or not _STATE["loaded"] or _STATE["mode"] == "server" else ""
    _STATE["loaded"] = True
    return BokehJS(html)


def figure_html(obj: Any) -> str:
    """HTML (a ``<div>`` and a ``<script>`` holding the figure's data) for a bokeh model; BokehJS is
    prepended only if this kernel has not emitted it yet (in server mode, the script tags each time,
    which cost a few hundred bytes)."""
    from bokeh.embed import components

    script, div = components(obj)
    loader = "" if _STATE["loaded"] and _STATE["mode"] == "inline" else load_bokehjs().html
    return loader + div + script
