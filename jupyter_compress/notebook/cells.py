"""Ask the notebook frontend to insert a code cell below a given cell (the labextension's protocol).

The kernel opens a comm on ``jupyter_compress.cells`` with ``{code, tag, anchor_cell_id}``; the
extension inserts the cell directly below the anchor cell in the notebook that owns this kernel,
replacing an earlier generated cell with the same tag, and answers ``{ok: true, cell_id}`` or
``{ok: false, reason}``. No extension (VS Code, nbclient, classic tools) means a closed comm or no
answer: the request then resolves to False and the caller falls back (e.g. shows the code to copy).

Why the ack needs care: while a cell (or a widget callback) runs, ipykernel does not read further
shell messages on its main thread, and the ack comes back as a shell comm message. On ipykernels
with subshells (7.x), the ack of a blocking :func:`insert_cell_below` is routed to a private
subshell thread, which reads it while the caller waits. Elsewhere use :func:`request_cell_below`
with ``on_done`` (resolved once the kernel reads the ack) instead of blocking.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["COMM_TARGET", "CellRequest", "current_cell_id", "in_terminal", "request_cell_below",
           "insert_cell_below", "TUNE_TERMINAL_HINT"]

COMM_TARGET = "jupyter_compress.cells"
TUNE_TERMINAL_HINT = ("%compress --tune needs a notebook (ipywidgets): open the notebook in JupyterLab or "
                      "Notebook 7, or write the plan as a cell with %compress MODEL --prune 0.5 ... --emit-config")


def _kernel() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None)


def in_terminal(shell: Any = None) -> bool:
    """True in a terminal IPython (``ipython``, ``ipython -c``): no kernel, so no widget front end.

    A kernel's shell, or a plain ``InteractiveShell`` (tests, embedding), is not a terminal."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            return False
        shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is not None:
        return False
    try:
        from IPython.terminal.interactiveshell import TerminalInteractiveShell
    except ImportError:  # pragma: no cover - prompt_toolkit missing: no terminal shell either
        return False
    return isinstance(shell, TerminalInteractiveShell)


def current_cell_id() -> str | None:
    """The id of the notebook cell whose execution is running now (JupyterLab / Notebook 7 send it
    in the execute request's metadata as ``cellId``), or None outside such a request (e.g. inside a
    widget callback: capture it when the widget is built)."""
    kernel = _kernel()
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # older ipykernel: get_parent() takes no channel
        parent = kernel.get_parent()
    metadata = (parent or {}).get("metadata") or {}
    cell_id = metadata.get("cellId")
    return cell_id if isinstance(cell_id, str) and cell_id else None


class CellRequest:
    """One insertion request; resolves once: acknowledged, refused, closed, or timed out."""

    def __init__(self, code: str, tag: str, anchor_cell_id: str | None):
        self.code, self.tag, self.anchor_cell_id = code, tag, anchor_cell_id
        self.ok: bool | None = None
        self.cell_id: str | None = None
        self.reason: str | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[CellRequest], None]] = []

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def add_done_callback(self, fn: Callable[[CellRequest], None]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until resolved (or ``timeout``); True only if the frontend inserted the cell."""
        self._event.wait(timeout)
        return bool(self.ok)

    def _resolve(self, ok: bool, cell_id: str | None = None, reason: str | None = None) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.ok, self.cell_id, self.reason = ok, cell_id, reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def __repr__(self) -> str:
        state = "pending" if not self.done else ("inserted " + str(self.cell_id) if self.ok else self.reason)
        return f"CellRequest(tag={self.tag!r}, {state})"


_subshells: dict[int, str] = {}


def _ack_subshell(kernel: Any, timeout: float = 5.0) -> str | None:
    """A private subshell whose thread reads our acks while the main thread blocks (ipykernel 7.x).

    Uses ipykernel internals, so every step is feature-checked; None means "not possible here"."""
    if id(kernel) in _subshells:
        return _subshells[id(kernel)]
    thread = getattr(kernel, "shell_channel_thread", None)
    manager = getattr(thread, "manager", None)
    if not getattr(kernel, "_supports_kernel_subshells", False) or not hasattr(manager, "_create_subshell"):
        return None
    made: dict[str, Any] = {}
    ready = threading.Event()

    def create() -> None:
        try:
            made["id"] = manager._create_subshell()
        except Exception as err:  # noqa: BLE001 - any failure means "cannot route", never an error
            made["error"] = err
        ready.set()

    thread.io_loop.add_callback(create)
    if not ready.wait(timeout) or "id" not in made:
        return None
    _subshells[id(kernel)] = made["id"]
    return made["id"]


def request_cell_below(code: str, tag: str = "", anchor_cell_id: str | None = None, *, timeout: float = 5.0,
                       on_done: Callable[[CellRequest], None] | None = None,
                       _route_ack: bool = False) -> CellRequest:
    """Ask the frontend to insert ``code`` below ``anchor_cell_id`` (default: the running cell).

    Returns at once; the request resolves when the frontend answers, closes the comm, or after
    ``timeout`` seconds without an answer (then the comm is closed). ``on_done(request)`` runs then.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a str; got {type(code).__name__}.")
    request = CellRequest(code, tag or "", anchor_cell_id or current_cell_id())
    if on_done is not None:
        request.add_done_callback(on_done)
    kernel = _kernel()
    if kernel is None:
        request._resolve(False, reason="not running in a Jupyter kernel")
        return request
    from comm import create_comm

    subshell = _ack_subshell(kernel) if _route_ack else None
    data = {"code": code, "tag": request.tag, "anchor_cell_id": request.anchor_cell_id}

    def on_msg(msg: dict[str, Any]) -> None:
        answer = msg.get("content", {}).get("data") or {}
        if answer.get("ok") is True:
            request._resolve(True, cell_id=answer.get("cell_id"))
        else:
            request._resolve(False, reason=str(answer.get("reason") or "the frontend refused the cell"))

    def on_close(msg: dict[str, Any]) -> None:
        request._resolve(False, reason="the frontend closed the comm without an answer (no jupyter-compress "
                                       "extension there)")

    # Made closed, then opened once the callbacks (and the ack route) are in place: a fast frontend
    # may answer before create_comm(data=...) would have returned.
    comm = create_comm(target_name=COMM_TARGET, primary=False)
    comm.primary = True
    comm._closed = True
    comm.on_msg(on_msg)
    comm.on_close(on_close)
    if subshell is not None:
        # ipykernel 7's shell channel thread asks the comm where to send its replies
        comm._reply_subshell_for = lambda _data, _default: subshell
    comm.open(data=data)

    def expire() -> None:
        if not request.done:
            request._resolve(False, reason=f"no answer from the frontend within {timeout:g} s")
            try:
                comm.close()
            except Exception:  # noqa: BLE001 - the kernel may be shutting down; the result stands
                pass

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    request.add_done_callback(lambda _: timer.cancel())
    return request


def insert_cell_below(code: str, tag: str = "", anchor_cell_id: str | None = None, timeout: float = 5.0) -> bool:
    """Insert ``code`` as a cell below ``anchor_cell_id`` (default: the running cell) and wait.

    True when the extension inserted it; False (promptly: at most ``timeout`` seconds) when no
    extension answered or it refused, so the caller can fall back, e.g. print the code to copy.
    """
    request = request_cell_below(code, tag, anchor_cell_id, timeout=timeout, _route_ack=True)
    return request.wait(timeout + 1.0)
