"""The ``%compress`` magics: parse, resolve names, call the core, display. No compression logic.

User mistakes become IPython ``UsageError`` (one line, no traceback) here and only here.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.display import display
from traitlets import Bool, Int, Unicode

from . import __version__
from .core.apply import compress, compress_
from .core.inputs import InputsError, attach_tokenizer, auto_example, find_tokenizer, is_sentences
from .core.names import IPYTHON_NAMES, name_problem  # noqa: F401  (IPYTHON_NAMES: importable from here too)
from .core.plan import Plan, Step
from .core.registry import get_method, list_methods
from .core.selection import Selector
from .errors import CompressError, one_line, shown
from .methods import DistillConfig, PruneConfig

__all__ = ["CompressMagics", "load_ipython_extension"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit the kernel
        raise UsageError(f"%compress: {message}. See %compress? for the options.")

    def exit(self, status: int = 0, message: str | None = None) -> None:
        raise UsageError(message or "%compress: see %compress? for the options.")


def _field_help(config_cls, name: str) -> str:
    for f in config_cls.describe_fields():
        if f["name"] == name:
            return f"{f['help']} ({f['rule']}; default {f['default']!r})"
    raise KeyError(name)


def _number(text: str) -> Any:
    """'8' -> 8, '0.5' -> 0.5, '50%' -> 0.5; other text (e.g. 'energy:0.9', 'auto') stays a string."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return text


def _amount(text: str) -> float:
    """'0.5' or '50%' -> 0.5."""
    value = _number(text)
    if isinstance(value, str):
        raise UsageError(f"%compress: amount {text!r} is not a number; give a fraction such as --prune 0.5 "
                         f"or a percentage such as --prune 50%.")
    return float(value)


def _nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"%compress: --nm {text!r} is not N:M; give two ints such as --nm 2:4.") from None
    return n, m


# --quantize MODE -> (method, config fields)
QUANT_MODES = {
    "int8": ("quantize.dynamic", {}),
    "static-int8": ("quantize.static", {}),
    "int4": ("quantize.weight", {"bits": 4}),
    "int8-weight": ("quantize.weight", {"bits": 8}),
    "fp16": ("quantize.half", {"dtype": "float16"}),
    "bf16": ("quantize.half", {"dtype": "bfloat16"}),
}


def _quant_mode(text: str) -> tuple[str, dict]:
    if text not in QUANT_MODES:
        raise UsageError(f"%compress: --quantize {text!r} is not a mode; use one of {', '.join(QUANT_MODES)}.")
    method, fields = QUANT_MODES[text]
    return method, dict(fields)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"%compress: {text!r} is not a whole number of epochs >= 1 (e.g. --distill 3).")
    return value


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]




_MAX_MESSAGE = 400  # characters of an error message: values quoted in it are cut to fit

# what each tool does, for the messages that refuse an option it would ignore
_MODES = {"--tune": "opens the tuning panel, whose sliders choose the methods",
          "--compare": "measures every method family itself",
          "--auto": "searches the methods itself"}


def _given_method_options(args: argparse.Namespace) -> list[str]:
    """The options that build plan steps (or select their layers) present on the line."""
    given = [o.flag for o in STEP_OPTIONS if getattr(args, o.flag.lstrip("-").replace("-", "_"), None) is not None]
    given += [flag for flag, value in (("--scope", args.scope), ("--layers", args.layers),
                                       ("--exclude", args.exclude)) if value]
    return given


