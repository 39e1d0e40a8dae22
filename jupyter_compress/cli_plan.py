"""The plan file of ``run`` / ``validate``: read, checked, and matched with the functions it names."""

from __future__ import annotations

from pathlib import Path

from .cli_common import QUOTE, UsageError, brief, short
from .core.plan import Plan
from .core.registry import get_method
from .errors import PlanError
from .errors import one_line as _one_line

__all__ = ["load_plan", "plan_functions", "check_functions"]


def load_plan(path: str) -> Plan:
    """The plan in ``path``, with every check ``run`` makes on the plan alone (``validate`` runs exactly
    these): readable UTF-8 text, valid YAML/JSON (safe loading: no ``!!python`` tags), known methods, valid
    config values and selectors, at least one step."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"plan file {short(path)} is not UTF-8 text; give a YAML or JSON plan.") from None
    except OSError as exc:
        raise UsageError(f"cannot read plan file {short(path)}: {exc.strerror or brief(exc)}.") from None
    plan = Plan.from_yaml(text)  # JSON is read by the YAML loader as well
    if not plan.steps:
        raise PlanError(f"plan file {short(path)} has no steps; add at least one, e.g. "
                        f"'steps: [{{method: prune, amount: 0.5}}]'.")
    return plan


def _named_functions(plan: Plan) -> list[tuple[int, str, str, str]]:
    """``(step number, method, field, NAME)`` for every config field naming a function (the method's
    declared ``function_fields``, e.g. QAT's ``train``)."""
    out = []
    for index, step in enumerate(plan.steps):
        for field in get_method(step.method).function_fields:
            name = getattr(step.config, field, None)
            if isinstance(name, str) and name:
                out.append((index + 1, step.method, field, name))
    return out


def plan_functions(plan: Plan) -> list[tuple[int, str, str]]:
    """``(step number, method, NAME)`` for every function the plan names (a QAT step's ``train``)."""
    return [(number, method, name) for number, method, _, name in _named_functions(plan)]


def check_functions(plan: Plan, given: dict[str, str]) -> None:
    """Every function the plan names is given by a ``--train`` (``given``: NAME -> spec); else a UsageError."""
    for number, method, field, name in _named_functions(plan):
        # as the method looks it up: the NAME, or for an older plan's 'module:function' the function's name
        if name not in given and not (":" in name and name.rpartition(":")[2] in given):
            how = f"--train {name}" if ":" in name else f"--train {name}=package.module:function"
            kind = "training function" if field == "train" else f"function for {field!r}"
            raise UsageError(f"the plan's step {number} ({method}) names the {kind} {short(name)}, "
                             f"which no --train gives; add {_one_line(how, QUOTE + 40)}.")
