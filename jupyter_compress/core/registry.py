"""The method registry: one module per method plus one ``register_method`` call.

A :class:`Method` declares everything callers need to know about it (its stage in the canonical step
order, what it requires, how a step is pinned for replay, the magic option that selects it, its panel
controls, how it is swept and compared), so the magics, the panel, the strategy layer, io and the CLI
read declarations and never name a method. Adding a method is one module and one registration.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ..errors import UnknownMethodError
from .config import MethodConfig

__all__ = ["Method", "MethodResult", "MagicOption", "register_method", "get_method", "list_methods", "method_names",
           "method_for_config", "methods_in_order", "unregister_method", "STAGES", "REQUIREMENTS"]

# The canonical order steps run in: structure first (it changes the shapes later steps see), then
# factorisation, then sparsity inside the remaining weights, then precision (prune first, then quantize),
# then recovery training against the original, then the runtime that serves the result (its graphs are final).
STAGES = {"structure": 10, "factorization": 20, "sparsity": 30, "precision": 40, "recovery": 50, "serving": 60}
# What a method may need from the caller: traced example inputs, data (inputs), labels, a training function,
# or inputs to calibrate on (data, or at least the example inputs in a notebook).
REQUIREMENTS = ("example_inputs", "data", "labels", "train", "calibration")


@dataclasses.dataclass
class MethodResult:
    """What an apply function returns: new modules by layer name, report rows and notes.

    Apply functions never mutate the modules of the model they receive; they
    build replacements, and the core swaps them in (so failures roll back cleanly).
    """

    replacements: dict[str, nn.Module]
    rows: list[Any]
    notes: list[str] = dataclasses.field(default_factory=list)
    # config fields the method resolved on this run from measurements (e.g. which route was fastest): the
    # report's plan records the step with them, so replaying it repeats the choice without measuring again
    pinned: dict[str, Any] = dataclasses.field(default_factory=dict)


ApplyFn = Callable[[nn.Module, list[str], MethodConfig, Any], MethodResult]


def _set_dial(field: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {field: value}


@dataclasses.dataclass(frozen=True)
class MagicOption:
    """How a ``%compress`` line selects a method: ``--flag VALUE``.

    ``parse`` turns the text into a value (raising ``ValueError`` with a message naming it) and ``build``
    the value into config fields. Several methods may share one flag through ``choice``: ``--quantize
    int8`` picks the method whose option has ``choice="int8"`` (``fields`` are its fixed config fields).
    ``const`` is the value when the flag is given alone (the option's value is then optional).
    """

    flag: str
    metavar: str = "VALUE"
    parse: Callable[[str], Any] | None = None
    build: Callable[[Any], dict[str, Any]] | None = None
    help: str = ""
    const: Any = None
    choice: str | None = None
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    help_field: str | None = None  # the config field whose help (rule, default) the option's help quotes


@dataclasses.dataclass(frozen=True, eq=False)  # one object per registered method: compared (and hashed) by identity
class Method:
    """A registered method and its declarations (see the module docstring)."""

    name: str
    config_cls: type[MethodConfig]
    apply: ApplyFn
    supported: tuple[type, ...]
    family: str
    help: str
    aliases: tuple[str, ...] = ()
    # the apply function hands each layer over as soon as it is made (methods._common.hand_over), reading
    # only layers it has not handed over yet: the core swaps it in at once, so a run holds one layer's work
    streams: bool = False
    stage: str = "sparsity"
    order: int = 0  # tie-break within a stage (then the name)
    requires: frozenset[str] = frozenset()
    # the config field a sweep varies, a per-layer override sets and a bare magic option fills
    dial: str | None = None
    options: tuple[MagicOption, ...] = ()
    controls: tuple[str, ...] | None = None  # config fields the panel shows (None: all of them)
    in_panel: bool = True
    whole_model: bool = False  # trains or rewrites the model as a whole: not swept, probed or compared per layer
    sweep: bool = True  # joins default sensitivity sweeps and the advisor's probes
    probe: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # settings of a one-shot probe
    # False: the step changes weight values only (recovery training): a load does not replay it, the saved
    # weights hold its result
    changes_modules: bool = True
    function_fields: tuple[str, ...] = ()  # config fields that name a user function (never imported)
    # (model, candidate layer names, example inputs) -> the units that must change together
    units: Callable[[nn.Module, list[str], Any], list[list[str]]] | None = None
    # (step as a dict, this step's report rows) -> the step pinned so any weights replay the same shapes
    pin: Callable[[dict[str, Any], list[Any]], dict[str, Any]] | None = None
    # for compare: (label, (model, budget, example_inputs, data) -> configs, or a string saying why not)
    compare: tuple[str, Callable[..., Any]] | None = None
    # (config) -> whether the step replaces the whole model (a runtime serving it as one graph): load then
    # replays the plan on a copy and returns what it built
    replaces_model: Callable[[MethodConfig], bool] | None = None
    # for the panel's instant preview: (config, model, layers) -> {layer: (analysis, value)} or None
    preview: Callable[[MethodConfig, nn.Module, list[str]], dict[str, tuple[str, Any]] | None] | None = None

    @property
    def needs_data(self) -> bool:
        return bool(self.requires)

    @property
    def stage_index(self) -> tuple[int, int, str]:
        return STAGES[self.stage], self.order, self.name

    def needs(self, config: MethodConfig | None = None) -> frozenset[str]:
        """What a step with ``config`` requires: the method's own needs plus the config's (a Taylor
        criterion needs data)."""
        extra = config.requirements() if config is not None else frozenset()
        return frozenset(self.requires) | frozenset(extra)

    def supported_for(self, config: MethodConfig | None = None) -> tuple[type, ...]:
        """The layer types a step with ``config`` works on: the declared ones plus the config's opt-ins."""
        extra = config.extra_layer_types() if config is not None else ()
        return tuple(self.supported) + tuple(t for t in extra if t not in self.supported)

    def magic_options(self) -> tuple[MagicOption, ...]:
        """The options with their parse and build filled in from the dial."""
        out = []
        for option in self.options:
            build = option.build
            if build is None:
                build = _set_dial(self.dial) if option.choice is None and self.dial else (lambda value: {})
            out.append(dataclasses.replace(option, build=build, parse=option.parse or (lambda text: text),
                                           help_field=option.help_field or (None if option.choice else self.dial)))
        return tuple(out)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "help": self.help,
            "needs_data": self.needs_data,
            "requires": sorted(self.requires),
            "stage": self.stage,
            "options": sorted({o.flag + (f" {o.choice}" if o.choice else "") for o in self.options}),
            "layers": [t.__name__ for t in self.supported],
            "config": self.config_cls.__name__,
            "parameters": self.config_cls.describe_fields(),
        }


