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

from ..errors import PlanError, SchemaVersionError, shown
from .config import MethodConfig
from .jsonsafe import dumps
from .registry import get_method, method_for_config
from .selection import Selector

__all__ = ["Step", "Plan", "PLAN_SCHEMA", "current_versions", "tidy_float"]

PLAN_SCHEMA = 1
# bounds on what a plan text may hold, checked before and while it is parsed: plans are files and notebook
# cells, and a few hundred bytes must not be able to take minutes or gigabytes (YAML aliases, deep nesting)
MAX_PLAN_CHARS = 1_000_000
MAX_DEPTH = 32
MAX_STEPS = 1_000
MAX_SEED = 2**63 - 1
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


class _PlanLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags beyond plain data) that refuses aliases and bounds the nesting depth.

    Aliases are what "billion laughs" documents are made of, and a plan needs none; depth is bounded here,
    before PyYAML's recursive composer meets a 50,000-deep document.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise PlanError(f"The plan uses a YAML alias (*{str(event.anchor)[:40]}) at line {line}; plans take "
                            f"no anchors or aliases: write the value out.")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise PlanError(f"The plan nests deeper than {MAX_DEPTH} levels; a plan is a list of flat steps.")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_depth(data: Any, depth: int = 0) -> None:
    """Nesting depth of parsed JSON (json.loads has no limit of its own below the recursion limit)."""
    if depth > MAX_DEPTH:
        raise PlanError(f"The plan nests deeper than {MAX_DEPTH} levels; a plan is a list of flat steps.")
    if isinstance(data, dict):
        for v in data.values():
            _check_depth(v, depth + 1)
    elif isinstance(data, list):
        for v in data:
            _check_depth(v, depth + 1)


def _text(value: Any, limit: int = 100) -> str:
    """``str(value)`` cut to ``limit`` characters (an int of 5,000 digits cannot even be turned into text)."""
    if isinstance(value, str):
        return value[:limit]
    return shown(value, limit) if not isinstance(value, (int, float)) or abs(value) < 10**limit else "<big number>"


def _check_size(text: Any) -> None:
    if not isinstance(text, str):
        raise PlanError(f"A plan must be text (YAML or JSON); got a {type(text).__name__}.")
    if len(text) > MAX_PLAN_CHARS:
        raise PlanError(f"The plan is {len(text):,} characters long, more than the {MAX_PLAN_CHARS:,} a plan may "
                        f"have; a plan is a short list of steps.")


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
            raise PlanError(f"Plan {where} must be a mapping with a 'method' key; got {shown(data)}.")
        if "method" not in data:
            raise PlanError(f"Plan {where} has no 'method' key; add e.g. 'method: prune'.")
        if not isinstance(data["method"], str) or len(data["method"]) > 100:
            raise PlanError(f"Plan {where}'s 'method' must be a method name such as 'prune'; got "
                            f"{shown(data['method'])}.")
        method = get_method(data["method"])
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
                close = difflib.get_close_matches(str(key)[:100], fields + list(_SELECTOR_KEYS), n=1, cutoff=0.75)
                if close:
                    raise PlanError(
                        f"Plan {where} ({method.name}) has an unknown key {shown(key)}; did you mean {close[0]!r}?"
                    )
                warnings.warn(
                    f"Plan {where} ({method.name}): ignoring unknown key {shown(key)} "
                    f"(known: {', '.join(fields + list(_SELECTOR_KEYS))}).",
                    stacklevel=3,
                )
        for key, value in selector.items():
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or len(items) > 10_000 or not all(
                    isinstance(v, str) and len(v) <= 1000 for v in items):
                raise PlanError(f"Plan {where}'s {key!r} must be a layer name or a list of them (at most 10,000, "
                                f"each at most 1,000 characters); got {shown(value)}.")
        try:
            return cls(method.config_cls(**params), Selector.from_dict(selector))
        except TypeError as exc:  # a value of a type the config cannot take at all
            raise PlanError(f"Plan {where} ({method.name}): {str(exc)[:200]}.") from None


@dataclasses.dataclass(frozen=True)
class Plan:
    """Ordered compression steps, a seed, and the versions the plan was made with."""

    steps: tuple[Step, ...] = ()
    seed: int = 0
    versions: dict[str, str] = dataclasses.field(default_factory=current_versions, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise PlanError(f"The plan's 'seed' must be an int in [0, 2**63 - 1]. Got {shown(self.seed)} instead.")

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
            raise PlanError(f"The plan's {_SCHEMA_KEY!r} must be an int. Got {shown(schema)} instead.")
        if schema > PLAN_SCHEMA:
            raise SchemaVersionError(
                f"This plan uses schema {shown(schema, 20)}, newer than this jupyter_compress understands "
                f"({PLAN_SCHEMA}); upgrade jupyter_compress to read it."
            )
        for key in data:
            if key not in _TOP_KEYS:
                warnings.warn(f"Ignoring unknown plan key {shown(key)} (known: {', '.join(_TOP_KEYS)}).",
                              stacklevel=3)
        steps = data.get("steps", [])
        if not isinstance(steps, list):
            raise PlanError(f"The plan's 'steps' must be a list. Got {shown(steps)} instead.")
        if len(steps) > MAX_STEPS:
            raise PlanError(f"The plan has {len(steps):,} steps, more than the {MAX_STEPS:,} a plan may have.")
        versions = data.get("versions") or {}
        if not isinstance(versions, dict):
            raise PlanError(f"The plan's 'versions' must be a mapping. Got {shown(versions)} instead.")
        versions = {_text(k): _text(v) for k, v in list(versions.items())[:32]}
        return cls(
            tuple(Step.from_dict(s, i) for i, s in enumerate(steps)),
            seed=data.get("seed", 0),
            versions=versions,
        )

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(_tidy(self.to_dict()), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        _check_size(text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"The plan is not valid JSON: {str(exc)[:120]}.") from None
        except (RecursionError, ValueError) as exc:  # nesting past the interpreter's limit; a 5,000-digit int
            raise PlanError(f"The plan cannot be read as JSON ({type(exc).__name__}: {str(exc)[:80]}).") from None
        _check_depth(data)
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_tidy(self.to_dict()), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_yaml(cls, text: str) -> Plan:
        _check_size(text)
        loader = None
        try:
            loader = _PlanLoader(text)  # reading starts here: control characters are refused by the reader
            data = loader.get_single_data()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = str(getattr(exc, "problem", None) or "syntax error")[:120]
            raise PlanError(f"The plan is not valid YAML{where}: {problem}.") from None
        except (RecursionError, ValueError, OverflowError) as exc:  # e.g. an int of more than 4,300 digits
            if isinstance(exc, PlanError):
                raise
            raise PlanError(f"The plan cannot be read ({type(exc).__name__}: {str(exc)[:80]}).") from None
        finally:
            if loader is not None:
                loader.dispose()
        if data is None:
            raise PlanError("The plan is empty; give at least one step, e.g. 'steps: [{method: prune, amount: 0.5}]'.")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str) -> Plan:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read(MAX_PLAN_CHARS + 1)
        except UnicodeDecodeError:
            raise PlanError(f"{str(path)[:200]}: not a text file (a plan is YAML or JSON text).") from None
        return cls.from_yaml(text)  # JSON is read by the YAML loader as well

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
