"""Public verbs whose results show figures: the strategy layer measures and draws nothing, the plotting layer
draws and measures nothing, and this thin layer above both gives users one call that does the two.

``import jupyter_compress`` stays light: plotting (bokeh) is imported when a verb runs, and a missing bokeh
leaves the table alone.
"""

from __future__ import annotations

import functools

from .strategy.compare import compare as _measure

__all__ = ["compare"]


@functools.wraps(_measure)
def compare(*args, **kwargs):
    table = _measure(*args, **kwargs)
    try:
        from .plotting import attach_comparison_plot
    except ImportError:  # bokeh is optional: the table stands alone
        return table
    return attach_comparison_plot(table)


compare.__doc__ = (_measure.__doc__ or "") + (
    "\n\n    With bokeh installed, the table's HTML view also shows the Pareto plot (bytes kept against quality).")