_REGISTRY: dict[str, Method] = {}
_ALIASES: dict[str, str] = {}
_BY_CONFIG: dict[type, Method] = {}


def register_method(name: str, config_cls: type[MethodConfig], *, supported: Sequence[type], family: str, help: str,
                    aliases: Sequence[str] = (), requires: Sequence[str] = (), **declarations: Any
                    ) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator registering ``apply(model, layer_names, config, ctx) -> MethodResult``; ``declarations``
    are the :class:`Method` fields (stage, dial, options, controls, units, pin, compare, ...)."""
    unknown = set(requires) - set(REQUIREMENTS)
    if unknown:
        raise ValueError(f"method {name!r}: unknown requirements {sorted(unknown)}; use {REQUIREMENTS}")
    if declarations.get("stage", "sparsity") not in STAGES:
        raise ValueError(f"method {name!r}: stage must be one of {list(STAGES)}")

    def decorator(fn: ApplyFn) -> ApplyFn:
        if name in _REGISTRY or name in _ALIASES or config_cls in _BY_CONFIG:
            raise ValueError(f"method {name!r} (or its config {config_cls.__name__}) is already registered")
        method = Method(name, config_cls, fn, tuple(supported), family, help, tuple(aliases),
                        requires=frozenset(requires), **declarations)
        taken = {(o.flag, o.choice) for m in _REGISTRY.values() for o in m.options}
        clash = [o.flag for o in method.options if (o.flag, o.choice) in taken]
        if clash:
            raise ValueError(f"method {name!r}: option {clash[0]} is already another method's")
        config_cls.method = name
        _REGISTRY[name] = method
        _BY_CONFIG[config_cls] = method
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorator


def unregister_method(name: str) -> None:
    """Remove a method (tests register toy methods and take them away again)."""
    method = _REGISTRY.pop(name)
    _BY_CONFIG.pop(method.config_cls, None)
    for alias in method.aliases:
        _ALIASES.pop(alias, None)


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def methods_in_order() -> list[Method]:
    """Every method in the canonical step order."""
    return sorted(_REGISTRY.values(), key=lambda m: m.stage_index)


def get_method(name: str) -> Method:
    key = _ALIASES.get(name, name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(str(name), list(_REGISTRY) + list(_ALIASES), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownMethodError(f"Unknown method {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}.")


def method_for_config(config: MethodConfig) -> Method:
    method = _BY_CONFIG.get(type(config))
    if method is None:
        raise UnknownMethodError(f"{type(config).__name__} is not the config of any registered method.")
    return method


def list_methods() -> list[dict[str, Any]]:
    """Every registered method with its help, family and parameters."""
    return [get_method(n).describe() for n in method_names()]