def _refuse_conflicts(args: argparse.Namespace, has_body: bool, inplace: bool) -> str | None:
    """A one-line UsageError for options that would be silently ignored together; else the tool (--tune,
    --compare, --auto, or None for a plain run)."""
    modes = [flag for flag in _MODES if getattr(args, flag.lstrip("-"))]
    if len(modes) > 1:
        raise UsageError(f"%compress: {' and '.join(modes)} are separate tools ({modes[0]} "
                         f"{_MODES[modes[0]]}); run one per line.")
    mode = modes[0] if modes else None
    given = ", ".join(_given_method_options(args))
    if mode and has_body:
        raise UsageError(f"%compress: {mode} takes no plan, and the %%compress cell body is one ({mode} "
                         f"{_MODES[mode]}); run {mode} as a line %compress, or drop {mode} to run the plan.")
    if mode and given:
        raise UsageError(f"%compress: {mode} {_MODES[mode]}, so {given} would be ignored; drop {given}, "
                         f"or drop {mode} to run them.")
    if has_body and given:
        raise UsageError(f"%compress: the %%compress cell body is the plan, so {given} on its line would be "
                         f"ignored; put them in the plan's steps (e.g. - {{method: prune, amount: 0.5, "
                         f"exclude: [head]}}), or use a line %compress.")
    if mode and args.inplace:
        raise UsageError(f"%compress: {mode} does not change MODEL, so --inplace would be ignored; drop --inplace.")
    if mode is None and inplace and args.as_name is not None:
        why = "--inplace" if args.inplace else "CompressMagics.inplace = True"
        fix = "drop --inplace" if args.inplace else "%config CompressMagics.inplace = False"
        raise UsageError(f"%compress: with {why} MODEL itself is changed and no new name is bound, so --as "
                         f"{args.as_name} would be ignored; drop --as, or {fix} for a copy named {args.as_name}.")
    if mode == "--compare" and args.as_name is not None:
        raise UsageError("%compress: --compare binds no model (its table goes to _compress_comparison), so --as "
                         "would be ignored; drop --as, and run the row you pick with %compress MODEL ... --as NAME.")
    if mode in ("--tune", "--compare") and args.emit_config:
        where = "the panel's Generate cell button writes the plan" if mode == "--tune" else "--compare writes no plan"
        raise UsageError(f"%compress: {where}, so --emit-config would be ignored; drop --emit-config.")
    if mode in ("--tune", "--compare") and args.seed is not None:
        raise UsageError(f"%compress: {mode} takes no --seed; drop it (a plan run with %compress takes --seed).")
    if mode in ("--tune", "--compare") and not args.report:
        shows = "the panel" if mode == "--tune" else "its table"
        raise UsageError(f"%compress: {mode} shows {shows}, not a report, so --no-report would be ignored; drop it.")
    if args.plots:  # given explicitly: --plots
        if mode:
            raise UsageError(f"%compress: {mode} draws no before/after plots, so --plots would be ignored; drop it.")
        if not args.report:
            raise UsageError("%compress: the plots are part of the report, and --no-report hides it; drop --plots "
                             "or --no-report.")
        if inplace:
            raise UsageError("%compress: the plots compare MODEL before and after, and in place no 'before' copy "
                             "is kept; drop --plots, or compress a copy (--as NAME) to see them.")
    for flag, value, tool in (("--max-drop", args.max_drop, "--auto"), ("--objective", args.objective, "--auto"),
                              ("--budget", args.budget, "--compare")):
        if value is not None and mode != tool:
            example = {"--max-drop": "--auto --max-drop 1%", "--objective": "--auto --objective latency",
                       "--budget": "--compare --budget 50%"}[flag]
            raise UsageError(f"%compress: {flag} goes with {tool} (e.g. {example}).")
    if args.data is not None and args.calib is not None:
        raise UsageError("%compress: --calib is --data's other name (calibration inputs), so one of --data "
                         f"{args.data} and --calib {args.calib} would be ignored; give one.")
    if args.scope and mode is None and not has_body and getattr(args, "prune", None) is None \
            and getattr(args, "structured", None) is None:
        raise UsageError("%compress: --scope applies to --prune and --structured, and neither is given; drop --scope "
                         "or add one of them.")
    return mode


