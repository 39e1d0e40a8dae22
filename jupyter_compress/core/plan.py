"""Plans: ordered steps (selector + method config), a seed and the versions used.

A plan round-trips losslessly through JSON and YAML (safe loading only; floats are written to 12
significant digits, as a person would write them, see :func:`tidy_float`). The
body of a generated ``%%compress`` cell *is* a plan in YAML, for example::

    jupyter_compress_plan: 1
    seed: 0
    steps:
    - method: prune
      amount: 0.5
      scope: layer
      exclude: [fc2]
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import platform
import warnings
from collections.abc import Iterable
from typing import Any

import yaml

from ..errors import PlanError, SchemaVersionError
from .config import MethodConfig
from .jsonsafe import dumps
from .registry import get_method, method_for_config
from .selection import Selector

__all__ = ["Step", "Plan", "PLAN_SCHEMA", "current_versions", "tidy_float"]

PLAN_SCHEMA = 1
_SCHEMA_KEY = "jupyter_compress_plan"
_SELECTOR_KEYS = ("layers", "types", "exclude")
_TOP_KEYS = (_SCHEMA_KEY, "seed", "versions", "steps")


def tidy_float(value: float, digits: int = 12) -> float:
    """``value`` as a person would write it: rounded to ``digits`` significant digits, so that float noise
    from arithmetic (``0.8000000000000002``, ``0.5000000000000001``) is written ``0.8`` / ``0.5``. Plans are
    serialized through this (YAML and JSON), and the tuning panel builds its configs from tidied values, so
    a plan re-read from its text equals the plan that was applied."""
    if not isinstance(value, float) or not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{digits}g}")


def _tidy(obj: Any) -> Any:
    if isinstance(obj, float):
        return tidy_float(obj)
    if isinstance(obj, dict):
        return {k: _tidy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tidy(v) for v in obj)
    return obj


def current_versions() -> dict[str, str]:
    """Versions of what decides the numbers: this package, torch, tensorly, Python."""
    import importlib.metadata as md

    import torch

    from .. import __version__

    versions = {"jupyter_compress": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
    try:
        versions["tensorly"] = md.version("tensorly")  # metadata only: does not import tensorly
    except md.PackageNotFoundError:
        pass
    return versions


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a plan: a method config applied to the layers a selector picks."""

    config: MethodConfig
    selector: Selector = dataclasses.field(default_factory=Selector)

    @property
    def method(self) -> str:
        return method_for_config(self.config).name

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **self.config.to_dict(), **self.selector.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, index: int = 0) -> Step:
        where = f"step {index + 1}"
        if not isinstance(data, dict):
            raise PlanError(f"Plan {where} must be a mapping with a 'method' key; got {data!r}.")
        if "method" not in data:
            raise PlanError(f"Plan {where} has no 'method' key; add e.g. 'method: prune'.")
        method = get_method(str(data["method"]))
        fields = method.config_cls.field_names()
        params, selector = {}, {}
        for key, value in data.items():
            if key == "method":
                continue
            if key in _SELECTOR_KEYS:
                selector[key] = value
            elif key in fields:
                params[key] = value
            else:
                close = difflib.get_close_matches(str(key), fields + list(_SELECTOR_KEYS), n=1, cutoff=0.75)
                if close:
                    raise PlanError(
                        f"Plan {where} ({method.name}) has an unknown key {key!r}; did you mean {close[0]!r}?"
                    )
                warnings.warn(
                    f"Plan {where} ({method.name}): ignoring unknown key {key!r} "
                    f"(known: {', '.join(fields + list(_SELECTOR_KEYS))}).",
                    stacklevel=3,
                )
        return cls(method.config_cls(**params), Selector.from_dict(selector))


@dataclasses.dataclass(frozen=True)
class Plan:
    """Ordered compression steps, a seed, and the versions the plan was made with."""

    steps: tuple[Step, ...] = ()
    seed: int = 0
    versions: dict[str, str] = dataclasses.field(default_factory=current_versions, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise PlanError(f"The plan's 'seed' must be an int >= 0. Got {self.seed!r} instead.")

    # -- building --------------------------------------------------------
    @classmethod
    def of(cls, *items: MethodConfig | Step, seed: int = 0) -> Plan:
        """``Plan.of(PruneConfig(amount=0.5), SVDConfig(rank=0.5))``."""
        steps = [item if isinstance(item, Step) else Step(item) for item in items]
        return cls(tuple(steps), seed=seed)

    @classmethod
    def coerce(cls, obj: Any) -> Plan:
        """A Plan from a Plan, a config, a Step, a list of them, a dict, or JSON/YAML text."""
        if isinstance(obj, Plan):
            return obj
        if isinstance(obj, (MethodConfig, Step)):
            return cls.of(obj)
        if isinstance(obj, dict):
            return cls.from_dict(obj)
        if isinstance(obj, str):
            return cls.from_yaml(obj)
        if isinstance(obj, Iterable):
            return cls.of(*obj)
        raise PlanError(
            f"Cannot make a plan from a {type(obj).__name__}; pass a Plan, a method config, a dict or YAML text."
        )

    # -- serialization ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            _SCHEMA_KEY: PLAN_SCHEMA,
            "seed": self.seed,
            "versions": dict(self.versions),
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        if not isinstance(data, dict):
            raise PlanError(f"A plan must be a mapping with a 'steps' list; got a {type(data).__name__}.")
        schema = data.get(_SCHEMA_KEY, PLAN_SCHEMA)
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise PlanError(f"The plan's {_SCHEMA_KEY!r} must be an int. Got {schema!r} instead.")
        if schema > PLAN_SCHEMA:
            raise SchemaVersionError(
                f"This plan uses schema {schema}, newer than this jupyter_compress understands "
                f"({PLAN_SCHEMA}); upgrade jupyter_compress to read it."
            )
        for key in data:
            if key not in _TOP_KEYS:
                warnings.warn(f"Ignoring unknown plan key {key!r} (known: {', '.join(_TOP_KEYS)}).", stacklevel=3)
        steps = data.get("steps", [])
        if not isinstance(steps, list):
            raise PlanError(f"The plan's 'steps' must be a list. Got {steps!r} instead.")
        versions = data.get("versions") or {}
        if not isinstance(versions, dict):
            raise PlanError(f"The plan's 'versions' must be a mapping. Got {versions!r} instead.")
        return cls(
            tuple(Step.from_dict(s, i) for i, s in enumerate(steps)),
            seed=data.get("seed", 0),
            versions={str(k): str(v) for k, v in versions.items()},
        )

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(_tidy(self.to_dict()), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"The plan is not valid JSON: {exc}.") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_tidy(self.to_dict()), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_yaml(cls, text: str) -> Plan:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise PlanError(f"The plan is not valid YAML{where}: {problem}.") from None
        if data is None:
            raise PlanError("The plan is empty; give at least one step, e.g. 'steps: [{method: prune, amount: 0.5}]'.")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str) -> Plan:
        with open(path, encoding="utf-8") as fh:
            return cls.from_yaml(fh.read())  # JSON is read by the YAML loader as well

    def save(self, path: str) -> None:
        text = self.to_json() if str(path).endswith(".json") else self.to_yaml()
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)

    def describe(self) -> str:
        return " -> ".join(
            f"{s.method}({', '.join(f'{k}={v!r}' for k, v in s.config.to_dict().items())})"
            + ("" if s.selector.is_default() else f" on {s.selector.describe()}")
            for s in self.steps
        ) or "(empty plan)"
