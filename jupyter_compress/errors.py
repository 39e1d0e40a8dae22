"""Error hierarchy.

Every error a user can cause derives from :class:`CompressError` *and* from the
builtin it is a kind of, so ``except ValueError`` keeps working (PEFT's style).
Messages are one line that names the bad value and says what to do instead.
"""

from __future__ import annotations

__all__ = [
    "shown",
    "one_line",
    "CompressError",
    "InvalidConfigError",
    "SelectorError",
    "PlanError",
    "UnknownMethodError",
    "SchemaVersionError",
    "LayerNotSupportedError",
    "NothingToRevertError",
]


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message quotes at most a short prefix of a value
    (a plan or a file can hold a 100,000-character string, and a message stays one short line)."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails (or is huge to build) is named by its type
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: object, limit: int) -> str:
    """``text`` with its whitespace (newlines included) collapsed, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CompressError(Exception):
    """Base class of every error raised by jupyter_compress."""


class InvalidConfigError(CompressError, ValueError):
    """A method configuration has a value outside its allowed range."""


class SelectorError(CompressError, ValueError):
    """A layer selector names a layer that does not exist or matches nothing."""


class PlanError(CompressError, ValueError):
    """A plan (JSON / YAML / dict) is malformed."""


class UnknownMethodError(PlanError):
    """A plan step names a method that is not registered."""


class SchemaVersionError(PlanError):
    """A plan was written by a newer version of the plan schema."""


class LayerNotSupportedError(CompressError, TypeError):
    """A layer explicitly selected is of a type the method cannot handle."""


class NothingToRevertError(CompressError, RuntimeError):
    """``revert_`` was called on a model that holds no in-place compression."""


class StoppedError(CompressError, RuntimeError):
    """The user stopped a running compression (Stop button, ``on_step`` returned False); nothing changed."""
