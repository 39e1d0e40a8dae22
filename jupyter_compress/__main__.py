"""``jupyter-compress`` / ``python -m jupyter_compress``: the headless entry point.

Subcommands: ``run`` (compress, evaluate, save, check thresholds), ``validate PLAN``, ``methods``,
``report DIR``. Exit codes: 0 ok, 1 a threshold crossed, 2 usage error or invalid plan.
"""

from __future__ import annotations

import argparse
import sys

from .core.jsonsafe import dumps
from .core.plan import Plan
from .core.registry import list_methods
from .errors import CompressError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jupyter-compress", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("methods", help="list the registered methods with one-line help")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    v = sub.add_parser("validate", help="check a plan file (YAML or JSON)")
    v.add_argument("plan")
    r = sub.add_parser("run", help="compress a model by a plan, evaluate, save, check thresholds")
    r.add_argument("plan", help="plan file (YAML or JSON; the body of a %%%%compress cell)")
    r.add_argument("--model", required=True, help="package.module:factory returning the model")
    r.add_argument("--weights", help="safetensors state_dict to load into the model first")
    r.add_argument("--eval", help="package.module:fn, fn(model) -> number or dict of numbers")
    r.add_argument("--data", help="package.module:name, data (or a function returning it) for methods that need it")
    r.add_argument("--example", help="package.module:name, example inputs (or a function returning them)")
    r.add_argument("--out", required=True, help="output folder: model.safetensors, report.json/html, plan.yaml")
    r.add_argument("--max-drop", help="largest allowed drop of the eval metric, e.g. 1%% or 0.01")
    r.add_argument("--max-latency-ms", type=float, help="largest allowed latency (needs --example)")
    r.add_argument("--max-size-mb", type=float, help="largest allowed model size in memory (MB)")
    r.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    rep = sub.add_parser("report", help="print the report of a 'run' output folder")
    rep.add_argument("dir")
    rep.add_argument("--format", choices=("text", "json", "html"), default="text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "methods":
        methods = list_methods()
        if args.json:
            print(dumps(methods, indent=2, default=str))
        else:
            width = max(len(x["name"]) for x in methods)
            for x in methods:
                data = " (needs example inputs/data)" if x["needs_data"] else ""
                print(f"{x['name']:<{width}}  {x['help']}{data}")
        return 0
    try:
        if args.command == "run":
            from .cli_run import run_command

            return run_command(args)
        if args.command == "report":
            from .cli_run import report_command

            return report_command(args)
        plan = Plan.load(args.plan)
    except (CompressError, OSError) as exc:
        print(f"jupyter-compress: {exc}", file=sys.stderr)
        return 2
    print(f"{args.plan}: valid plan, {len(plan.steps)} step(s): {plan.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
