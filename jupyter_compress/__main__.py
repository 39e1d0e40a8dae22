"""``jupyter-compress`` / ``python -m jupyter_compress``: the headless entry point.

For now: ``methods`` (what is registered) and ``validate PLAN`` (check a plan file).
``run`` (compress, evaluate, save, thresholds) comes with the artifacts issue.
Exit codes: 0 ok, 2 usage or invalid plan.
"""

from __future__ import annotations

import argparse
import json
import sys

from .core.plan import Plan
from .core.registry import list_methods
from .errors import CompressError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter-compress", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("methods", help="list the registered methods with one-line help")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    v = sub.add_parser("validate", help="check a plan file (YAML or JSON)")
    v.add_argument("plan")
    args = parser.parse_args(argv)
    if args.command == "methods":
        methods = list_methods()
        if args.json:
            print(json.dumps(methods, indent=2, default=str))
        else:
            width = max(len(x["name"]) for x in methods)
            for x in methods:
                data = " (needs example inputs/data)" if x["needs_data"] else ""
                print(f"{x['name']:<{width}}  {x['help']}{data}")
        return 0
    try:
        plan = Plan.load(args.plan)
    except (CompressError, OSError) as exc:
        print(f"jupyter-compress: {args.plan}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.plan}: valid plan, {len(plan.steps)} step(s): {plan.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
