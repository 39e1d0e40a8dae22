"""Names a compressed model may not be bound to in a notebook: the ones IPython keeps there (history,
output caching, the shell itself), keywords, dunders, and our own ``_compress*`` results. Used by the magics'
``--as`` and the tuning panel's "as" box alike."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable

__all__ = ["IPYTHON_NAMES", "name_problem"]

# Names IPython keeps in the notebook's namespace (history, output caching, the shell itself): binding a model to
# one breaks the kernel's state. ``shell.user_ns_hidden`` adds whatever else IPython (or an extension) put there.
IPYTHON_NAMES = frozenset({"get_ipython", "In", "Out", "exit", "quit", "_", "__", "___", "_i", "_ii", "_iii", "_oh",
                           "_dh", "_ih", "_exit_code", "__builtins__", "__builtin__", "__name__", "__doc__"})
_HISTORY_NAME = re.compile(r"_i?\d+")  # _5 (output 5), _i5 (input 5)


def name_problem(name: str, hidden: Iterable[str] = ()) -> str | None:
    """Why a model must not be bound to ``name`` in the notebook (None: it may)."""
    if not name.isidentifier():
        return "is not a valid Python name"
    if keyword.iskeyword(name):
        return "is a Python keyword"
    if name in IPYTHON_NAMES or _HISTORY_NAME.fullmatch(name) or name in hidden:
        return "is a name IPython owns"
    if name.startswith("__") and name.endswith("__"):
        return "is a name Python itself uses"
    if name.startswith("_compress"):
        return "is a name jupyter_compress keeps its own results under (it starts with _compress)"
    return None
