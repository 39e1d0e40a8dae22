"""The method registry: one module per method plus one ``register_method`` call.

No central if/elif chain: plans, magics and help texts look methods up here.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import UnknownMethodError
from .config import MethodConfig

__all__ = ["Method", "MethodResult", "register_method", "get_method", "list_methods", "method_names"]


@dataclasses.dataclass
class MethodResult:
    """What an apply function returns: new modules by layer name, report rows and notes.

    Apply functions never mutate the modules of the model they receive; they
    build replacements, and the core swaps them in (so failures roll back cleanly).
    """

    replacements: dict[str, nn.Module]
    rows: list[Any]
    notes: list[str] = dataclasses.field(default_factory=list)


ApplyFn = Callable[[nn.Module, list[str], MethodConfig, Any], MethodResult]


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfig]
    apply: ApplyFn
    supported: tuple[type, ...]
    family: str
    help: str
    needs_data: bool = False
    aliases: tuple[str, ...] = ()
    # the apply function hands each layer over as soon as it is made (methods._common.hand_over), reading
    # only layers it has not handed over yet: the core swaps it in at once, so a run holds one layer's work
    streams: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "help": self.help,
            "needs_data": self.needs_data,
            "layers": [t.__name__ for t in self.supported],
            "config": self.config_cls.__name__,
            "parameters": self.config_cls.describe_fields(),
        }


_REGISTRY: dict[str, Method] = {}
_ALIASES: dict[str, str] = {}


def register_method(
    name: str,
    config_cls: type[MethodConfig],
    *,
    supported: Sequence[type],
    family: str,
    help: str,
    needs_data: bool = False,
    aliases: Sequence[str] = (),
    streams: bool = False,
) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator registering ``apply(model, layer_names, config, ctx) -> MethodResult``."""

    def decorator(fn: ApplyFn) -> ApplyFn:
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"method {name!r} is already registered")
        config_cls.method = name
        _REGISTRY[name] = Method(name, config_cls, fn, tuple(supported), family, help, needs_data, tuple(aliases),
                                 streams)
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorator


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    key = _ALIASES.get(name, name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(str(name), list(_REGISTRY) + list(_ALIASES), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownMethodError(f"Unknown method {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}.")


def method_for_config(config: MethodConfig) -> Method:
    for method in _REGISTRY.values():
        if type(config) is method.config_cls:
            return method
    raise UnknownMethodError(f"{type(config).__name__} is not the config of any registered method.")


def list_methods() -> list[dict[str, Any]]:
    """Every registered method with its help, family and parameters."""
    return [get_method(n).describe() for n in method_names()]
