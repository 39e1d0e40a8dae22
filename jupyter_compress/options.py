"""The ``%compress`` line's options, read from the methods' declared :class:`MagicOption` s (no IPython here):
the parser (a flag shared through ``choice``, e.g. ``--quantize MODE``, is one argument whose value picks the
method; built afresh per call, so a method registered later is an option at once), the plan, and the checks a
line passes before anything runs. Mistakes are :class:`OptionsError`; the magics make them ``UsageError`` s."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from .core.inputs import InputsError, auto_example, is_sentences
from .core.plan import Plan, Step
from .core.registry import MagicOption, Method, method_for_config, methods_in_order
from .core.selection import Selector
from .core.textvalues import parse_amount
from .errors import CompressError, shown

__all__ = ["OptionsError", "StepFlag", "step_flags", "build_parser", "parse_args", "plan_from_options", "check_needs",
           "refuse_conflicts", "strip_options", "method_flags", "usage_text"]

MAX_MESSAGE = 400  # characters of an error message: values quoted in it are cut to fit
# options of the --auto search, which a cell running the plan it found does not take
AUTO_OPTIONS = frozenset({"--auto", "--max-drop", "--objective"})
# what each tool does, for the messages that refuse an option it would ignore
_MODES = {"--tune": "opens the tuning panel, whose sliders choose the methods",
          "--compare": "measures every method family itself", "--auto": "searches the methods itself"}


class OptionsError(CompressError, ValueError):
    """A ``%compress`` line that cannot run as written; the message is one line, starting '%compress: '."""


class _Refused(Exception):
    """A value an option's parser refused (not a ValueError: argparse would replace its message)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit the kernel
        raise OptionsError(f"%compress: {message}. See %compress? for the options.")

    def exit(self, status: int = 0, message: str | None = None) -> None:
        raise OptionsError(message or "%compress: see %compress? for the options.")


def _field_help(config_cls, name: str) -> str:
    f = next(f for f in config_cls.describe_fields() if f["name"] == name)
    return f"{f['help']} ({f['rule']}; default {f['default']!r})"


def _and(items: list[str], word: str = "and") -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _option_field(option: MagicOption) -> str | None:
    """The config field an option sets: the declared one, else the one field its value alone builds."""
    if option.help_field or option.choice is not None or option.const is None:
        return option.help_field
    fields = option.build(option.const)
    return next(iter(fields)) if len(fields) == 1 else None


@dataclasses.dataclass(frozen=True)
class StepFlag:
    """One option that adds a plan step, with the (method, option) pairs that share it (through ``choice``)."""

    flag: str
    entries: tuple[tuple[Method, MagicOption], ...]

    dest = property(lambda self: self.flag.lstrip("-").replace("-", "_"))
    lead = property(lambda self: self.entries[0][1])
    choices = property(lambda self: {o.choice: (m, o) for m, o in self.entries if o.choice is not None})

    @property
    def const(self) -> Any:  # the value when the flag comes alone (a choice option's const: its choice)
        return next((o.choice or o.const for _, o in self.entries if o.const is not None), None)

    def parse(self, text: str) -> Any:
        if self.choices and text not in self.choices:
            raise _Refused(f"%compress: {self.flag} {shown(text)} is not a {self.lead.metavar.lower()}; use one of "
                           f"{', '.join(self.choices)}.")
        return text if self.choices else _typed(self.lead.parse, self.flag, _option_field(self.lead)
                                                 or self.lead.metavar.lower())(text)

    def resolve(self, value: Any) -> tuple[Method, dict[str, Any]]:
        """The method a parsed value picks and the config fields it sets."""
        method, option = self.choices[value] if self.choices else self.entries[0]
        return method, {**option.fields, **option.build(value)}

    def help(self) -> str:
        if self.choices:
            return f"{self.entries[0][0].family}: " + _and([o.help or o.choice for _, o in self.entries if o.choice], "or")
        method, option = self.entries[0]
        field = _option_field(option)
        return f"{option.help}: {_field_help(method.config_cls, field)}" if field else option.help


def step_flags() -> list[StepFlag]:
    """Every option that adds a plan step, in the canonical step order of the methods declaring them."""
    grouped: dict[str, list[tuple[Method, MagicOption]]] = {}
    for method in methods_in_order():
        for option in method.magic_options():
            grouped.setdefault(option.flag, []).append((method, option))
    return [StepFlag(flag, tuple(entries)) for flag, entries in grouped.items()]


