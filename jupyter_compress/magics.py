"""The ``%compress`` magics: parse, resolve names, call the core, display. No compression logic.

User mistakes become IPython ``UsageError`` (one line, no traceback) here and only here.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display
from traitlets import Bool, Int, Unicode

from . import __version__
from .core.apply import compress, compress_
from .core.config import parse_rank
from .core.plan import Plan, Step
from .core.selection import Selector
from .errors import CompressError
from .methods import NMConfig, PruneConfig, StructuredPruneConfig, SVDConfig

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
    """'8' -> 8, '0.5' -> 0.5, 'energy:0.9' stays a string; anything else is a UsageError."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    return text


def _rank(text: str) -> Any:
    value = _number(text)
    try:
        parse_rank(value)
    except (ValueError, TypeError):
        raise UsageError(
            f"%compress: rank {text!r} is not valid; give an int >= 1, a fraction in (0, 1] "
            f"or 'energy:E' (e.g. --svd 0.5, --svd 16, --svd energy:0.95)."
        ) from None
    return value


def _amount(text: str) -> float:
    """'0.5' or '50%' -> 0.5."""
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"%compress: amount {text!r} is not a number; give a fraction such as --prune 0.5 "
                         f"or a percentage such as --prune 50%.") from None


def _nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"%compress: --nm {text!r} is not N:M; give two ints such as --nm 2:4.") from None
    return n, m


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> _Parser:
    p = _Parser(prog="%compress", add_help=False, description="Compress a copy of MODEL (or MODEL itself with "
                "--inplace) and show a report. Steps run in the order: --structured, --svd, --prune, --nm. "
                "In a %%compress cell, the body is a YAML plan and replaces the method options.")
    p.add_argument("model", metavar="MODEL", help="name of an nn.Module in the notebook (dotted paths allowed)")
    p.add_argument("--prune", type=_amount, metavar="AMOUNT",
                   help="unstructured magnitude pruning: " + _field_help(PruneConfig, "amount"))
    p.add_argument("--scope", choices=("layer", "global"), default=None,
                   help="with --prune: " + _field_help(PruneConfig, "scope"))
    p.add_argument("--structured", type=_amount, metavar="AMOUNT",
                   help="structured pruning (needs --example): " + _field_help(StructuredPruneConfig, "amount"))
    p.add_argument("--nm", type=_nm, metavar="N:M",
                   help="N:M semi-structured sparsity: keep N of every M consecutive weights (e.g. 2:4)")
    p.add_argument("--svd", type=_rank, metavar="RANK", help="truncated SVD of Linear layers: "
                   + _field_help(SVDConfig, "rank"))
    p.add_argument("--layers", type=_names, default=[], metavar="L1,L2",
                   help="only these layers: exact names or re:REGEX, comma-separated")
    p.add_argument("--exclude", type=_names, default=[], metavar="L1,L2",
                   help="leave these layers alone: exact names or re:REGEX, comma-separated")
    p.add_argument("--as", dest="as_name", metavar="NAME",
                   help="bind the compressed copy to NAME (default: MODEL_compressed)")
    p.add_argument("--inplace", action="store_true", default=None,
                   help="change MODEL itself (undo with %%compress_revert MODEL / revert_(MODEL))")
    p.add_argument("--eval", dest="eval_fn", metavar="FN", help="a function FN(model) -> number or dict, "
                   "measured before and after")
    p.add_argument("--example", metavar="INPUTS", help="example inputs (tensor name) for latency and output error")
    p.add_argument("--seed", type=int, default=None, help="seed for any random choice (default 0)")
    p.add_argument("--emit-config", dest="emit_config", action="store_true",
                   help="write the exact plan of this run as a %%%%compress cell below")
    p.add_argument("--report", dest="report", action="store_true", default=True, help="show the report (default)")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not show the report")
    return p


def _usage_text() -> str:
    return build_parser().format_help() + (
        "\nExamples:\n"
        "  %compress model --prune 0.5 --as small\n"
        "  %compress model --svd 0.5 --prune 0.5 --exclude fc2 --eval evaluate --as small\n"
        "  %compress model --svd energy:0.95 --inplace\n"
        "  %%compress model --as small\n"
        "  steps:\n"
        "  - {method: svd, rank: 0.5}\n"
    )


