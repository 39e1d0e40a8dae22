"""Method configurations: frozen, keyword-only dataclasses with checked fields.

Each field is declared with :func:`param`, which carries the help text (used by
the magics' ``--help`` and later the tuning panel) and a constraint that is
checked when the config is built, so an invalid config cannot exist.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

from ..errors import InvalidConfigError, shown

__all__ = ["MethodConfig", "param", "Interval", "OneOf", "Boolean", "RankSpec", "IntAtLeast", "Text", "parse_rank"]


class Constraint:
    """A rule a field value must satisfy; ``describe`` completes 'must be ...'."""

    def check(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def normalize(self, value: Any) -> Any:
        return value


# ints from files are bounded before any use (a 400-digit int would overflow float conversions)
MAX_INT = 2**53


def _is_real(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= MAX_INT if isinstance(value, int) else math.isfinite(value)


class Interval(Constraint):
    """A real number in an interval; ``closed`` is one of '[]', '[)', '(]', '()'."""

    def __init__(self, low: float, high: float, closed: str = "[]", integer: bool = False):
        self.low, self.high, self.closed, self.integer = low, high, closed, integer

    def check(self, value: Any) -> bool:
        if not _is_real(value):
            return False
        if self.integer and not isinstance(value, int):
            return False
        lo_ok = value >= self.low if self.closed[0] == "[" else value > self.low
        hi_ok = value <= self.high if self.closed[1] == "]" else value < self.high
        return lo_ok and hi_ok

    def describe(self) -> str:
        kind = "an int" if self.integer else "a float"
        return f"{kind} in {self.closed[0]}{self.low:g}, {self.high:g}{self.closed[1]}"

    def normalize(self, value: Any) -> Any:
        return value if self.integer else float(value)


class IntAtLeast(Constraint):
    """An int in [low, high]; ``high`` bounds what a file can ask for (a loop count, a tensor order)."""

    def __init__(self, low: int, high: int = 1_000_000):
        self.low, self.high = low, high

    def check(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"an int in [{self.low}, {self.high}]"


class Boolean(Constraint):
    def check(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "True or False"


class OneOf(Constraint):
    def __init__(self, *options: Any):
        self.options = options

    def check(self, value: Any) -> bool:
        return value in self.options

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


class Text(Constraint):
    """A short printable string (from files: bounded before use)."""

    def __init__(self, max_length: int = 1000):
        self.max_length = max_length

    def check(self, value: Any) -> bool:
        return isinstance(value, str) and len(value) <= self.max_length and value.isprintable()

    def describe(self) -> str:
        return f"a printable string of at most {self.max_length} characters"


def parse_rank(value: Any) -> tuple[str, float]:
    """Classify a rank spec: ``('int', r)``, ``('fraction', f)`` or ``('energy', e)``.

    Raises ``ValueError`` when the value is not a valid rank spec.
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if 1 <= value <= MAX_INT:
            return "int", value
        raise ValueError(value)
    if isinstance(value, float):
        if math.isfinite(value) and 0.0 < value <= 1.0:
            return "fraction", value
        raise ValueError(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("energy:") and len(text) <= 40:
            energy = float(text.split(":", 1)[1])
            if 0.0 < energy <= 1.0:
                return "energy", energy
        raise ValueError(value)
    raise ValueError(value)


class RankSpec(Constraint):
    """A rank: an int >= 1, a float in (0, 1] (fraction of parameters kept), or 'energy:E'."""

    def check(self, value: Any) -> bool:
        try:
            parse_rank(value)
        except (ValueError, TypeError):
            return False
        return True

    def describe(self) -> str:
        return "an int >= 1, a float in (0, 1] (fraction of parameters to keep) or 'energy:E' with E in (0, 1]"

    def normalize(self, value: Any) -> Any:
        if isinstance(value, str):
            return "energy:" + repr(parse_rank(value)[1])
        return value


class RatioMap(Constraint):
    """None, or a mapping from layer names (or ``re:`` patterns) to fractions in [0, 1)."""

    def check(self, value: Any) -> bool:
        if value is None:
            return True
        return isinstance(value, dict) and len(value) <= 100_000 and all(
            isinstance(k, str) and 0 < len(k) <= 1000 and _is_real(v) and 0.0 <= float(v) < 1.0 for k, v in value.items())

    def describe(self) -> str:
        return "None or a mapping {layer name or 're:pattern': fraction in [0, 1)}"

    def normalize(self, value: Any) -> Any:
        return None if value is None else {str(k): float(v) for k, v in value.items()}


class ChoiceMap(Constraint):
    """None, or a mapping from module names to one of ``options`` (e.g. the route each region was measured to
    take, pinned in a plan)."""

    def __init__(self, *options: str):
        self.options = options

    def check(self, value: Any) -> bool:
        if value is None:
            return True
        return isinstance(value, dict) and len(value) <= 10_000 and all(
            isinstance(k, str) and 0 < len(k) <= 1000 and v in self.options for k, v in value.items())

    def describe(self) -> str:
        return f"None or a mapping {{module name: one of {', '.join(map(repr, self.options))}}}"

    def normalize(self, value: Any) -> Any:
        return None if value is None else {str(k): str(v) for k, v in value.items()}


def param(default: Any, *, help: str, check: Constraint | None = None, choices: Sequence[Any] | None = None):
    """Declare a config field with help text and a constraint."""
    if choices is not None:
        check = OneOf(*choices)
    return dataclasses.field(default=default, metadata={"help": help, "check": check})


@dataclasses.dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Base class of every method configuration.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)`` and declare fields
    with :func:`param`. ``method`` is the registry name, set by registration.
    """

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check: Constraint | None = f.metadata.get("check")
            value = getattr(self, f.name)
            if check is None:
                continue
            if not check.check(value):
                raise InvalidConfigError(
                    f"The {f.name!r} parameter of {type(self).__name__} must be {check.describe()}. "
                    f"Got {shown(value)} instead."
                )
            object.__setattr__(self, f.name, check.normalize(value))

    def requirements(self) -> frozenset[str]:
        """What this setting needs beyond its method's own requirements (e.g. a Taylor criterion needs data);
        names from :data:`~jupyter_compress.core.registry.REQUIREMENTS`."""
        return frozenset()

    def extra_layer_types(self) -> tuple[type, ...]:
        """Layer types this setting takes beyond its method's declared ``supported`` ones (an opt-in such as
        pruning's ``embeddings=True``): selection, replay and the left-alone note use them."""
        return ()

    # -- serialization -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        unknown = set(data) - set(cls.field_names())
        if unknown:
            raise InvalidConfigError(
                f"{cls.__name__} has no parameter {sorted(unknown)[0]!r}; "
                f"its parameters are {', '.join(cls.field_names())}."
            )
        return cls(**data)

    @classmethod
    def describe_fields(cls) -> list[dict[str, Any]]:
        """Field metadata for help texts, magics and widgets."""
        out = []
        for f in dataclasses.fields(cls):
            check = f.metadata.get("check")
            out.append(
                {
                    "name": f.name,
                    "default": f.default,
                    "help": f.metadata.get("help", ""),
                    "rule": check.describe() if check else "any value",
                    "choices": list(check.options) if isinstance(check, OneOf) else None,
                }
            )
        return out
