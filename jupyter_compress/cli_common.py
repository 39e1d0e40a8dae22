"""What every part of the command line shares: exit codes, the two error kinds, and short quoting."""

from __future__ import annotations

from typing import Any

from .errors import CompressError
from .errors import one_line as _one_line

__all__ = ["EXIT_OK", "EXIT_CROSSED", "EXIT_USAGE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_CODES_HELP",
           "UsageError", "UserCodeError", "short", "brief"]

EXIT_OK, EXIT_CROSSED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES_HELP = """\
exit codes:
  0    ok: every threshold holds (validate: the plan is valid)
  1    a threshold is crossed (a NaN metric crosses any threshold on it)
  2    usage or input error: arguments, thresholds, plan file, --model/--eval/--data/--example/--train
       functions (not importable, or raised), --weights file, --out folder
  3    internal error in jupyter-compress: rerun with --debug and report it
  130  interrupted (Ctrl-C)
errors are one line on stderr starting 'jupyter-compress: '; --debug adds the traceback."""

QUOTE = 80  # longest user value quoted in a message
_BRIEF = 300  # longest exception text quoted in a message


class UsageError(CompressError):
    """A command-line or input mistake: exit code 2."""


class UserCodeError(CompressError):
    """An operator's function (``--model``, ``--eval``, ``--data``, ``--example``, ``--train``) raised: exit 2."""


def short(value: Any, limit: int = QUOTE) -> str:
    """``repr`` of ``str(value)``, cut to ``limit`` characters (a long value is shown by its prefix)."""
    text = str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def brief(exc: BaseException, limit: int = _BRIEF) -> str:
    """``Type: message`` on one line (whitespace collapsed), at most ``limit`` characters."""
    message = _one_line(str(exc), limit)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