@magics_class
class CompressMagics(Magics):
    """%compress, %%compress and %compress_revert. Settings: ``%config CompressMagics.inplace = True``."""

    inplace = Bool(False, help="Compress the named model in place by default (else a copy).").tag(config=True)
    seed = Int(0, help="Default seed of plans built from the magic's options.").tag(config=True)
    default_eval = Unicode("", help="Name of an eval function used when --eval is not given.").tag(config=True)

    # -- helpers -----------------------------------------------------------
    def _resolve(self, name: str, what: str = "name") -> Any:
        ns = self.shell.user_ns
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

    def _plan_from_options(self, args: argparse.Namespace) -> Plan:
        selector = Selector(layers=tuple(args.layers), exclude=tuple(args.exclude))
        steps = []
        if args.structured is not None:
            steps.append(Step(StructuredPruneConfig(amount=args.structured), selector))
        if args.svd is not None:
            steps.append(Step(SVDConfig(rank=args.svd), selector))
        if args.prune is not None:
            steps.append(Step(PruneConfig(amount=args.prune, scope=args.scope or "layer"), selector))
        if args.nm is not None:
            steps.append(Step(NMConfig(n=args.nm[0], m=args.nm[1]), selector))
        if not steps:
            raise UsageError("%compress: give at least one method, e.g. --prune 0.5, --structured 0.5 or --svd 0.5 "
                             "(or a %%compress cell with a YAML plan).")
        return Plan(tuple(steps), seed=self.seed if args.seed is None else args.seed)

    @staticmethod
    def _cell_for(plan: Plan, line: str) -> str:
        header = (f"# generated by jupyter_compress {__version__}; seed {plan.seed}. "
                  f"Re-running this cell reproduces the result.")
        return f"%%compress {line}\n{header}\n{plan.to_yaml()}"

    # -- the magics ----------------------------------------------------------
    @line_cell_magic
    def compress(self, line: str, cell: str | None = None) -> None:
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%compress: cannot parse the line ({exc}).") from None
        if not tokens or tokens[0] in ("-h", "--help"):
            print(_usage_text())
            return
        args = build_parser().parse_args(tokens)
        model = self._resolve(args.model, "model")
        from torch import nn

        if not isinstance(model, nn.Module):
            raise UsageError(f"%compress: {args.model!r} is a {type(model).__name__}, not a torch.nn.Module; "
                             f"pass the name of a model.")
        inplace = self.inplace if args.inplace is None else args.inplace
        eval_name = args.eval_fn or self.default_eval or None
        eval_fn = self._resolve(eval_name, "eval function") if eval_name else None
        if eval_fn is not None and not callable(eval_fn):
            raise UsageError(f"%compress: --eval {eval_name!r} is not callable; pass a function FN(model).")
        example = self._resolve(args.example, "example inputs") if args.example else None
        try:
            if cell is not None and cell.strip():
                plan = Plan.from_yaml(cell)
                if args.seed is not None:
                    plan = Plan(plan.steps, seed=args.seed, versions=plan.versions)
            else:
                plan = self._plan_from_options(args)
            if inplace:
                report = compress_(model, plan, eval=eval_fn, example_inputs=example)
                bound = args.model
            else:
                small, report = compress(model, plan, eval=eval_fn, example_inputs=example)
                bound = args.as_name or args.model.replace(".", "_") + "_compressed"
                if not bound.isidentifier():
                    raise UsageError(f"%compress: --as {bound!r} is not a valid Python name.")
                self.shell.user_ns[bound] = small
        except CompressError as exc:
            raise UsageError(f"%compress: {exc}") from None
        self.shell.user_ns["_compress_report"] = report
        if args.emit_config:
            keep = [t for t in tokens if t not in ("--emit-config",)]
            line_out = " ".join(shlex.quote(t) for t in _strip_method_options(keep))
            self.shell.set_next_input(self._cell_for(Plan.from_dict(report.plan), line_out), replace=False)
        if args.report:
            display(report)
        where = "in place" if inplace else f"as {bound!r}"
        print(f"compressed {args.model} {where}: {report.model_params_before:,} -> "
              f"{report.model_params_after:,} parameters")

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


# options that take one value and are carried by the plan body of a generated cell
_METHOD_OPTIONS = {"--prune", "--nm", "--structured", "--svd", "--scope", "--layers", "--exclude", "--seed"}


def _strip_method_options(tokens: list[str]) -> list[str]:
    """The line of a generated cell: the method options live in the plan body instead."""
    out, skip = [], 0
    for tok in tokens:
        if skip:
            skip -= 1
            continue
        key = tok.split("=", 1)[0]
        if key in _METHOD_OPTIONS:
            skip = 0 if "=" in tok else 1
            continue
        out.append(tok)
    return out


CompressMagics.compress.__doc__ = _usage_text()


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(CompressMagics)