def _scoped() -> list[tuple[str, Method]]:
    """(flag, method) of the step options whose methods' configs take a ``scope``, by flag."""
    return sorted(((f.flag, m) for f in step_flags() for m, _ in f.entries if "scope" in m.config_cls.field_names()),
                  key=lambda pair: pair[0])


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _escaped(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help text with %


def _typed(parse: Callable[[str], Any], flag: str, what: str = "") -> Callable[[str], Any]:
    """``parse`` for argparse: a refusal names the flag (and what it sets, unless the message does)."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            label = f"{flag} {what}:" if what and what.lower() not in str(exc).lower() else flag
            raise _Refused(f"%compress: {label} {exc}") from None
    return convert


def build_parser() -> _Parser:
    flags = step_flags()
    p = _Parser(prog="%compress", add_help=False, description="Compress a copy of MODEL (or MODEL itself with "
                "--inplace) and show a report. Steps run in the order: " + ", ".join(f.flag for f in flags)
                + ". In a %%compress cell the YAML body holds the methods, their options and layers, not its line.")
    p.add_argument("model", metavar="MODEL", help="name of an nn.Module in the notebook (dotted paths allowed)")
    for flag in flags:
        const = flag.const
        extra = {} if const is None else {"nargs": "?", "const": const}
        p.add_argument(flag.flag, dest=flag.dest, type=flag.parse, metavar=flag.lead.metavar,
                       help=_escaped(flag.help()), **extra)
    scoped = _scoped()
    if scoped:
        choices = dict.fromkeys(c for _, m in scoped for f in m.config_cls.describe_fields()
                                if f["name"] == "scope" for c in f["choices"] or ())
        p.add_argument("--scope", choices=tuple(choices) or None, default=None,
                       help=_escaped(f"with {' / '.join(dict.fromkeys(f for f, _ in scoped))}: "
                                     + _field_help(scoped[0][1].config_cls, "scope")))
    add = p.add_argument
    add("--layers", type=_names, default=[], metavar="L1,L2", help="only these layers: exact names or re:REGEX, "
        "comma-separated")
    add("--exclude", type=_names, default=[], metavar="L1,L2", help="leave these layers alone: exact names or "
        "re:REGEX, comma-separated")
    add("--as", dest="as_name", metavar="NAME", help="bind the compressed copy to NAME (default: MODEL_compressed); "
        "not a name IPython owns (In, Out, _, get_ipython, ...) nor one starting with _compress")
    add("--inplace", action="store_true", default=None, help="change MODEL itself (undo with %%compress_revert "
        "MODEL / revert_(MODEL))")
    add("--eval", dest="eval_fn", metavar="FN", help="a function FN(model) -> number or dict, measured before and after")
    add("--data", metavar="NAME", help="data for methods that need it: (X, y), a tensor X or a DataLoader")
    add("--calib", metavar="NAME", help="calibration inputs (used as --data when --data is not given)")
    add("--example", metavar="INPUTS", help="example inputs (tensor name) for tracing, latency and output error")
    add("--tokenizer", metavar="NAME", help="the model's tokenizer: a list of strings given as --example, --data or "
        "--calib is tokenized by it (sentence-transformers models bring theirs)")
    add("--seed", type=int, default=None, help="seed for any random choice (default 0)")
    add("--emit-config", dest="emit_config", action="store_true", help="write the exact plan of this run as a "
        "%%%%compress cell below")
    add("--plots", dest="plots", action="store_true", default=None, help="show before/after plots with the report "
        "(default: CompressMagics.plots)")
    add("--no-plots", dest="plots", action="store_false", help="no plots")
    add("--tune", action="store_true", help="open the tuning panel on MODEL (sliders, live preview, Apply / Revert / "
        "Generate cell)")
    add("--compare", action="store_true", help="measure every method family side by side on MODEL at --budget "
        "(needs --data or --example)")
    add("--auto", action="store_true", help="search the smallest (or fastest) plan whose metric drops by at most "
        "--max-drop (needs --eval, or --data / --example for fidelity)")
    add("--max-drop", dest="max_drop", type=_typed(parse_amount, "--max-drop"), default=None, metavar="DROP",
        help="with --auto: the largest allowed drop of the metric, e.g. 1%% or 0.01 (default 1%%)")
    add("--objective", choices=("size", "latency", "disk", "artifact"), help="with --auto: what to minimise: size "
        "(bytes in memory; the default), latency (time of a call), disk or artifact (bytes of the compact artifact)")
    add("--budget", type=_typed(parse_amount, "--budget"), default=None, metavar="FRACTION",
        help="with --compare: fraction of the parameters kept (default 0.5)")
    add("--report", dest="report", action="store_true", default=True, help="show the report (default)")
    add("--no-report", dest="report", action="store_false", help="do not show the report")
    return p


def parse_args(tokens: list[str]) -> argparse.Namespace:
    """The parsed ``%compress`` line (its tokens); a refused value is an :class:`OptionsError`."""
    try:
        return build_parser().parse_args(tokens)
    except _Refused as exc:
        raise OptionsError(str(exc)) from None


def _given_steps(args: argparse.Namespace) -> list[tuple[StepFlag, Any]]:
    return [(f, v) for f in step_flags() if (v := getattr(args, f.dest, None)) is not None]


def plan_from_options(args: argparse.Namespace, seed: int = 0) -> Plan:
    """The plan the line's method options describe, in the canonical step order."""
    selector = Selector(layers=tuple(args.layers), exclude=tuple(args.exclude))
    steps = []
    for flag, value in _given_steps(args):
        method, fields = flag.resolve(value)
        if getattr(args, "scope", None) and "scope" in method.config_cls.field_names():
            fields["scope"] = args.scope
        try:
            steps.append(Step(method.config_cls(**fields), selector))
        except CompressError as exc:
            raise OptionsError(f"%compress: {flag.flag} {value if flag.choices else shown(value)}: {exc}") from None
    if not steps:
        flags = [f"{f.flag} {'[' + f.lead.metavar + ']' if f.const is not None else f.lead.metavar}"
                 for f in step_flags()]
        raise OptionsError(f"%compress: give at least one method ({', '.join(flags)}), or a %%compress cell "
                           f"with a YAML plan; %compress_methods lists them.")
    steps.sort(key=lambda step: method_for_config(step.config).stage_index)
    return Plan(tuple(steps), seed=seed if args.seed is None else args.seed)


def _flag_of(method: Method, config: Any) -> str:
    """The option that selects ``method`` with ``config`` ('--quantize int4'), else the method's name."""
    for option in method.magic_options():
        if all(getattr(config, k, None) == v for k, v in option.fields.items()):
            return option.flag + (f" {option.choice}" if option.choice else "")
    return method.name


def _why(config: Any, need: str) -> str:
    """The setting of ``config`` that brings ``need`` (e.g. criterion='taylor'): the one whose default drops it."""
    for f in (f for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING):
        try:
            if need not in dataclasses.replace(config, **{f.name: f.default}).requirements():
                return f"{f.name}={getattr(config, f.name)!r}"
        except Exception:  # noqa: BLE001 - a default that does not validate with the rest: not this field
            continue
    return "these settings"


def check_needs(plan: Plan, example: Any, data: Any, model: Any = None,
                functions: Mapping[str, Any] | None = None) -> None:
    """Refuse a plan whose steps need what the line does not give (example inputs, data, labels, the
    functions the plan names), in the words of the option that fixes it."""
    for step in plan.steps:
        method = method_for_config(step.config)
        needs, own = method.needs(step.config), method.requires
        if "example_inputs" in needs and example is None and (model is None or auto_example(model) is None):
            raise OptionsError(f"%compress: {_flag_of(method, step.config)} traces the model and needs example "
                               f"inputs: add --example X (a tensor, a tuple, a dict or a tokenizer's output in the "
                               f"notebook), or --tokenizer TOK for a text model.")
        if "calibration" in needs and data is None and example is None:
            raise OptionsError(f"%compress: {_flag_of(method, step.config)} calibrates on inputs: add --calib NAME "
                               f"(a few batches of inputs), or at least --example X.")
        for need, what in (("data", "data"), ("labels", "labelled data")):
            if need in needs and data is None:
                who = step.method if need in own else f"{step.method} with {_why(step.config, need)}"
                forms = "(X, y), X or a DataLoader" if need in own and need == "data" else "(X, y) or a DataLoader"
                raise OptionsError(f"%compress: {who} needs {what}: add --data NAME ({forms}).")
        for field in method.function_fields if functions is not None else ():
            spec = getattr(step.config, field, None)
            if isinstance(spec, str) and spec and spec not in functions:
                raise OptionsError(f"%compress: the plan's {step.method} {field} {shown(spec, 62)} is not a "
                                   f"function of the notebook.")


def _example_step(args: argparse.Namespace) -> str:
    """A plan step written as YAML, for the message that moves a line's method options into the plan."""
    given = _given_steps(args)
    method, fields = given[0][0].resolve(given[0][1]) if given else (None, {})
    items = [f"method: {method.name if method else 'NAME'}", *(f"{k}: {v}" for k, v in fields.items())]
    return "- {" + ", ".join([*items, "exclude: [head]"]) + "}"


def refuse_conflicts(args: argparse.Namespace, has_body: bool, inplace: bool) -> str | None:
    """An :class:`OptionsError` for options that would be silently ignored together; else the tool (--tune,
    --compare, --auto, or None for a plain run)."""
    modes = [flag for flag in _MODES if getattr(args, flag.lstrip("-"))]
    mode = modes[0] if modes else None
    # the options that build plan steps (or select their layers) present on the line
    given = ", ".join([f.flag for f, _ in _given_steps(args)] + [flag for flag, value in (
        ("--scope", getattr(args, "scope", None)), ("--layers", args.layers), ("--exclude", args.exclude)) if value])
    shown_by = "the panel" if mode == "--tune" else "its table"
    scoped = list(dict.fromkeys(f for f, _ in _scoped()))
    rules = [  # (refused, why), checked in order
        (len(modes) > 1, f"{' and '.join(modes)} are separate tools ({mode} {_MODES.get(mode)}); run one per line."),
        (mode and has_body, f"{mode} takes no plan, and the %%compress cell body is one ({mode} {_MODES.get(mode)}); "
         f"run {mode} as a line %compress, or drop {mode} to run the plan."),
        (mode and given, f"{mode} {_MODES.get(mode)}, so {given} would be ignored; drop {given}, or drop {mode} to "
         f"run them."),
        (has_body and given, f"the %%compress cell body is the plan, so {given} on its line would be ignored; put "
         f"them in the plan's steps (e.g. {_example_step(args)}), or use a line %compress."),
        (mode and args.inplace, f"{mode} does not change MODEL, so --inplace would be ignored; drop --inplace."),
        (mode is None and inplace and args.as_name is not None,
         f"with {'--inplace' if args.inplace else 'CompressMagics.inplace = True'} MODEL itself is changed and no "
         f"new name is bound, so --as {args.as_name} would be ignored; drop --as, or "
         f"{'drop --inplace' if args.inplace else '%config CompressMagics.inplace = False'} for a copy named "
         f"{args.as_name}."),
        (mode == "--compare" and args.as_name is not None, "--compare binds no model (its table goes to "
         "_compress_comparison), so --as would be ignored; drop --as, and run the row you pick with %compress "
         "MODEL ... --as NAME."),
        (mode in ("--tune", "--compare") and args.emit_config, ("the panel's Generate cell button writes the plan" if
         mode == "--tune" else "--compare writes no plan") + ", so --emit-config would be ignored; drop --emit-config."),
        (mode in ("--tune", "--compare") and args.seed is not None,
         f"{mode} takes no --seed; drop it (a plan run with %compress takes --seed)."),
        (mode in ("--tune", "--compare") and not args.report,
         f"{mode} shows {shown_by}, not a report, so --no-report would be ignored; drop it."),
        (args.plots and mode, f"{mode} draws no before/after plots, so --plots would be ignored; drop it."),
        (args.plots and not args.report, "the plots are part of the report, and --no-report hides it; drop --plots "
         "or --no-report."),
        (args.plots and inplace, "the plots compare MODEL before and after, and in place no 'before' copy is kept; "
         "drop --plots, or compress a copy (--as NAME) to see them."),
        (args.max_drop is not None and mode != "--auto", "--max-drop goes with --auto (e.g. --auto --max-drop 1%)."),
        (args.objective is not None and mode != "--auto",
         "--objective goes with --auto (e.g. --auto --objective latency)."),
        (args.budget is not None and mode != "--compare", "--budget goes with --compare (e.g. --compare --budget 50%)."),
        (args.data is not None and args.calib is not None, f"--calib is --data's other name (calibration inputs), so "
         f"one of --data {args.data} and --calib {args.calib} would be ignored; give one."),
        (getattr(args, "scope", None) and mode is None and not has_body and not any(
            "scope" in flag.resolve(value)[0].config_cls.field_names() for flag, value in _given_steps(args)),
         f"--scope applies to {_and(scoped or ['no option'])}, and "
         f"{'it is not' if len(scoped) == 1 else 'neither is' if len(scoped) == 2 else 'none is'} given; drop --scope "
         f"or add {'it' if len(scoped) == 1 else 'one of them'}."),
    ]
    for refused, why in rules:
        if refused:
            raise OptionsError(f"%compress: {why}")
    return mode


def method_flags() -> set[str]:
    """The options whose values the plan body of a generated cell carries (the methods, their layers, the seed)."""
    return {f.flag for f in step_flags()} | {"--scope", "--layers", "--exclude", "--seed"}


def strip_options(tokens: list[str], drop: set[str] | frozenset[str]) -> list[str]:
    """``tokens`` (a parsed %compress line) without the options in ``drop`` and their values: abbreviations
    (--pru for --prune) and optional values (--distill alone) read as the parser reads them."""
    actions = build_parser()._option_string_actions
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        key = tok.split("=", 1)[0]
        if key.startswith("--") and key not in actions:
            matches = [flag for flag in actions if flag.startswith(key)]
            key = matches[0] if len(matches) == 1 else key
        action = actions.get(key) if key.startswith("-") else None
        i += 1
        if action is None or key not in drop:
            out.append(tok)
            continue
        if "=" not in tok and action.nargs != 0:  # skip its value (an optional one only when one is there)
            i += action.nargs != "?" or (i < len(tokens) and not tokens[i].startswith("--"))
    return out


def _examples() -> list[str]:
    """Example lines from the methods' declarations: probe settings, one method per family."""
    probes = [(m, f"{o.flag} {m.probe[m.dial]}") for m in methods_in_order() if m.dial in m.probe
              for o in m.magic_options()[:1] if o.choice is None]
    plain: dict[str, tuple[Method, str]] = {}
    for m, line in probes:
        if not m.requires:
            plain.setdefault(m.family, (m, line))
    if not plain:
        return []
    (first, one), *rest = plain.values()
    return [f"  %compress model {one} --as small",
            f"  %compress model {' '.join([one, *(p for _, p in rest[:1])])} --exclude fc2 --eval evaluate --as small",
            *(f"  %compress model {p} --example x --emit-config" for m, p in probes if m.requires == {"example_inputs"}),
            f"  %compress model {one} --inplace          (then %compress_revert model)",
            "  %%compress model --as small", "  steps:", f"  - {{method: {first.name}, {first.dial}: {first.probe[first.dial]}}}"]


def usage_text() -> str:
    ranks = any(f.lead.metavar == "RANK" for f in step_flags())
    return build_parser().format_help() + (
        ("\nRANK is an int, a fraction in (0, 1] of the parameters to keep, energy:0.95 or auto.\n" if ranks else "")
        + "\nExamples:\n" + "".join(line + "\n" for line in _examples())
        + "\nAlso: %compress_revert MODEL, %compress_report [NAME], %compress_methods.\n"
    )


def sentences_in(value: Any) -> int:
    """How many strings ``value`` holds when it is a list of sentences (or (sentences, labels)); else 0."""
    if is_sentences(value):
        return len(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and is_sentences(value[0]):
        return len(value[0])
    return 0


def core_message(exc: BaseException) -> str:
    """The core's message, one line, with the magic's own option where the core names a keyword argument."""
    text = " ".join(str(exc).split())
    if isinstance(exc, InputsError) and "no tokenizer" in text and "--tokenizer" not in text:
        hint = "add --tokenizer TOK (your tokenizer in the notebook)"
        text = text.replace("pass tokenizer=<your tokenizer>", hint) if "pass tokenizer=<your tokenizer>" in text \
            else f"{text} With %compress: {hint}."
    return text