def _sentences_in(value: Any) -> int:
    """How many strings ``value`` holds when it is a list of sentences (or (sentences, labels)); else 0."""
    if is_sentences(value):
        return len(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and is_sentences(value[0]):
        return len(value[0])
    return 0


def _message(exc: BaseException) -> str:
    """The core's message, one line, with the magic's own option where the core names a keyword argument."""
    text = " ".join(str(exc).split())
    if isinstance(exc, InputsError) and "no tokenizer" in text and "--tokenizer" not in text:
        hint = "add --tokenizer TOK (your tokenizer in the notebook)"
        text = text.replace("pass tokenizer=<your tokenizer>", hint) if "pass tokenizer=<your tokenizer>" in text \
            else f"{text} With %compress: {hint}."
    return text


@dataclasses.dataclass(frozen=True)
class StepOption:
    """A magic option that adds one plan step: ``--flag VALUE`` -> ``method`` with ``build(VALUE)`` fields."""

    flag: str
    method: str
    field: str  # the config field whose help the option shows
    metavar: str
    parse: Callable[[str], Any]
    build: Callable[[Any], dict]
    lead: str
    const: Any = None  # when set, the value may be left out (``--distill`` alone means ``--distill const``)


# The order here is the order steps run in (structure first, then factorisation, then sparsity).
STEP_OPTIONS = [
    StepOption("--structured", "prune.structured", "amount", "AMOUNT", _amount, lambda v: {"amount": v},
               "structured pruning (needs --example)"),
    StepOption("--svd", "svd", "rank", "RANK", _number, lambda v: {"rank": v}, "truncated SVD of Linear layers"),
    StepOption("--tucker", "tucker", "rank", "RANK", _number, lambda v: {"rank": v},
               "Tucker-2 decomposition of Conv2d layers"),
    StepOption("--cp", "cp", "rank", "RANK", _number, lambda v: {"rank": v}, "CP decomposition of Conv2d layers"),
    StepOption("--tt", "tt", "rank", "RANK", _number, lambda v: {"rank": v},
               "Tensor-Train decomposition of large Linear / Embedding layers"),
    StepOption("--prune", "prune", "amount", "AMOUNT", _amount, lambda v: {"amount": v},
               "unstructured magnitude pruning"),
    StepOption("--nm", "prune.nm", "n", "N:M", _nm, lambda v: {"n": v[0], "m": v[1]},
               "N:M semi-structured sparsity: keep N of every M consecutive weights (e.g. 2:4)"),
    StepOption("--quantize", "quantize.dynamic", "mode", "MODE", lambda t: _quant_mode(t), lambda v: v,
               "quantization: int8 (dynamic, the fast preset: give --example), static-int8 (calibrated, give "
               "--calib), int4 (weight-only, group-wise), fp16 or bf16"),
    StepOption("--distill", "distill", "epochs", "EPOCHS", _count, lambda v: {"epochs": v},
               "after the other steps, recover accuracy by distilling from the original model (needs --data); "
               f"alone, up to {DistillConfig.epochs} epochs, stopping once the loss stops improving",
               const=DistillConfig.epochs),
]


def _option_help(option: StepOption) -> str:
    try:
        config_cls = get_method(option.method).config_cls
    except CompressError:
        return option.lead + " (not available in this installation)"
    if option.field in ("n", "mode"):
        return option.lead
    return f"{option.lead}: {_field_help(config_cls, option.field)}"


def build_parser() -> _Parser:
    p = _Parser(prog="%compress", add_help=False, description="Compress a copy of MODEL (or MODEL itself with "
                "--inplace) and show a report. Steps run in the order: "
                + ", ".join(o.flag for o in STEP_OPTIONS if _available(o))
                + ". In a %%compress cell, the body is a YAML plan: it holds the methods and their layers, so the "
                "method options (and --scope, --layers, --exclude) stay off its line.")
    p.add_argument("model", metavar="MODEL", help="name of an nn.Module in the notebook (dotted paths allowed)")
    for option in STEP_OPTIONS:
        if _available(option):
            extra = {} if option.const is None else {"nargs": "?", "const": option.const}
            p.add_argument(option.flag, type=option.parse, metavar=option.metavar, help=_option_help(option),
                           **extra)
    p.add_argument("--scope", choices=("layer", "global"), default=None,
                   help="with --prune / --structured: " + _field_help(PruneConfig, "scope"))
    p.add_argument("--layers", type=_names, default=[], metavar="L1,L2",
                   help="only these layers: exact names or re:REGEX, comma-separated")
    p.add_argument("--exclude", type=_names, default=[], metavar="L1,L2",
                   help="leave these layers alone: exact names or re:REGEX, comma-separated")
    p.add_argument("--as", dest="as_name", metavar="NAME",
                   help="bind the compressed copy to NAME (default: MODEL_compressed); not a name IPython owns "
                   "(In, Out, _, get_ipython, ...) nor one starting with _compress")
    p.add_argument("--inplace", action="store_true", default=None,
                   help="change MODEL itself (undo with %%compress_revert MODEL / revert_(MODEL))")
    p.add_argument("--eval", dest="eval_fn", metavar="FN", help="a function FN(model) -> number or dict, "
                   "measured before and after")
    p.add_argument("--data", metavar="NAME", help="data for methods that need it: (X, y), a tensor X or a "
                   "DataLoader")
    p.add_argument("--calib", metavar="NAME", help="calibration inputs (used as --data when --data is not given)")
    p.add_argument("--example", metavar="INPUTS", help="example inputs (tensor name) for tracing, latency and "
                   "output error")
    p.add_argument("--tokenizer", metavar="NAME", help="the model's tokenizer: a list of strings given as "
                   "--example, --data or --calib is tokenized by it (sentence-transformers models bring theirs)")
    p.add_argument("--seed", type=int, default=None, help="seed for any random choice (default 0)")
    p.add_argument("--emit-config", dest="emit_config", action="store_true",
                   help="write the exact plan of this run as a %%%%compress cell below")
    p.add_argument("--plots", dest="plots", action="store_true", default=None,
                   help="show before/after plots with the report (default: CompressMagics.plots)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="no plots")
    p.add_argument("--tune", action="store_true", help="open the tuning panel on MODEL (sliders, live preview, "
                   "Apply / Revert / Generate cell)")
    p.add_argument("--compare", action="store_true", help="measure every method family side by side on MODEL "
                   "at --budget (needs --data or --example)")
    p.add_argument("--auto", action="store_true", help="search the smallest (or fastest) plan whose metric drops by at "
                   "most --max-drop (needs --eval, or --data / --example for fidelity)")
    p.add_argument("--max-drop", dest="max_drop", type=_amount, default=None, metavar="DROP",
                   help="with --auto: the largest allowed drop of the metric, e.g. 1%% or 0.01 (default 1%%)")
    p.add_argument("--objective", choices=("size", "latency"), default=None,
                   help="with --auto: what to minimise (default size)")
    p.add_argument("--budget", type=_amount, default=None, metavar="FRACTION",
                   help="with --compare: fraction of the parameters kept (default 0.5)")
    p.add_argument("--report", dest="report", action="store_true", default=True, help="show the report (default)")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not show the report")
    return p


def _available(option: StepOption) -> bool:
    try:
        get_method(option.method)
        return True
    except CompressError:
        return False


def _usage_text() -> str:
    return build_parser().format_help() + (
        "\nRANK is an int, a fraction in (0, 1] of the parameters to keep, energy:0.95 or auto.\n"
        "\nExamples:\n"
        "  %compress model --prune 0.5 --as small\n"
        "  %compress model --svd 0.5 --prune 50% --exclude fc2 --eval evaluate --as small\n"
        "  %compress model --structured 0.3 --example x --emit-config\n"
        "  %compress model --tucker 0.5 --inplace          (then %compress_revert model)\n"
        "  %%compress model --as small\n"
        "  steps:\n"
        "  - {method: svd, rank: 0.5}\n"
        "\nAlso: %compress_revert MODEL, %compress_report [NAME], %compress_methods.\n"
    )


@magics_class
class CompressMagics(Magics):
    """%compress, %%compress, %compress_revert, %compress_report and %compress_methods.

    Settings: ``%config CompressMagics.inplace = True`` (also ``plots``, ``device``, ``default_eval``,
    ``bokeh_resources``, ``seed``).
    """

    inplace = Bool(False, help="Compress the named model in place by default (else a copy).").tag(config=True)
    seed = Int(0, help="Default seed of plans built from the magic's options.").tag(config=True)
    default_eval = Unicode("", help="Name of an eval function used when --eval is not given.").tag(config=True)
    plots = Bool(True, help="Show before/after plots with the report (when the plotting layer is installed)."
                 ).tag(config=True)
    device = Unicode("", help="Device the compressed model is placed on ('' keeps the model's device; 'cpu', "
                     "'cuda', 'cuda:1', 'mps').").tag(config=True)
    bokeh_resources = Unicode("extension", help="Where BokehJS is loaded from: 'extension' (the JupyterLab "
                              "extension ships it; the notebook keeps only the plots' data), 'inline' (in the "
                              "notebook, once, for front ends without the extension) or the http(s) URL of a "
                              "local server holding BokehJS.").tag(config=True)

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self._reports: dict[str, Any] = {}

    # -- helpers -----------------------------------------------------------
    def _resolve(self, name: str, what: str = "name", expression: bool = False) -> Any:
        ns = self.shell.user_ns
        if expression and not all(part.isidentifier() for part in name.split(".")):
            try:  # data and inputs may be written as expressions, e.g. --example X_test[:8]
                return self.shell.ev(name)
            except Exception as exc:  # noqa: BLE001 - any error in the user's expression is a usage error
                raise UsageError(f"%compress: {what} {name!r} could not be evaluated ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}).") from None
        head, *rest = name.split(".")
        if not head.isidentifier() or head not in ns:
            raise UsageError(f"%compress: {what} {name!r} is not defined in the notebook; define it or check "
                             f"the spelling.")
        obj = ns[head]
        for i, part in enumerate(rest):
            if not hasattr(obj, part):
                raise UsageError(f"%compress: {'.'.join([head, *rest[:i]])!r} has no attribute {part!r}.")
            obj = getattr(obj, part)
        return obj

    def _check_settings(self) -> None:
        """Traitlets accept any string; check the values here, where they are used."""
        if self.bokeh_resources not in ("extension", "inline") and not self.bokeh_resources.startswith(
                ("http://", "https://")):
            raise UsageError(f"%compress: CompressMagics.bokeh_resources must be 'extension', 'inline' or an http(s) "
                             f"URL; got {self.bokeh_resources!r}. Fix it with "
                             f"%config CompressMagics.bokeh_resources = 'extension'.")
        if self.device:
            import torch

            try:
                device = torch.device(self.device)
            except (RuntimeError, ValueError):
                raise UsageError(f"%compress: CompressMagics.device {self.device!r} is not a device; use 'cpu', "
                                 f"'cuda', 'cuda:N' or 'mps'.") from None
            available = {"cpu": True, "cuda": torch.cuda.is_available(),
                         "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
            if not available.get(device.type, False):
                raise UsageError(f"%compress: CompressMagics.device {self.device!r} is not available on this "
                                 f"machine; use 'cpu' or set it to '' to keep the model's device.")

    def _plan_from_options(self, args: argparse.Namespace) -> Plan:
        selector = Selector(layers=tuple(args.layers), exclude=tuple(args.exclude))
        steps = []
        for option in STEP_OPTIONS:
            value = getattr(args, option.flag.lstrip("-").replace("-", "_"), None)
            if value is None:
                continue
            method, fields = value if option.flag == "--quantize" else (option.method, option.build(value))
            if args.scope and method in ("prune", "prune.structured"):
                fields["scope"] = args.scope
            config_cls = get_method(method).config_cls
            try:
                steps.append(Step(config_cls(**fields), selector))
            except CompressError as exc:
                raise UsageError(f"%compress: {option.flag} {value!r}: {exc}") from None
        if not steps:
            raise UsageError("%compress: give at least one method, e.g. --prune 0.5, --structured 0.5 or --svd 0.5 "
                             "(or a %%compress cell with a YAML plan); %compress_methods lists them.")
        return Plan(tuple(steps), seed=self.seed if args.seed is None else args.seed)

    @staticmethod
    def _cell_for(plan: Plan, line: str) -> str:
        header = (f"# generated by jupyter_compress {__version__}; seed {plan.seed}. "
                  f"Re-running this cell reproduces the result.")
        return f"%%compress {line}\n{header}\n{plan.to_yaml()}"

    def _emit(self, cell: str) -> None:
        """Put ``cell`` below the current one (a kernel sends it to the notebook); where no frontend takes it
        (``ipython script.ipy``, a plain shell) it is also printed, under a one-line header."""
        self.shell.set_next_input(cell, replace=False)
        if getattr(self.shell, "kernel", None) is None:
            print("# --emit-config: no notebook here to insert the generated cell into; here it is:")
            print(cell)

    # -- the magics ----------------------------------------------------------
    @line_cell_magic
    def compress(self, line: str, cell: str | None = None) -> None:
        try:
            return self._compress(line, cell)
        except UsageError as exc:  # one short line, whatever value the line or the body held
            message = one_line(exc, _MAX_MESSAGE)
            if message == str(exc):
                raise
            raise UsageError(message) from None

    def _compress(self, line: str, cell: str | None = None) -> None:
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%compress: cannot parse the line ({exc}).") from None
        if not tokens or tokens[0] in ("-h", "--help"):
            print(_usage_text())
            return
        args = build_parser().parse_args(tokens)
        body = cell if cell is not None and cell.strip() else None
        inplace = self.inplace if args.inplace is None else args.inplace
        mode = _refuse_conflicts(args, body is not None, inplace)
        bound = self._target_name(args, mode, inplace)
        self._check_settings()
        model = self._resolve(args.model, "model")
        from torch import nn

        if not isinstance(model, nn.Module):
            raise UsageError(f"%compress: {args.model!r} is a {type(model).__name__}, not a torch.nn.Module; "
                             f"pass the name of a model.")
        eval_name = args.eval_fn or self.default_eval or None
        eval_fn = self._resolve(eval_name, "eval function") if eval_name else None
        if eval_fn is not None and not callable(eval_fn):
            raise UsageError(f"%compress: --eval {eval_name!r} is not callable; pass a function FN(model).")
        example = self._resolve(args.example, "example inputs", expression=True) if args.example else None
        data_name = args.data or args.calib
        data = self._resolve(data_name, "data", expression=True) if data_name else None
        tokenizer = self._resolve(args.tokenizer, "tokenizer") if args.tokenizer else None
        try:
            attach_tokenizer(model, tokenizer)
        except CompressError as exc:
            raise UsageError(f"%compress: --tokenizer {args.tokenizer}: {exc}") from None
        self._check_sentences(model, args, example, data)
        if mode == "--tune":
            return self._tune(args, model, eval_fn, data, example, bound)
        if mode == "--compare":
            return self._compare(args, model, eval_fn, data, example)
        if mode == "--auto":
            return self._auto(args, model, eval_fn, data, example, bound, tokens)
        try:
            if body is not None:
                plan = Plan.from_yaml(body)
                if args.seed is not None:
                    plan = Plan(plan.steps, seed=args.seed, versions=plan.versions)
            else:
                plan = self._plan_from_options(args)
            self._check_needs(plan, example, data, model)
            functions = self._plan_functions(plan)
            if inplace:
                report = compress_(model, plan, eval=eval_fn, example_inputs=example, data=data,
                                   functions=functions)
                bound = args.model
            else:
                small, report = compress(model, plan, eval=eval_fn, example_inputs=example, data=data,
                                         functions=functions)
                if self.device:
                    small.to(self.device)
                self.shell.user_ns[bound] = small
        except CompressError as exc:
            raise UsageError(f"%compress: {_message(exc)}") from None
        self.shell.user_ns["_compress_report"] = report
        self._reports[bound] = report
        if args.emit_config:
            line_out = " ".join(shlex.quote(t) for t in _strip_options(tokens, _METHOD_OPTIONS | {"--emit-config"}))
            self._emit(self._cell_for(Plan.from_dict(report.plan), line_out))
        if args.report:
            if (self.plots if args.plots is None else args.plots) and not inplace:
                self._attach_plots(report, model, self.shell.user_ns[bound])
            display(report)
        where = "in place" if inplace else f"as {bound!r}"
        print(f"compressed {args.model} {where}: {report.model_params_before:,} -> "
              f"{report.model_params_after:,} parameters")

    def _target_name(self, args: argparse.Namespace, mode: str | None, inplace: bool) -> str | None:
        """The name the result is bound to (None where nothing is bound); refused if it is IPython's or ours."""
        if mode == "--compare" or (mode is None and inplace):
            return None
        hidden = getattr(self.shell, "user_ns_hidden", {})
        if args.as_name is not None:
            problem = name_problem(args.as_name, hidden)
            if problem:
                raise UsageError(f"%compress: --as {args.as_name!r} {problem}; pick another name, e.g. --as small.")
            return args.as_name
        suffix = {"--tune": "_tuned", "--auto": "_auto"}.get(mode or "", "_compressed")
        default = args.model.replace(".", "_") + suffix
        problem = name_problem(default, hidden)
        if problem:
            raise UsageError(f"%compress: the default name {default!r} {problem}; name the result with --as NAME, "
                             f"e.g. --as small.")
        return default

    def _check_sentences(self, model: Any, args: argparse.Namespace, example: Any, data: Any) -> None:
        """A list of strings with no tokenizer to read it: say which option, and that --tokenizer fixes it."""
        if find_tokenizer(model) is not None:
            return
        for flag, name, value in (("--example", args.example, example),
                                  ("--data" if args.data else "--calib", args.data or args.calib, data)):
            count = _sentences_in(value) if value is not None else 0
            if count:
                raise UsageError(f"%compress: {flag} {name} is a list of {count} strings, but "
                                 f"{type(model).__name__} has no tokenizer: add --tokenizer TOK (your tokenizer in "
                                 f"the notebook), or pass tokenized inputs.")

    def _plan_functions(self, plan: Plan) -> dict[str, Callable]:
        """The functions the plan names (quantize.qat's ``train``), taken from the notebook's own namespace: the
        user's notebook is the operator here. Never an import; a dotted path only walks attributes of an object
        the notebook already holds."""
        functions: dict[str, Callable] = {}
        for step in plan.steps:
            spec = getattr(step.config, "train", None) if step.method == "quantize.qat" else None
            if isinstance(spec, str) and spec and spec not in functions:
                functions[spec] = self._user_function(spec, f"the plan's {step.method} train")
        return functions

    def _user_function(self, spec: str, what: str) -> Callable:
        named = shown(spec, 62)
        path = spec
        for prefix in ("__main__:", "__main__."):
            if path.startswith(prefix):
                path = path[len(prefix):]
                break
        parts = path.replace(":", ".").split(".")
        head, rest = parts[0], parts[1:]
        if not all(part.isidentifier() and not part.startswith("__") for part in parts) or name_problem(
                head, getattr(self.shell, "user_ns_hidden", {})):
            raise UsageError(f"%compress: {what} {named} is not the name of a function in the notebook; give "
                             f"its name, e.g. train: my_train (a function my_train(model) defined above).")
        ns = self.shell.user_ns
        if head not in ns and rest:
            raise UsageError(f"%compress: {what} {named}: {shown(head, 40)} is not defined in the notebook; a plan "
                             f"names a training function defined in the notebook (it never imports).")
        if head not in ns:
            raise UsageError(f"%compress: {what} {named} is not defined in the notebook; define "
                             f"{head}(model) (your training loop) in a cell above, or fix the name.")
        obj = ns[head]
        for i, part in enumerate(rest):
            if not hasattr(obj, part):
                raise UsageError(f"%compress: {what} {named}: {'.'.join([head, *rest[:i]])!r} has no attribute "
                                 f"{part!r}.")
            obj = getattr(obj, part)
        if not callable(obj):
            raise UsageError(f"%compress: {what} {named} is a {type(obj).__name__}, not a function; give the "
                             f"name of your training function train(model).")
        # a plan body is text: it may name the notebook's own training function, not any callable reachable
        # from it (after `import sys`, 'sys:exit' would otherwise be called with the model). So: a Python
        # function bound by a plain name in the notebook, or, through a dotted path, one defined in the notebook
        func = getattr(obj, "__func__", obj)
        defined_here = inspect.isfunction(func) and getattr(func, "__module__", None) == "__main__"
        if not (defined_here or (not rest and inspect.isfunction(func))):
            raise UsageError(f"%compress: {what} {named} is not a training function of this notebook; a plan "
                             f"names a function defined (or imported by name) in the notebook, e.g. train: my_train.")
        return obj

    def _attach_plots(self, report: Any, before: Any, after: Any) -> None:
        try:
            from .plotting import attach_plots, configure

            if self.bokeh_resources in ("extension", "inline"):
                configure(self.bokeh_resources)
            else:
                configure("server", root_url=self.bokeh_resources)
            attach_plots(report, before, after)
        except ImportError as exc:  # bokeh missing: the report alone, and one line saying why
            missing = (exc.name or "bokeh").split(".")[0]
            print(f"(no plots: {missing} is not installed; pip install {missing}, or --no-plots to silence this)")

    def _tune(self, args, model, eval_fn, data, example, bound):
        from .notebook.cells import TUNE_TERMINAL_HINT, in_terminal

        if in_terminal(self.shell):  # no widget front end: one line, not the widgets' reprs
            print(TUNE_TERMINAL_HINT)
            return
        try:
            from .widgets.tune import tune
        except ImportError as exc:  # ipywidgets (or bokeh) missing: this feature only, in one line
            missing = (exc.name or "ipywidgets").split(".")[0]
            raise UsageError(f"%compress --tune needs {missing}, which is not installed: pip install {missing} "
                             f"(or use --emit-config to write the plan as a cell).") from None

        panel = tune(model, eval=eval_fn, data=data, example_inputs=example, name=args.model,
                     namespace=self.shell.user_ns, as_name=bound)
        self.shell.user_ns["_compress_panel"] = panel
        display(panel)

    def _compare(self, args, model, eval_fn, data, example):
        from .strategy.compare import compare

        if data is None and example is None:
            raise UsageError("%compress: --compare measures on your data: add --data NAME ((X, y) or X) or "
                             "--example X.")
        try:
            table = compare(model, data=data if data is not None else example, eval=eval_fn,
                            budget=0.5 if args.budget is None else args.budget, example_inputs=example)
        except (CompressError, ValueError) as exc:
            raise UsageError(f"%compress: --compare: {_message(exc)}") from None
        self.shell.user_ns["_compress_comparison"] = table
        display(table)

    def _auto(self, args, model, eval_fn, data, example, bound, tokens):
        from .strategy.auto import auto

        if eval_fn is None and data is None and example is None:
            raise UsageError("%compress: --auto needs something to measure: --eval FN, or --data / --example for "
                             "fidelity to the original.")
        try:
            result = auto(model, eval=eval_fn, data=data, example_inputs=example,
                          max_drop=0.01 if args.max_drop is None else args.max_drop,
                          objective=args.objective or "size", seed=self.seed if args.seed is None else args.seed)
        except CompressError as exc:
            raise UsageError(f"%compress: --auto: {_message(exc)}") from None
        self.shell.user_ns["_compress_auto"] = result
        if result.model is not None:
            self.shell.user_ns[bound] = result.model
            self.shell.user_ns["_compress_report"] = result.report
            self._reports[bound] = result.report
            if args.emit_config and result.plan is not None:
                # the generated cell runs the plan found: the search's own options stay off its line
                keep = _strip_options(tokens, _METHOD_OPTIONS | _AUTO_OPTIONS | {"--emit-config", "--as"})
                line_out = " ".join(shlex.quote(t) for t in [*keep, "--as", bound])
                self._emit(self._cell_for(result.plan, line_out))
        print(repr(result))
        if args.report and result.report is not None:
            display(result.report)

    @staticmethod
    def _check_needs(plan: Plan, example: Any, data: Any, model: Any = None) -> None:
        for step in plan.steps:
            config = step.config
            if get_method(step.method).family == "distillation" and data is None:
                raise UsageError(f"%compress: {step.method} trains on your data: add --data NAME ((X, y), X or a "
                                 f"DataLoader).")
            if step.method == "prune.structured" and example is None and (model is None
                                                                      or auto_example(model) is None):
                raise UsageError("%compress: --structured traces the model and needs example inputs: add "
                                 "--example X (a tensor, a tuple, a dict or a tokenizer's output in the "
                                 "notebook), or --tokenizer TOK for a text model.")
            wants_data = getattr(config, "criterion", None) == "taylor" or getattr(config, "importance", None) \
                == "taylor"
            if wants_data and data is None:
                raise UsageError(f"%compress: {step.method} with Taylor importance needs data: add --data NAME "
                                 f"((X, y) or a DataLoader).")

    @line_cell_magic
    def compress_revert(self, line: str, cell: str | None = None) -> None:
        """%compress_revert MODEL: undo in-place compression of MODEL exactly."""
        from .core.apply import revert_

        name = line.strip()
        if not name:
            raise UsageError("%compress_revert: give the name of a model, e.g. %compress_revert model.")
        model = self._resolve(name, "model")
        try:
            revert_(model)
        except CompressError as exc:
            raise UsageError(f"%compress_revert: {exc}") from None
        print(f"reverted {name} to its original layers")

    @line_magic
    def compress_report(self, line: str) -> Any:
        """%compress_report [NAME]: show the report of the last %compress (or of the one bound to NAME)."""
        name = line.strip()
        if name:
            if name not in self._reports:
                known = ", ".join(sorted(self._reports)) or "none yet"
                raise UsageError(f"%compress_report: no report for {name!r}; reports exist for: {known}.")
            return self._reports[name]
        report = self.shell.user_ns.get("_compress_report")
        if report is None:
            raise UsageError("%compress_report: no report yet; run %compress MODEL ... first.")
        return report

    @line_magic
    def compress_methods(self, line: str) -> None:
        """%compress_methods: every registered method, with its one-line help and whether it needs data."""
        rows = list_methods()
        width = max(len(r["name"]) for r in rows)
        flags = {o.method: o.flag for o in STEP_OPTIONS}
        for r in rows:
            needs = "  [needs data / example inputs]" if r["needs_data"] else ""
            flag = f" ({flags[r['name']]})" if r["name"] in flags else ""
            print(f"{r['name']:<{width}}{flag}  {r['help']}{needs}")


# options whose values the plan body of a generated cell carries (the methods, their layers, the seed)
_METHOD_OPTIONS = {o.flag for o in STEP_OPTIONS} | {"--scope", "--layers", "--exclude", "--seed"}
# options of the --auto search, which a cell running the plan it found does not take
_AUTO_OPTIONS = {"--auto", "--max-drop", "--objective"}


def _strip_options(tokens: list[str], drop: set[str]) -> list[str]:
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
        if "=" in tok or action.nargs == 0:
            continue
        if action.nargs == "?":
            if i < len(tokens) and not tokens[i].startswith("--"):
                i += 1
            continue
        i += 1  # the option's one value
    return out


CompressMagics.compress.__doc__ = _usage_text()


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(CompressMagics)
