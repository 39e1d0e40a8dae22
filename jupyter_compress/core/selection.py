"""Which layers a step acts on.

A :class:`Selector` holds layer patterns (exact dotted names or ``re:`` regexes
matched against the whole name), module types, and exclusions. Layers are always
named by their dotted path (strings), never by module object.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import LayerNotSupportedError, SelectorError, shown

__all__ = ["Selector", "resolve_type"]


def resolve_type(spec: str | type) -> type:
    """Turn 'Linear', 'nn.Linear', 'torch.nn.Linear' or 'pkg.mod.Class' into a class.

    A dotted name is looked up among the modules already imported (``sys.modules``), never imported: a
    plan is text from a file or a notebook cell, and naming a module in it must not run that module's code.
    """
    if isinstance(spec, type):
        return spec
    name = str(spec).strip()
    shown = name if len(name) <= 80 else name[:77] + "..."
    short = name.rsplit(".", 1)[-1]
    if name.startswith(("torch.nn.", "nn.")) or "." not in name:
        cls = getattr(nn, short, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    if "." in name and len(name) <= 300:
        module_name, _, attr = name.rpartition(".")
        cls = getattr(sys.modules.get(module_name), attr, None)
        if cls is None:  # a nested class: 'pkg.mod.Outer.Inner'
            outer_module, _, outer = module_name.rpartition(".")
            cls = getattr(getattr(sys.modules.get(outer_module), outer, None), attr, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
        if module_name not in sys.modules:
            raise SelectorError(
                f"Unknown module type {shown!r} in a selector: its module is not imported, and a plan never "
                f"imports code; import it in your own code first, or use a torch.nn class name such as 'Linear'."
            )
    raise SelectorError(
        f"Unknown module type {shown!r} in a selector; use a torch.nn class name such as 'Linear' "
        f"or the full path of an imported class such as 'mypkg.layers.MyBlock'."
    )


def _type_name(cls: type) -> str:
    if getattr(nn, cls.__name__, None) is cls:
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclasses.dataclass(frozen=True)
class Selector:
    """Layers by name (``'fc1'``), regex (``'re:layer\\d\\.conv.*'``) or type, minus exclusions.

    ``layers`` empty means "every layer of a supported type". ``types`` narrows to
    module classes. ``exclude`` takes the same pattern forms as ``layers``.
    """

    layers: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("layers", "types", "exclude"):
            value = getattr(self, field)
            if isinstance(value, str):
                value = (value,)
            elif isinstance(value, type):
                value = (_type_name(value),)
            elif value is None:
                value = ()
            else:
                value = tuple(_type_name(v) if isinstance(v, type) else str(v) for v in value)
            object.__setattr__(self, field, value)
        for pattern in self.layers + self.exclude:
            if len(pattern) > 1000:
                raise SelectorError(f"The layer pattern {shown(pattern)} is {len(pattern):,} characters long; layer "
                                    f"names and patterns have at most 1,000.")
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except (re.error, OverflowError, RecursionError, ValueError) as exc:
                    raise SelectorError(f"Invalid regex {shown(pattern)} in a selector: {str(exc)[:100]}.") from None
        for t in self.types:
            resolve_type(t)

    # -- serialization -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in ("layers", "types", "exclude"):
            if getattr(self, field):
                out[field] = list(getattr(self, field))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selector:
        return cls(**{k: data[k] for k in ("layers", "types", "exclude") if k in data})

    def is_default(self) -> bool:
        return not (self.layers or self.types or self.exclude)

    # -- matching ------------------------------------------------------
    @staticmethod
    def _match(pattern: str, name: str) -> bool:
        if pattern.startswith("re:"):
            return re.fullmatch(pattern[3:], name) is not None
        return pattern == name

    def select(
        self,
        model: nn.Module,
        supported: Sequence[type],
        method: str = "this method",
    ) -> list[str]:
        """Names of the layers this selector picks among ``supported`` types.

        Exact names that do not exist, exact names of unsupported types and a
        selection that ends up empty are errors with a one-line message.
        """
        modules = dict(model.named_modules())
        names = [n for n in modules if n]
        supported = tuple(supported)
        type_filter = tuple(resolve_type(t) for t in self.types) or supported
        for pattern in self.layers + self.exclude:
            if not pattern.startswith("re:") and pattern not in modules:
                close = difflib.get_close_matches(pattern[:200], names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SelectorError(f"The model has no layer named {shown(pattern)}.{hint}")
        for pattern in self.layers:
            if not pattern.startswith("re:") and not isinstance(modules[pattern], supported):
                raise LayerNotSupportedError(
                    f"Layer {shown(pattern)} is a {type(modules[pattern]).__name__}; {method} handles "
                    f"{', '.join(t.__name__ for t in supported)}. Select another layer or method."
                )

        def wanted(name: str) -> bool:
            if self.layers and not any(self._match(p, name) for p in self.layers):
                return False
            return not any(self._match(p, name) or name.startswith(p + ".") for p in self.exclude
                           if not p.startswith("re:")) and not any(
                self._match(p, name) for p in self.exclude if p.startswith("re:"))

        picked = [
            n for n in names
            if isinstance(modules[n], supported) and isinstance(modules[n], type_filter) and wanted(n)
        ]
        if not picked:
            handles = ", ".join(t.__name__ for t in supported)
            if not any(isinstance(m, supported) for m in modules.values()):
                # not a selection mistake: the model has nothing this method works on; say what it has
                kinds = sorted({type(m).__name__ for m in modules.values()
                                if any(True for _ in m.parameters(recurse=False))})
                raise SelectorError(f"This model has no layer {method} can handle ({handles}); its layers with "
                                    f"weights are: {', '.join(kinds) or 'none'}. Choose a method for those layers "
                                    f"(%compress_methods lists them).")
            raise SelectorError(
                f"The selector {self.describe()} matches no layer that {method} can handle "
                f"({handles}); check the names with model.named_modules()."
            )
        return picked

    def describe(self) -> str:
        parts = []
        if self.layers:
            parts.append("layers=" + ",".join(self.layers))
        if self.types:
            parts.append("types=" + ",".join(self.types))
        if self.exclude:
            parts.append("exclude=" + ",".join(self.exclude))
        return "(" + "; ".join(parts) + ")" if parts else "(all layers)"

