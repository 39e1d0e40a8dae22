"""The operator's functions, named on the command line as ``package.module:name`` (``--model``, ``--eval``,
``--data``, ``--example``, ``--train``): resolved, checked, and wrapped so whatever they raise is one line.

Only the command line names them: a plan file never causes an import (it names a training function by NAME,
and ``--train NAME=package.module:function`` gives it)."""

from __future__ import annotations

import functools
import pkgutil
import re
import sys
from collections.abc import Callable
from typing import Any

from .cli_common import UsageError, UserCodeError, brief, short

__all__ = ["resolve_object", "guarded", "resolve_callable", "value_of", "parse_train", "resolve_train"]

# pkgutil.resolve_name's 'package.module:name' form, checked first so that a ValueError (or any other
# exception) it raises afterwards comes from the operator's module, never from the spec's form
_SPEC = re.compile(r"(?!\d)\w+(\.(?!\d)\w+)*:(?!\d)\w+(\.(?!\d)\w+)*")


def resolve_object(spec: str, what: str) -> Any:
    """``pkg.module:attr.path`` -> the object (by :func:`pkgutil.resolve_name`); a one-line UsageError
    naming the spec otherwise.

    ``what`` is the option without dashes (``model``, ``eval``, ...). An exception raised while importing
    the module (the operator's code) is a UserCodeError: exit 2 as well."""
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr or not _SPEC.fullmatch(str(spec)):
        raise UsageError(f"--{what} must look like 'package.module:name'; got {short(spec)}.")
    try:
        return pkgutil.resolve_name(str(spec))
    except (Exception, SystemExit) as exc:
        module = sys.modules.get(module_name)
        if module is not None:  # imported: an attribute is missing (or raised when read)
            obj: Any = module
            for part in attr.split("."):
                try:
                    obj = getattr(obj, part)
                except Exception:
                    raise UsageError(f"--{what} {short(spec)}: {short(module_name)} has no attribute "
                                     f"{short(part)}.") from exc
            raise  # pragma: no cover - resolve_name failed, yet every attribute reads now
        if isinstance(exc, ImportError):
            raise UsageError(f"--{what} {short(spec)}: cannot import {short(module_name)} ({brief(exc)}); is its "
                             f"folder on PYTHONPATH?") from exc
        raise UserCodeError(f"--{what} {short(spec)}: importing {short(module_name)} raised {brief(exc)}") from exc


def guarded(fn: Callable, flag: str) -> Callable:
    """``fn`` whose exceptions (and ``sys.exit``) become a one-line UserCodeError naming ``flag``."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserCodeError:
            raise
        except (Exception, SystemExit) as exc:
            raise UserCodeError(f"{flag} raised {brief(exc)}") from exc

    return call


def resolve_callable(spec: str, what: str) -> Callable:
    fn = resolve_object(spec, what)
    if not callable(fn):
        raise UsageError(f"--{what} {short(spec)} is a {type(fn).__name__}, not a function.")
    return guarded(fn, f"--{what} {short(spec)}")


def value_of(spec: str, what: str) -> Any:
    """Data or example inputs: the object named, or what it returns when it is a function."""
    obj = resolve_object(spec, what)
    if callable(obj) and not hasattr(obj, "forward"):
        return guarded(obj, f"--{what} {short(spec)}")()
    return obj


def parse_train(specs: list[str] | None) -> dict[str, str]:
    """``['NAME=pkg.mod:fn', 'pkg.mod:fn']`` -> ``{'NAME': 'pkg.mod:fn', 'pkg.mod:fn': 'pkg.mod:fn'}``."""
    out: dict[str, str] = {}
    for text in specs or ():
        name, sep, spec = text.partition("=")
        if not sep:
            name, spec = text, text
        name, spec = name.strip(), spec.strip()
        if not name or not spec:
            raise UsageError(f"--train must look like NAME=package.module:function or package.module:function; "
                             f"got {short(text)}.")
        if name in out:
            raise UsageError(f"--train {short(name)} is given twice; give each training function once.")
        out[name] = spec
    return out


def resolve_train(specs: dict[str, str]) -> dict[str, Callable]:
    """The ``--train`` functions by NAME, each guarded (what it raises is a one-line UserCodeError)."""
    functions = {}
    for name, spec in specs.items():
        fn = resolve_object(spec, "train")
        if not callable(fn):
            raise UsageError(f"--train {short(name)}: {short(spec)} is a {type(fn).__name__}, not a function.")
        functions[name] = guarded(fn, f"--train {short(name)}")
    return functions
