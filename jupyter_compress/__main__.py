"""``jupyter-compress`` / ``python -m jupyter_compress``: the headless entry point.

Subcommands: ``run`` (compress, evaluate, save, check thresholds), ``validate PLAN``, ``methods``,
``report DIR``.

Exit codes, each meaning one thing (a CI gate can tell "the model got worse" from "the job is broken"):

- 0: ok (every threshold holds; ``validate``: the plan is valid);
- 1: a threshold is crossed (a NaN metric crosses any threshold on it);
- 2: usage or input error: bad arguments (argparse) or threshold values, a missing or invalid plan file, a
  ``--model`` / ``--eval`` / ``--data`` / ``--example`` / ``--train`` function that cannot be imported or
  that raised, a bad ``--weights`` file, an ``--out`` folder that cannot be written;
- 3: internal error, an unexpected exception in jupyter_compress itself (rerun with ``--debug``, report it);
- 130: interrupted by Ctrl-C (KeyboardInterrupt), the shell convention for SIGINT.

Every error is ONE line on stderr, starting ``jupyter-compress: `` (progress lines before it start with
``[jupyter-compress]``; ``--quiet`` drops them and warnings, so stderr is the error line alone). ``--debug``
(before or after the subcommand) adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from .cli_common import EXIT_CODES_HELP, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, brief
from .errors import CompressError
from .errors import one_line as _one_line

_PREFIX = "jupyter-compress: "
_LINE = 600  # longest error line


class _ArgumentError(Exception):
    """argparse's complaint, raised instead of argparse's exit so it is reported as one line (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse: must not return
        where = self.prog.removeprefix("jupyter-compress").strip()
        raise _ArgumentError(f"{where + ': ' if where else ''}{message} (see '{self.prog} --help')")


def _debug_flag(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an error, print the traceback too (for bug reports)")
    parser.add_argument("--quiet", "-q", action="store_true", default=default,
                        help="no progress or warning lines on stderr: it then holds the error line only")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="jupyter-compress", description=__doc__.splitlines()[0], epilog=EXIT_CODES_HELP,
                     formatter_class=fmt)
    _debug_flag(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    # a subcommand's --debug must not reset one given before the subcommand: SUPPRESS keeps the top level's
    m = sub.add_parser("methods", help="list the registered methods with one-line help", epilog=EXIT_CODES_HELP,
                       formatter_class=fmt)
    m.add_argument("--json", action="store_true", help="machine-readable output")
    _debug_flag(m, argparse.SUPPRESS)
    v = sub.add_parser("validate", help="check a plan file (YAML or JSON) as 'run' would, without a model",
                       epilog=EXIT_CODES_HELP, formatter_class=fmt)
    v.add_argument("plan")
    v.add_argument("--train", action="append", metavar="NAME=package.module:function",
                   help="a training function the plan names (as 'run' takes it); repeatable")
    _debug_flag(v, argparse.SUPPRESS)
    r = sub.add_parser("run", help="compress a model by a plan, evaluate, save, check thresholds",
                       epilog=EXIT_CODES_HELP, formatter_class=fmt)
    r.add_argument("plan", help="plan file (YAML or JSON; the body of a %%%%compress cell)")
    r.add_argument("--model", required=True, help="package.module:factory returning the model")
    r.add_argument("--weights", help="safetensors state_dict to load into the model first")
    r.add_argument("--eval", help="package.module:fn, fn(model) -> number or dict of numbers")
    r.add_argument("--data", help="package.module:name, data (or a function returning it) for methods that need it")
    r.add_argument("--example", help="package.module:name, example inputs (or a function returning them)")
    r.add_argument("--train", action="append", metavar="NAME=package.module:function",
                   help="a training function for the plan's QAT steps, which name it by NAME (repeatable); "
                        "'--train package.module:function' alone uses that text as the NAME (older plans)")
    r.add_argument("--out", required=True, help="output folder: model.safetensors, report.json/html, plan.yaml")
    r.add_argument("--max-drop", help="largest allowed drop of the eval metric, e.g. 1%% or 0.01")
    r.add_argument("--max-latency-ms", help="largest allowed latency (needs --example)")
    r.add_argument("--max-size-mb", help="largest allowed model size in memory (MB)")
    r.add_argument("--compact", nargs="?", const="zstd", choices=("zstd", "lz4"), metavar="CODEC",
                   help="write model.safetensors compact: pruned tensors sparse, integer codes bit-packed, the "
                        "payload through CODEC ('zstd', the default: smallest; 'lz4': fastest to load)")
    r.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    _debug_flag(r, argparse.SUPPRESS)
    rep = sub.add_parser("report", help="print the report of a 'run' output folder", epilog=EXIT_CODES_HELP,
                         formatter_class=fmt)
    rep.add_argument("dir")
    rep.add_argument("--format", choices=("text", "json", "html"), default="text")
    _debug_flag(rep, argparse.SUPPRESS)
    return parser


def _methods(args) -> int:
    from .core.jsonsafe import dumps
    from .core.registry import list_methods

    methods = list_methods()
    if args.json:
        print(dumps(methods, indent=2, default=str))
    else:
        width = max(len(x["name"]) for x in methods)
        for x in methods:
            data = " (needs example inputs/data)" if x["needs_data"] else ""
            print(f"{x['name']:<{width}}  {x['help']}{data}")
    return EXIT_OK


def _dispatch(args) -> int:
    if args.command == "methods":
        return _methods(args)
    from . import cli_run

    return {"run": cli_run.run_command, "validate": cli_run.validate_command,
            "report": cli_run.report_command}[args.command](args)


def _error(message: str) -> None:
    print(_PREFIX + _one_line(message, _LINE), file=sys.stderr, flush=True)


def _classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that ended a command."""
    import yaml

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, (CompressError, yaml.YAMLError)):
        return EXIT_USAGE, str(exc) or brief(exc)
    return EXIT_INTERNAL, (f"internal error: {brief(exc)}; rerun with --debug for the traceback and report it")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one progress-style line (not the two-line default with a source line)."""
    print(f"[jupyter-compress] warning: {category.__name__}: {_one_line(str(message), _LINE)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code (see the module doc)."""
    try:
        args = _parser().parse_args(argv)
    except _ArgumentError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    from . import cli_run

    cli_run.QUIET = bool(getattr(args, "quiet", False))
    with warnings.catch_warnings():
        if cli_run.QUIET:
            warnings.simplefilter("ignore")
        warnings.showwarning = _show_warning
        try:
            return _dispatch(args)
        except (Exception, KeyboardInterrupt) as exc:
            code, message = _classify(exc)
            if args.debug:
                traceback.print_exception(exc, file=sys.stderr)
            _error(message)
            return code


if __name__ == "__main__":
    sys.exit(main())
