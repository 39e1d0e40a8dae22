"""``jupyter-compress run``: compress, evaluate, save and check thresholds, headless.

Exit codes: 0 every threshold holds, 1 a threshold is crossed (the report says which), 2 usage error.
Progress goes to stderr, results to stdout (``--json`` for machines).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from .core.apply import compress
from .core.jsonsafe import dumps
from .core.plan import Plan
from .core.report import Report
from .errors import CompressError

__all__ = ["resolve_object", "parse_drop", "check_thresholds", "run_command", "report_command"]


class UsageError(CompressError):
    """A command-line mistake: exit code 2."""


def resolve_object(spec: str, what: str) -> Any:
    """``pkg.module:attr.path`` -> the object; a one-line UsageError naming the spec otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--{what} must look like 'package.module:name'; got {spec!r}.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--{what} {spec}: cannot import {module_name!r} ({exc}).") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--{what} {spec}: {module_name!r} has no attribute {part!r}.")
        obj = getattr(obj, part)
    return obj


def parse_drop(text: str | None) -> float | None:
    """'1%' -> 0.01, '0.02' -> 0.02 (an absolute drop of the metric)."""
    if text is None:
        return None
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"--max-drop must be a number or a percentage like 1%; got {text!r}.") from None
    if value < 0:
        raise UsageError(f"--max-drop must be >= 0; got {text!r}.")
    return value


def _main_metric(metrics: dict[str, Any]) -> str | None:
    numeric = [k for k, v in metrics.items() if isinstance(v, (int, float)) and k != "latency_ms"]
    return "accuracy" if "accuracy" in numeric else (numeric[0] if numeric else None)


def check_thresholds(report: Report, *, max_drop: float | None, max_latency_ms: float | None,
                     max_size_mb: float | None) -> list[str]:
    """Plain-word descriptions of every threshold the report crosses (empty: all hold)."""
    crossed = []
    if max_drop is not None:
        key = _main_metric(report.metrics_before)
        if key is None:
            crossed.append("--max-drop needs an --eval function returning a metric; none was measured")
        else:
            drop = float(report.metrics_before[key]) - float(report.metrics_after[key])
            if drop > max_drop + 1e-12:
                crossed.append(f"{key} dropped by {drop:.4f} (from {report.metrics_before[key]:.4f} to "
                               f"{report.metrics_after[key]:.4f}), more than --max-drop {max_drop:g}")
    if max_latency_ms is not None:
        latency = report.metrics_after.get("latency_ms")
        if latency is None:
            crossed.append("--max-latency-ms needs --example inputs to time the model")
        elif latency > max_latency_ms:
            crossed.append(f"latency {latency:.3f} ms is above --max-latency-ms {max_latency_ms:g}")
    if max_size_mb is not None and report.model_bytes_after / 1e6 > max_size_mb:
        crossed.append(f"size {report.model_bytes_after / 1e6:.3f} MB is above --max-size-mb {max_size_mb:g}")
    return crossed


def _value(obj: Any) -> Any:
    return obj() if callable(obj) and not hasattr(obj, "forward") else obj


def run_command(args) -> int:
    from .io import save
    from .io.artifact import ARTIFACT_NAME

    plan = Plan.load(args.plan)
    factory = resolve_object(args.model, "model")
    model = factory()
    if args.weights:
        from safetensors.torch import load_file

        print(f"[jupyter-compress] loading weights {args.weights}", file=sys.stderr)
        model.load_state_dict(load_file(args.weights))
    model.eval()
    evaluate = resolve_object(args.eval, "eval") if args.eval else None
    data = _value(resolve_object(args.data, "data")) if args.data else None
    example = _value(resolve_object(args.example, "example")) if args.example else None
    max_drop = parse_drop(args.max_drop)
    print(f"[jupyter-compress] compressing: {plan.describe()}", file=sys.stderr)
    small, report = compress(model, plan, eval=evaluate, example_inputs=example, data=data)
    crossed = check_thresholds(report, max_drop=max_drop, max_latency_ms=args.max_latency_ms,
                               max_size_mb=args.max_size_mb)
    report.notes += [f"THRESHOLD CROSSED: {c}." for c in crossed]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save(small, report, out / ARTIFACT_NAME, example_inputs=example, data=data)
    (out / "report.json").write_text(dumps(report.to_dict(), indent=2, default=str))
    (out / "report.html").write_text(report.to_html())
    (out / "plan.yaml").write_text(Plan.from_dict(report.plan).to_yaml())
    print(f"[jupyter-compress] wrote {out}/model.safetensors, report.json, report.html, plan.yaml", file=sys.stderr)
    if args.json:
        print(dumps({"ok": not crossed, "crossed": crossed, "out": str(out), "report": report.to_dict()},
                         default=str))
    else:
        print(report.to_text())
        print("all thresholds hold" if not crossed else "thresholds crossed:\n  " + "\n  ".join(crossed))
    return 1 if crossed else 0


def report_command(args) -> int:
    path = Path(args.dir)
    file = path / "report.json" if path.is_dir() else path
    if not file.exists():
        raise UsageError(f"no report.json in {args.dir}; give the --out folder of a 'run'.")
    report = Report.from_dict(json.loads(file.read_text()))
    print({"text": report.to_text, "html": report.to_html,
           "json": lambda: dumps(report.to_dict(), indent=2, default=str)}[args.format]())
    return 0
