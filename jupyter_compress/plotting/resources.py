"""Where BokehJS comes from, and turning figures into output that notebooks keep.

No CDN. The default mode ``"extension"``: outputs carry only the figures' data (bokeh JSON items) and the
jupyter-compress JupyterLab extension, which ships BokehJS, loads it once per page and draws them; a saved
notebook holds no BokehJS at all. Front ends without the extension show the report's text and tables and
a line saying the plots need it. ``"inline"`` puts BokehJS (from the installed bokeh package) into the
*first* plot output of the kernel session only (about 1.7 MB in the notebook); later plots carry just
their data. ``"server"`` points at a local URL serving BokehJS (e.g. a ``bokeh serve`` or any static
server holding ``bokeh.util.paths.bokehjs_path()``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["configure", "resources_mode", "load_bokehjs", "figure_html", "figure_item", "BokehJS", "MODES"]

MODES = ("extension", "inline", "server")
_STATE: dict[str, Any] = {"mode": "extension", "root_url": None, "loaded": False}
_COMPONENTS = ["bokeh", "bokeh-widgets"]  # core and the layer Select; no tables, no GL


def configure(mode: str = "extension", root_url: str | None = None) -> None:
    """``configure("extension")`` (default: the JupyterLab extension's BokehJS), ``configure("inline")``
    (BokehJS in the notebook, once) or ``configure("server", root_url="http://host:port/")``.

    Repeating the current setting (the magic does on every run) keeps BokehJS counted as emitted."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'extension', 'inline' or 'server'; got {mode!r}.")
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
    """BokehJS as a displayable output; later plots in this kernel then leave it out. In ``"extension"``
    mode it is empty (the extension loads BokehJS into the page) unless ``force``."""
    if _STATE["mode"] == "extension":
        return BokehJS(_script_tags() if force else "")
    html = _script_tags() if force or not _STATE["loaded"] or _STATE["mode"] == "server" else ""
    _STATE["loaded"] = True
    return BokehJS(html)


def figure_item(obj: Any) -> dict[str, Any]:
    """The figure's data as a bokeh JSON item (no BokehJS), what the extension's report renderer draws."""
    from bokeh.embed import json_item

    return json_item(obj)


# Draws a JSON item with the BokehJS the jupyter-compress extension loads (window.jupyterCompressBokeh); in
# a front end without the extension (or an untrusted output, whose scripts do not run) the text stays.
_ITEM_SCRIPT = """<div id="{id}" class="jupyter-compress-bokeh-item">(interactive plot: shown by the jupyter-compress
JupyterLab extension, or with %config CompressMagics.bokeh_resources = 'inline')</div>
<script type="text/javascript">(function () {{
  var el = document.getElementById("{id}"), load = window.jupyterCompressBokeh;
  if (!el || !load) {{ return; }}
  load().then(function (Bokeh) {{ el.textContent = ""; return Bokeh.embed.embed_item({item}, el); }})
    .catch(function (e) {{ el.textContent = "plot not drawn: " + e; }});
}})();</script>"""


def figure_html(obj: Any) -> str:
    """HTML for a bokeh model. ``"extension"`` mode: a ``<div>`` and a ``<script>`` holding the figure's
    data, drawn with the extension's BokehJS (no BokehJS in the output). ``"inline"``: BokehJS is
    prepended only if this kernel has not emitted it yet; ``"server"``: the script tags each time, which
    cost a few hundred bytes."""
    if _STATE["mode"] == "extension":
        import json
        import uuid

        item = json.dumps(figure_item(obj)).replace("</", "<\\/")  # safe inside <script>
        return _ITEM_SCRIPT.format(id=f"jc-bokeh-{uuid.uuid4().hex}", item=item)
    from bokeh.embed import components

    script, div = components(obj)
    loader = "" if _STATE["loaded"] and _STATE["mode"] == "inline" else load_bokehjs().html
    return loader + div + script
